"""Write helm/streamae/values.schema.json; its `config` part is derived from the settings model.

    .venv/bin/python helm/ci/gen_values_schema.py          # rewrite the schema
    .venv/bin/python helm/ci/gen_values_schema.py --check  # exit 1 if it is stale

Each field of ``streamae.settings.Settings`` becomes a property of ``config`` with its type,
its choices (``Literal``) and its bounds (``Field(ge=..., lt=...)``), so ``helm install``
rejects ``config.threshold.quantile=1.5`` before a pod crash-loops on it. Secrets
(``SecretStr``) are left out on purpose: they come from ``kafkaSecrets``.
"""

from __future__ import annotations

import json
import sys
import types
import typing
from pathlib import Path
from typing import Any

import annotated_types
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from streamae.settings import ENV_PREFIX, NESTED_DELIMITER, Settings  # noqa: E402

FLOAT_PATTERN = r"^[+-]?([0-9]+[.]?[0-9]*|[.][0-9]+)([eE][+-]?[0-9]+)?$"
SCHEMA_PATH = ROOT / "helm" / "streamae" / "values.schema.json"
# values that differ from the daemon's defaults on purpose, and must keep a given shape
CONFIG_OVERRIDES: dict[str, dict[str, Any]] = {
    "checkpoints.directory": {"pattern": "^/"},  # absolute: the root filesystem is read-only
    "metrics_port": {"minimum": 1},  # the probes and the Service need the HTTP server
}


def _is_secret(annotation: Any) -> bool:
    return SecretStr in _union_members(annotation)


def _union_members(annotation: Any) -> tuple[Any, ...]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def _type_schema(annotation: Any) -> dict[str, Any]:
    members = _union_members(annotation)
    nullable = type(None) in members
    members = tuple(m for m in members if m is not type(None))
    if len(members) != 1:
        raise TypeError(f"unsupported union {annotation!r}")
    (tp,) = members
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        tp = typing.get_args(tp)[0]
        origin = typing.get_origin(tp)
    if origin is typing.Literal:
        choices = list(typing.get_args(tp))
        schema: dict[str, Any] = {"enum": [*choices, None] if nullable else choices}
        return schema
    if origin is list:
        (item,) = typing.get_args(tp)
        # a YAML list, or the comma-separated string the env var takes
        schema = {"anyOf": [{"type": "array", "items": _type_schema(item)}, {"type": "string"}]}
    elif tp is bool:
        schema = {"type": "boolean"}
    elif tp is int:
        schema = {"type": "integer"}
    elif tp is float:
        # `helm --set x=0.999` passes floats as strings: accept a decimal string as well
        schema = {"anyOf": [{"type": "number"}, {"type": "string", "pattern": FLOAT_PATTERN}]}
    elif tp in (str, Path):
        schema = {"type": "string"}
    else:
        raise TypeError(f"unsupported type {tp!r}")
    if nullable:
        if "type" in schema:
            schema["type"] = [schema["type"], "null"]
        else:
            schema["anyOf"].append({"type": "null"})
    return schema


def _bounds(info: FieldInfo) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for meta in info.metadata:
        if isinstance(meta, annotated_types.Ge):
            out["minimum"] = meta.ge
        elif isinstance(meta, annotated_types.Gt):
            out["exclusiveMinimum"] = meta.gt
        elif isinstance(meta, annotated_types.Le):
            out["maximum"] = meta.le
        elif isinstance(meta, annotated_types.Lt):
            out["exclusiveMaximum"] = meta.lt
    return out


def _default(info: FieldInfo) -> Any:
    value = info.get_default(call_default_factory=True)
    if isinstance(value, Path):
        return str(value)
    return value


def model_schema(model: type[BaseModel], path: tuple[str, ...] = ()) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        annotation = info.annotation
        here = (*path, name)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            properties[name] = model_schema(annotation, here)
            continue
        if _is_secret(annotation):
            continue
        env = ENV_PREFIX + NESTED_DELIMITER.join(here).upper()
        schema = {"description": f"{env} (daemon default: {json.dumps(_default(info))})"}
        schema.update(_type_schema(annotation))
        numeric = [b for b in schema.get("anyOf", []) if b.get("type") == "number"]
        (numeric[0] if numeric else schema).update(_bounds(info))
        schema.update(CONFIG_OVERRIDES.get(".".join(here), {}))
        properties[name] = schema
    return {"type": "object", "additionalProperties": False, "properties": properties}


