"""Recorded data for a backtest: a CSV, JSON-lines or ``.npy`` file as rows.

Each row has feature values and, optionally, a key (entity), a timestamp and a label.

* **CSV** (any common delimiter): every numeric column is a feature except the key, time
  and label columns and ``exclude``; ``columns`` picks and orders them.
* **JSON lines**: one object a line, either the daemon's input message
  (``{"key", "ts", "values": [..] or {name: ..}}``) or a flat object whose numeric fields
  are the features.
* **.npy**: a (rows,) or (rows, columns) array; key and label columns are column numbers.

The key column defaults to ``key`` and the time column to the first of ``ts``,
``timestamp``, ``time``, ``datetime``, ``date`` when present. Timestamps are epoch ms or
ISO-8601 (naive = UTC), parsed by the daemon's own ``parse_ts``; without a time column
rows are ``interval_ms`` apart. Labels: numbers > 0.5, or true/yes/anomaly.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from streamae.exceptions import DecodeError, StreamaeError
from streamae.messages import parse_ts
from streamae.tables import read_header, read_table

TIME_COLUMNS = ("ts", "timestamp", "time", "datetime", "date")
KEY_COLUMN = "key"
DEFAULT_KEY = "all"  # the one key of a recording without a key column
TRUE_WORDS = frozenset({"true", "yes", "anomaly", "anomalous"})


@dataclass(frozen=True)
class Columns:
    """Which columns are not features."""

    label: str | None = None
    key: str | None = None
    time: str | None = None
    features: Sequence[str] | None = None  # CSV: these, in order
    exclude: Sequence[str] = ()


@dataclass(frozen=True)
class Recording:
    values: np.ndarray  # (N, F) float32
    names: tuple[str, ...] | None  # feature names; None for positional (npy, list values)
    keys: list[str]  # (N,) the entity of each row (DEFAULT_KEY without a key column)
    ts: list[int | str]  # (N,) the message's "ts" as recorded (epoch ms or ISO text)
    ts_ms: np.ndarray  # (N,) int64 epoch ms
    labels: np.ndarray | None  # (N,) bool, when a label column was named
    source: str = ""

    def __len__(self) -> int:
        return len(self.values)


def read_recording(path: Path, columns: Columns = Columns(),
                   interval_ms: int = 1000) -> Recording:
    """Read ``path`` by its suffix (.csv/.tsv/.txt, .jsonl/.ndjson/.json, .npy)."""
    suffix = path.suffix.lower()
    if suffix == ".npy":
        fields = _npy(path, columns)
    elif suffix in {".jsonl", ".ndjson", ".json"}:
        fields = _json_lines(path, columns)
    else:
        fields = _csv(path, columns)
    values, names, keys, ts, labels = fields
    if len(values) == 0:
        raise StreamaeError(f"{path}: no rows")
    if ts is None:
        ts = [i * interval_ms for i in range(len(values))]
    keys = keys or [DEFAULT_KEY] * len(values)
    return Recording(np.asarray(values, dtype=np.float32), names, keys, ts,
                     _epoch_ms(path, ts), labels, str(path))


def _epoch_ms(path: Path, ts: Sequence[int | str]) -> np.ndarray:
    try:
        return np.array([parse_ts(t) for t in ts], dtype=np.int64)
    except (DecodeError, TypeError) as exc:
        raise StreamaeError(f"{path}: timestamp column: {exc}") from exc


def _time_column(header: Sequence[str], columns: Columns) -> str | None:
    if columns.time is not None:
        return columns.time
    return next((name for name in header if name.lower() in TIME_COLUMNS), None)


def _key_column(header: Sequence[str], columns: Columns) -> str | None:
    return columns.key or (KEY_COLUMN if KEY_COLUMN in header else None)


def label_of(cell: Any) -> bool:
    text = str(cell).strip().lower()
    try:
        return float(text) > 0.5
    except ValueError:
        return text in TRUE_WORDS


def _csv(path: Path, columns: Columns) -> tuple:
    header = read_header(path)
    time, key = _time_column(header, columns), _key_column(header, columns)
    special = [c for c in (columns.label, key, time) if c is not None]
    missing = [c for c in special if c not in header]
    if missing:
        raise StreamaeError(f"{path}: no column {', '.join(missing)} (columns: {header})")
    table = read_table(path, columns=list(columns.features) if columns.features else None,
                       exclude=(*special, *columns.exclude))
    labels = (np.array([label_of(v) for v in table.other[columns.label]], dtype=bool)
              if columns.label else None)
    ts = [_ts_cell(v) for v in table.other[time]] if time else None
    keys = list(table.other[key]) if key else None
    return table.values, table.columns, keys, ts, labels


def _ts_cell(cell: str) -> int | str:
    text = cell.strip()
    try:
        return int(float(text)) if text.replace(".", "", 1).lstrip("-").isdigit() else text
    except ValueError:
        return text


def _json_lines(path: Path, columns: Columns) -> tuple:
    with open(path) as handle:
        objects = [json.loads(line) for line in handle if line.strip()]
    if not objects:
        raise StreamaeError(f"{path}: no rows")
    return _object_fields(objects, columns)


def recording_from_objects(objects: Sequence[dict], columns: Columns,
                           source: str) -> Recording:
    """Rows given as JSON objects (the daemon's input messages, or flat objects)."""
    values, names, keys, ts, labels = _object_fields(objects, columns)
    ts = ts if ts is not None else list(range(len(values)))
    keys = keys or [DEFAULT_KEY] * len(values)
    return Recording(np.asarray(values, dtype=np.float32), names, keys, ts,
                     _epoch_ms(Path(source), ts), labels, source)


def _object_fields(objects: Sequence[dict], columns: Columns) -> tuple:
    header = list(objects[0])
    time, key = _time_column(header, columns), _key_column(header, columns)
    special = {c for c in (columns.label, key, time) if c is not None} | set(columns.exclude)
    rows = [_json_values(o, special) for o in objects]
    names = tuple(rows[0]) if isinstance(rows[0], dict) else None
    try:
        values = np.array([list(r.values()) if isinstance(r, dict) else r for r in rows],
                          dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise StreamaeError(f"rows differ in their features or hold non-numbers: {exc}") \
            from exc
    labels = (np.array([label_of(o.get(columns.label, 0)) for o in objects], dtype=bool)
              if columns.label else None)
    keys = [str(o.get(key, DEFAULT_KEY)) for o in objects] if key else None
    ts = [o.get(time) for o in objects] if time else None
    return values, names, keys, ts, labels


def _json_values(obj: dict, special: set[str]) -> dict | list:
    if "values" in obj:
        return obj["values"]
    return {k: v for k, v in obj.items()
            if k not in special and isinstance(v, int | float) and not isinstance(v, bool)}


def _npy(path: Path, columns: Columns) -> tuple:
    array = np.load(path, allow_pickle=False)
    array = array.reshape(len(array), -1) if array.ndim != 2 else array
    named = [name for name in (columns.label, columns.key) if name is not None]
    if not all(name.isdigit() for name in named):
        raise StreamaeError(f"{path}: .npy columns are numbers, not {named}")
    index = {name: int(name) for name in named}
    keep = [i for i in range(array.shape[1]) if i not in index.values()]
    labels = array[:, index[columns.label]] > 0.5 if columns.label else None
    keys = ([str(int(k)) for k in array[:, index[columns.key]]] if columns.key else None)
    return array[:, keep], None, keys, None, labels
