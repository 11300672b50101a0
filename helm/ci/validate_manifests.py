"""Validate rendered Helm output offline: Kubernetes kinds and the CRDs the chart uses.

    helm template ... | python helm/ci/validate_manifests.py --kube-version 1.33.0 [-]
    python helm/ci/validate_manifests.py --kube-version 1.29.0 rendered.yaml ...

Built-in kinds go through kubernetes-validate's strict schemas (unknown fields are errors,
as with ``kubectl apply --validate=strict``). ServiceMonitor, PrometheusRule and ScaledObject
are checked against the openAPIV3Schema of their real CRDs, kept in ``helm/ci/schemas``
(extracted from prometheus-operator v0.85.0 and KEDA v2.18.0, made strict the same way).
Any other kind is an error: a new CRD needs its schema here first. Exit status 1 on any
failure, with one line per problem.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

SCHEMAS = Path(__file__).resolve().parent / "schemas"
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor-monitoring.coreos.com-v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule-monitoring.coreos.com-v1.json",
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobject-keda.sh-v1alpha1.json",
}


def load_documents(texts: list[tuple[str, str]]) -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for source, text in texts:
        for doc in yaml.safe_load_all(text):
            if doc:
                docs.append((source, doc))
    return docs


def _name(doc: dict[str, Any]) -> str:
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


def validate_crd(doc: dict[str, Any], schema_file: str) -> list[str]:
    schema = json.loads((SCHEMAS / schema_file).read_text())
    validator = jsonschema.Draft7Validator(schema)
    return [
        f"{'/'.join(str(p) for p in err.absolute_path) or '<root>'}: {err.message}"
        for err in validator.iter_errors(doc)
    ]


def validate(doc: dict[str, Any], kube_version: str) -> list[str]:
    key = (doc.get("apiVersion"), doc.get("kind"))
    if key in CRD_SCHEMAS:
        return validate_crd(doc, CRD_SCHEMAS[key])
    try:
        kubernetes_validate.validate(doc, kube_version, strict=True)
    except kubernetes_validate.ValidationError as err:
        path = "/".join(str(p) for p in err.absolute_path) or "<root>"
        return [f"{path}: {err.message}"]
    except kubernetes_validate.SchemaNotFoundError as err:
        return [f"no schema: {err.message}"]
    return []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kube-version", default="1.33.0")
    parser.add_argument("files", nargs="*", default=["-"])
    args = parser.parse_args(argv)
    texts = [
        ("<stdin>", sys.stdin.read()) if f == "-" else (f, Path(f).read_text()) for f in args.files
    ]
    failures = 0
    docs = load_documents(texts)
    if not docs:
        print("no manifests to validate", file=sys.stderr)
        return 1
    for source, doc in docs:
        problems = validate(doc, args.kube_version)
        for problem in problems:
            print(f"FAIL {source} {_name(doc)} (k8s {args.kube_version}): {problem}")
        failures += bool(problems)
    valid = len(docs) - failures
    print(f"{valid}/{len(docs)} manifests valid against Kubernetes {args.kube_version}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
