"""The settings of a backtest as an operator deploys them: ``STREAMAE_*`` lines and the
Helm chart's ``values.yaml`` snippet (``config.<section>.<field>``, see
helm/streamae/values.yaml).

Besides the chosen false-alarm rate, every setting of the sections that shape verdicts
(input, window, model, threshold, incident) that differs from its default is listed: the
backtest's figures hold for those settings only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from streamae.settings import ENV_PREFIX, NESTED_DELIMITER, Settings

SECTIONS = ("input", "window", "model", "threshold", "incident")


def changed(settings: Settings, rate: float | None) -> dict[str, dict[str, Any]]:
    """``{section: {field: value}}``: non-default settings, with ``rate`` as the
    threshold (method ``false_alarm_rate``) when given."""
    out: dict[str, dict[str, Any]] = {}
    for name in SECTIONS:
        section = getattr(settings, name)
        default = type(section)()
        fields = {f: getattr(section, f) for f in type(section).model_fields
                  if getattr(section, f) != getattr(default, f)}
        if fields:
            out[name] = fields
    if rate is not None:
        threshold = out.setdefault("threshold", {})
        threshold.pop("value", None)  # other methods' values do not apply
        threshold.update(method="false_alarm_rate", false_alarm_rate=rate)
    return out


def env_lines(values: dict[str, dict[str, Any]]) -> list[str]:
    return [f"{ENV_PREFIX}{section.upper()}{NESTED_DELIMITER}{field.upper()}={_env(v)}"
            for section, fields in values.items() for field, v in fields.items()]


def helm_values(values: dict[str, dict[str, Any]]) -> list[str]:
    lines = ["config:"]
    for section, fields in values.items():
        lines.append(f"  {section}:")
        lines += [f"    {field}: {_yaml(v)}" for field, v in fields.items()]
    return lines


def _env(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | tuple):
        return ",".join(_env(v) for v in value)
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _yaml(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    return json.dumps(str(value) if isinstance(value, Path) else value)


def _float(value: float) -> str:
    """Shortest exact text, with a dot in the mantissa (YAML 1.1 reads ``1e-05`` as a
    string, ``1.0e-05`` as a number)."""
    text = repr(float(value))
    mantissa, e, exponent = text.partition("e")
    return f"{mantissa}.0e{exponent}" if e and "." not in mantissa else text