def _obj(properties: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object"}
    if properties is not None:
        schema["properties"] = properties
        schema["additionalProperties"] = False
    schema.update(extra)
    return schema


STR = {"type": "string"}
BOOL = {"type": "boolean"}
INT = {"type": "integer"}
NUM = {"type": "number"}
MAP = {"type": "object"}
LIST = {"type": "array"}
STRMAP = {"type": "object", "additionalProperties": {"type": "string"}}
PORT = {"type": "integer", "minimum": 1, "maximum": 65535}
DURATION = {"type": "string", "pattern": "^(0|([0-9]+(ms|s|m|h|d|w|y))+)$"}
QUANTITY = {"anyOf": [{"type": "string"}, {"type": "number"}]}
GPU = _obj(
    {
        "enabled": BOOL,
        "count": {"type": "integer", "minimum": 1},
        "resourceName": STR,
        "runtimeClassName": STR,
        "nodeSelector": STRMAP,
        "tolerations": LIST,
    }
)
ROLE_OVERRIDES = {
    "resources": MAP,
    "gpu": GPU,
    "nodeSelector": STRMAP,
    "tolerations": LIST,
    "affinity": MAP,
    "podAnnotations": STRMAP,
    "extraEnv": LIST,
}
PROBE = _obj(
    {
        "initialDelaySeconds": {"type": "integer", "minimum": 0},
        "periodSeconds": {"type": "integer", "minimum": 1},
        "timeoutSeconds": {"type": "integer", "minimum": 1},
        "failureThreshold": {"type": "integer", "minimum": 1},
        "successThreshold": {"type": "integer", "minimum": 1},
        "terminationGracePeriodSeconds": {"type": "integer", "minimum": 1},
    }
)


def _alert(**extra: Any) -> dict[str, Any]:
    return _obj(
        {
            "enabled": BOOL,
            "for": DURATION,
            "severity": {"type": "string", "enum": ["critical", "warning", "info"]},
            **extra,
        }
    )


def values_schema() -> dict[str, Any]:
    props: dict[str, Any] = {
        "global": MAP,
        "nameOverride": STR,
        "fullnameOverride": STR,
        "image": _obj(
            {
                "repository": {"type": "string", "minLength": 1},
                "tag": {"type": ["string", "number"]},
                "digest": {"type": "string", "pattern": "^(|sha256:[a-f0-9]{64})$"},
                "pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
            },
            required=["repository"],
        ),
        "imagePullSecrets": LIST,
        "replicaCount": {"type": "integer", "minimum": 0},
        "roles": _obj(
            {
                "enabled": BOOL,
                "trainer": _obj(ROLE_OVERRIDES),
                "scorer": _obj(
                    {"replicaCount": {"type": "integer", "minimum": 0}, **ROLE_OVERRIDES}
                ),
            }
        ),
        "config": model_schema(Settings),
        "kafkaSecrets": _obj(
            {
                "secretName": STR,
                "saslPasswordKey": STR,
                "sslPasswordKey": STR,
                "tls": _obj(
                    {
                        "secretName": STR,
                        "mountPath": {"type": "string", "pattern": "^/"},
                        "caKey": STR,
                        "certKey": STR,
                        "keyKey": STR,
                    }
                ),
            }
        ),
        "extraEnv": {
            "type": "array",
            "items": {"type": "object", "required": ["name"], "properties": {"name": STR}},
        },
        "extraEnvFrom": LIST,
        "resources": MAP,
        "gpu": GPU,
        "nodeSelector": STRMAP,
        "tolerations": LIST,
        "affinity": MAP,
        "topologySpreadConstraints": LIST,
        "priorityClassName": STR,
        "podAnnotations": STRMAP,
        "podLabels": STRMAP,
        "terminationGracePeriodSeconds": {"type": "integer", "minimum": 0},
        "revisionHistoryLimit": {"type": "integer", "minimum": 0},
        "serviceAccount": _obj(
            {
                "create": BOOL,
                "name": STR,
                "annotations": STRMAP,
                "automountServiceAccountToken": BOOL,
            }
        ),
        "podSecurityContext": MAP,
        "securityContext": MAP,
        "probes": _obj({"startup": PROBE, "liveness": PROBE, "readiness": PROBE}),
        "service": _obj(
            {
                "type": {"enum": ["ClusterIP", "NodePort", "LoadBalancer"]},
                "port": PORT,
                "annotations": STRMAP,
            }
        ),
        "tmp": _obj({"sizeLimit": QUANTITY}),
        "persistence": _obj(
            {
                "enabled": BOOL,
                "existingClaim": STR,
                "storageClass": STR,
                "accessModes": {"type": "array", "items": STR, "minItems": 1},
                "size": QUANTITY,
                "annotations": STRMAP,
                "emptyDirSizeLimit": QUANTITY,
            }
        ),
        "podDisruptionBudget": _obj(
            {"enabled": BOOL, "maxUnavailable": {"type": ["integer", "string"]}}
        ),
        "autoscaling": _obj(
            {
                "keda": _obj(
                    {
                        "enabled": BOOL,
                        "minReplicaCount": {"type": "integer", "minimum": 0},
                        "maxReplicaCount": {"type": "integer", "minimum": 1},
                        "pollingInterval": {"type": "integer", "minimum": 1},
                        "cooldownPeriod": {"type": "integer", "minimum": 0},
                        "lagThreshold": {"type": "integer", "minimum": 1},
                        "activationLagThreshold": {"type": "integer", "minimum": 0},
                        "authenticationRef": STR,
                        "extraMetadata": {
                            "type": "object",
                            "additionalProperties": {"type": ["string", "number", "boolean"]},
                        },
                        "advanced": MAP,
                    }
                ),
                "hpa": _obj(
                    {
                        "enabled": BOOL,
                        "minReplicas": {"type": "integer", "minimum": 1},
                        "maxReplicas": {"type": "integer", "minimum": 1},
                        "targetCPUUtilizationPercentage": {
                            "type": ["integer", "null"],
                            "minimum": 1,
                        },
                        "metrics": LIST,
                        "behavior": MAP,
                    }
                ),
            }
        ),
        "metrics": _obj(
            {
                "serviceMonitor": _obj(
                    {
                        "enabled": BOOL,
                        "labels": STRMAP,
                        "interval": DURATION,
                        "scrapeTimeout": DURATION,
                        "relabelings": LIST,
                        "metricRelabelings": LIST,
                    }
                ),
                "prometheusRule": _obj(
                    {
                        "enabled": BOOL,
                        "labels": STRMAP,
                        "additionalAlertLabels": STRMAP,
                        "runbookBaseUrl": STR,
                        "alerts": _obj(
                            {
                                "nothingConsumed": _alert(requireLag=BOOL),
                                "consumerLagHigh": _alert(
                                    threshold={"type": "number", "exclusiveMinimum": 0}
                                ),
                                "deadLettersRising": _alert(
                                    ratio={"type": "number", "exclusiveMinimum": 0, "maximum": 1}
                                ),
                                "retrainsFailing": _alert(
                                    threshold={"type": "number", "minimum": 1}
                                ),
                                "anomalyRateSpiking": _alert(
                                    ratio={"type": "number", "exclusiveMinimum": 0, "maximum": 1},
                                    minRate={"type": "number", "minimum": 0},
                                ),
                                "incidentCritical": _alert(),
                                "incidentsOpening": _alert(
                                    threshold={"type": "number", "minimum": 1}
                                ),
                            }
                        ),
                    }
                ),
                "grafanaDashboard": _obj(
                    {"enabled": BOOL, "labels": STRMAP, "annotations": STRMAP, "namespace": STR}
                ),
            }
        ),
        "tests": _obj(
            {
                "enabled": BOOL,
                "image": _obj(
                    {
                        "repository": STR,
                        "tag": {"type": ["string", "number"]},
                        "digest": STR,
                        "pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
                    }
                ),
                "resources": MAP,
            }
        ),
        "extraVolumes": LIST,
        "extraVolumeMounts": LIST,
    }
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "$comment": "generated by helm/ci/gen_values_schema.py from streamae.settings; do not edit",
        "title": "streamae chart values",
        **_obj(props),
    }


def render() -> str:
    return json.dumps(values_schema(), indent=2) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if SCHEMA_PATH.read_text() != text:
            print(f"{SCHEMA_PATH} is stale: run helm/ci/gen_values_schema.py", file=sys.stderr)
            return 1
        return 0
    SCHEMA_PATH.write_text(text)
    print(f"wrote {SCHEMA_PATH}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
