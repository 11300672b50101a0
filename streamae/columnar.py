"""A whole poll of vector messages decoded into one float32 array.

The daemon's hot path: per message only what must be per message (parse the JSON with
orjson, pick the values in the fixed feature order, check their types), then one
conversion to float32 and one finite check for the whole batch. Binary float32 payloads
are joined and read with a single ``np.frombuffer``. Anything unusual (another shape, a
timestamp as text, a non-finite value, bad input of any kind) goes through
:meth:`VectorDecoder.decode` one record at a time, so bad input leaves with the same
reason as ever and good input of every accepted form decodes as before.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from streamae.messages import FLOAT32_TYPES, JSON_TYPES, VectorDecoder, content_type, header

_NUMBER_TYPES = frozenset({int, float})  # exact types: a JSON true is a bool, not a number
_MAX_TS = 10**15  # as messages._MAX_ABS_TS_MS: beyond it the record takes the slow path


@dataclass
class Columns:
    """Decoded rows of one poll, in poll order: ``rows[j]`` is the poll index of row j."""

    rows: list[int] = field(default_factory=list)
    values: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    keys: list[str | None] = field(default_factory=list)
    ts: list[int | None] = field(default_factory=list)  # None: the record's timestamp
    names: list[tuple[str, ...] | None] = field(default_factory=list)
    errors: list[tuple[int, Exception]] = field(default_factory=list)


class _Rows:
    """Rows gathered in poll order; fast ones as lists or bytes, converted once."""

    def __init__(self) -> None:
        self.index: list[int] = []
        self.keys: list[str | None] = []
        self.ts: list[int | None] = []
        self.names: list[tuple[str, ...] | None] = []
        self.lists: list[Sequence] = []  # JSON rows
        self.list_at: list[int] = []  # their positions among the rows
        self.blobs: list[bytes] = []  # float32 rows
        self.blob_at: list[int] = []
        self.arrays: list[np.ndarray] = []  # rows decoded one by one
        self.array_at: list[int] = []

    def add(self, i: int, key: str | None, ts: int | None,
            names: tuple[str, ...] | None) -> int:
        self.index.append(i)
        self.keys.append(key)
        self.ts.append(ts)
        self.names.append(names)
        return len(self.index) - 1


def decode_vectors(decoder: VectorDecoder, values: Sequence[bytes | None],
                   headers: Sequence[Any], keys: Sequence[bytes | None]) -> Columns:
    """Decode a poll; rows that fail land in ``errors`` with their DecodeError."""
    if (columns := _uniform_float32(decoder, values, headers, keys)) is not None:
        return columns
    rows, errors = _Rows(), []
    key_text: dict[bytes | None, str | None] = {None: None}
    facts = _HeaderFacts()
    for i, value in enumerate(values):
        try:
            if not _fast(decoder, rows, i, value, headers[i], keys[i], key_text, facts):
                _slow(decoder, rows, i, value, headers[i], keys[i])
        except Exception as error:  # one bad record never stops the batch
            errors.append((i, error))
    columns = _assemble(decoder, rows)
    bad = ~np.isfinite(columns.values).all(axis=1) if len(columns.rows) else np.zeros(0, bool)
    if bad.any():  # decoded again one by one: the record's own error says why
        for j in np.flatnonzero(bad):
            i = columns.rows[j]
            try:
                decoder.decode(values[i], headers[i] or (), keys[i])
            except Exception as error:
                errors.append((i, error))
        keep = ~bad
        columns = Columns([r for r, k in zip(columns.rows, keep, strict=True) if k],
                          columns.values[keep],
                          [x for x, k in zip(columns.keys, keep, strict=True) if k],
                          [x for x, k in zip(columns.ts, keep, strict=True) if k],
                          [x for x, k in zip(columns.names, keep, strict=True) if k])
    columns.errors = sorted(errors, key=lambda item: item[0])
    return columns


def _uniform_float32(decoder: VectorDecoder, values: Sequence[bytes | None],
                     headers: Sequence[Any], keys: Sequence[bytes | None]) -> Columns | None:
    """A poll of float32 payloads that all carry the same headers (no ``ts``) and the
    right size, all finite: one join and one ``np.frombuffer``, nothing per record but
    its key. None for any other poll (the per-record path then says what is wrong)."""
    width, first = decoder.dimension, headers[0] if headers else None
    if width is None or not first or 4 * width > decoder.max_bytes:
        return None
    if content_type(first) not in FLOAT32_TYPES or header(first, "ts") is not None:
        return None
    size = 4 * width
    if any(h != first for h in headers) or any(
            type(v) is not bytes or len(v) != size for v in values):
        return None
    array = np.frombuffer(b"".join(values), dtype="<f4").reshape(len(values), width)
    if not np.isfinite(array).all():
        return None
    text: dict[bytes | None, str | None] = {None: None}
    count = len(values)
    return Columns(list(range(count)), array.astype(np.float32),
                   [_key(key, text) for key in keys], [None] * count,
                   [decoder.features] * count)


class _HeaderFacts:
    """What the fast path reads from headers (content type, is there a ``ts``), kept for
    the last headers seen: a poll's records mostly carry equal headers, and reading them
    cost more than decoding a binary payload."""

    def __init__(self) -> None:
        self.headers: Any = None
        self.facts: tuple[str | None, bool] = (None, False)

    def of(self, headers: Any) -> tuple[str | None, bool]:
        if not headers:
            return None, False
        if headers != self.headers:
            self.headers = headers
            self.facts = (content_type(headers), header(headers, "ts") is not None)
        return self.facts


def _fast(decoder: VectorDecoder, rows: _Rows, i: int, value: bytes | None,
          headers: Any, kafka_key: bytes | None, key_text: dict, facts: _HeaderFacts) -> bool:
    """The common forms, or False (the record takes the slow path)."""
    width = decoder.dimension
    if width is None or not value or len(value) > decoder.max_bytes:
        return False
    ctype, has_ts = facts.of(headers)
    if ctype in FLOAT32_TYPES:
        if len(value) != 4 * width or has_ts:
            return False
        at = rows.add(i, _key(kafka_key, key_text), None, decoder.features)
        rows.blobs.append(value)
        rows.blob_at.append(at)
        return True
    if ctype is not None and ctype not in JSON_TYPES:
        return False
    try:
        body = orjson.loads(value)
    except orjson.JSONDecodeError:
        return False  # json.loads may still read it (NaN literals), or say why not
    if type(body) is not dict:
        return False
    raw = body.get("values")
    names = decoder.features
    if type(raw) is dict:
        if names is None or len(raw) != width:
            return False
        try:
            row = _getter(names)(raw)
        except KeyError:
            return False
    elif type(raw) is list and len(raw) == width:
        row = raw
    else:
        return False
    if not _NUMBER_TYPES.issuperset(map(type, row)):
        return False
    key, ts = body.get("key"), body.get("ts")
    if (key is not None and type(key) is not str) or (
            ts is not None and (type(ts) is not int or not -_MAX_TS <= ts <= _MAX_TS)):
        return False
    at = rows.add(i, key if key is not None else _key(kafka_key, key_text), ts, names)
    rows.lists.append(row)
    rows.list_at.append(at)
    return True


@functools.lru_cache(maxsize=8)
def _getter(names: tuple[str, ...]) -> Callable[[dict], tuple]:
    """The values of ``names`` from a dict, in that order (a tuple, even of one)."""
    getter = operator.itemgetter(*names)
    return getter if len(names) > 1 else lambda raw: (getter(raw),)


def _slow(decoder: VectorDecoder, rows: _Rows, i: int, value: bytes | None, headers: Any,
          kafka_key: bytes | None) -> None:
    reading = decoder.decode(value, headers or (), kafka_key)
    if decoder.dimension is None:  # the first good vector fixes the width
        decoder.fix_dimension(int(reading.values.shape[-1]))
    at = rows.add(i, reading.key, reading.ts_ms, reading.names)
    rows.arrays.append(reading.values)
    rows.array_at.append(at)


def _key(kafka_key: bytes | None, cache: dict) -> str | None:
    text = cache.get(kafka_key)
    if text is None and kafka_key is not None:
        text = cache[kafka_key] = kafka_key.decode("utf-8", "replace")
    return text


def _assemble(decoder: VectorDecoder, rows: _Rows) -> Columns:
    count = len(rows.index)
    width = decoder.dimension or 0
    values = np.empty((count, width), dtype=np.float32)
    if rows.lists:
        with np.errstate(over="ignore"):  # beyond float32: inf, caught by the finite check
            values[rows.list_at] = np.array(rows.lists, dtype=np.float64)
    if rows.blobs:
        values[rows.blob_at] = np.frombuffer(b"".join(rows.blobs), dtype="<f4").reshape(
            len(rows.blobs), width)
    if rows.arrays:
        values[rows.array_at] = np.stack(rows.arrays)
    return Columns(rows.index, values, rows.keys, rows.ts, rows.names)
