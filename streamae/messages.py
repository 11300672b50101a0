"""Turning input messages into arrays, and results into output records.

Decoders take the raw Kafka value, headers and key and return a :class:`Reading`, or raise
:class:`~streamae.exceptions.DecodeError` with a short ``reason`` (one of :data:`REASONS`)
so the pipeline can dead-letter the message and count it by reason. Nothing here knows
Kafka clients or settings: plain bytes in, numpy arrays out.

Vector inputs (:class:`VectorDecoder`)::

    {"key": "pump-7", "ts": 1718000000000, "values": [0.1, 2.3]}   # positional
    {"key": "pump-7", "ts": "2024-06-10T06:13:20Z", "values": {"a": 0.1, "b": 2.3}}
    [0.1, 2.3]            # bare list
    0.7  or  {"value": 0.7}   # scalar stream (for windows)
    <little-endian float32 bytes>  with header content-type: application/x-float32

Image inputs live in :mod:`streamae.images` (:class:`ImageDecoder`, re-exported here).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from streamae.exceptions import DecodeError

if TYPE_CHECKING:
    from streamae.images import ImageDecoder

logger = logging.getLogger(__name__)

# Reasons: bounded labels for metrics and the dead-letter header.
OVERSIZED = "oversized"
EMPTY = "empty"
INVALID_JSON = "invalid_json"
MISSING_VALUES = "missing_values"
NON_NUMERIC = "non_numeric"
WRONG_DIMENSION = "wrong_dimension"
NON_FINITE = "non_finite"
UNKNOWN_FEATURE = "unknown_feature"
MISSING_FEATURE = "missing_feature"
UNSUPPORTED_CONTENT_TYPE = "unsupported_content_type"
BAD_IMAGE = "bad_image"
WRONG_IMAGE_SIZE = "wrong_image_size"
BAD_BINARY = "bad_binary"
BAD_TIMESTAMP = "bad_timestamp"
BAD_KEY = "bad_key"
TIMESTAMP_OUT_OF_RANGE = "timestamp_out_of_range"
UNEXPECTED = "unexpected"  # any other exception while handling one record
UNREADABLE = "unreadable_record"  # the client cannot parse the record (headers-only letter)
TOO_LARGE_FOR_DEAD_LETTERS = "too_large_for_dead_letters"  # broker refused the copy
REASONS: frozenset[str] = frozenset(
    {
        OVERSIZED,
        EMPTY,
        INVALID_JSON,
        MISSING_VALUES,
        NON_NUMERIC,
        WRONG_DIMENSION,
        NON_FINITE,
        UNKNOWN_FEATURE,
        MISSING_FEATURE,
        UNSUPPORTED_CONTENT_TYPE,
        BAD_IMAGE,
        WRONG_IMAGE_SIZE,
        BAD_BINARY,
        BAD_TIMESTAMP,
        BAD_KEY,
        TIMESTAMP_OUT_OF_RANGE,
        UNEXPECTED,
        UNREADABLE,
        TOO_LARGE_FOR_DEAD_LETTERS,
    }
)

JSON_TYPES = frozenset({"application/json", "text/json", "text/plain"})
FLOAT32_TYPES = frozenset({"application/x-float32", "application/octet-stream"})
ANOMALY_SCHEMA = "streamae.anomaly/v2"  # v2: calibrated score, p_value, unseen, spread
SCORE_SCHEMA = "streamae.score/v1"
SCORES_SCHEMA = "streamae.scores/v1"  # the batch format: columns of one input partition
SCORES_PER_BATCH = 1_000  # readings per batch record: ~40 KB with short keys
DETAIL_MAX_BYTES = 1024
_MAX_ABS_TS_MS = 10**15  # ~ year 33658: beyond this a "timestamp" is garbage
_MAX_TS_DIGITS = 19  # int64 milliseconds; a longer digit string is never a timestamp


@dataclass(frozen=True)
class Reading:
    """One decoded message: float32 values (1-D vector, or (C, H, W) image in [0, 1])."""

    key: str | None
    ts_ms: int | None
    values: np.ndarray
    names: tuple[str, ...] | None = None


def __getattr__(name: str) -> Any:
    """Re-export ImageDecoder lazily, so importing either module first works."""
    if name == "ImageDecoder":
        from streamae.images import ImageDecoder

        return ImageDecoder
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---------------------------------------------------------------- shared helpers


def header(headers: Sequence[tuple[str, bytes | str | None]], name: str) -> str | None:
    """The last value of header ``name`` (case-insensitive) as text, or None."""
    found: str | None = None
    wanted = name.lower()
    for hname, hvalue in headers or ():
        if hname.lower() == wanted and hvalue is not None:
            raw = hvalue.decode("utf-8", "replace") if isinstance(hvalue, bytes) else hvalue
            found = raw.strip()
    return found


def content_type(headers: Sequence[tuple[str, bytes | str | None]]) -> str | None:
    """The media type of header ``content-type`` without parameters, lower-cased."""
    value = header(headers, "content-type")
    if not value:
        return None
    return value.split(";", 1)[0].strip().lower()


def check_size(value: bytes | None, max_bytes: int) -> bytes:
    """Reject missing and oversized payloads before any parsing work is done."""
    if value is None or len(value) == 0:
        raise DecodeError(EMPTY, "message value is empty")
    if len(value) > max_bytes:
        raise DecodeError(OVERSIZED, f"{len(value)} bytes > limit {max_bytes}")
    return bytes(value)


def parse_json(value: bytes) -> Any:
    """Parse UTF-8 JSON; NaN/Infinity literals parse and are rejected later as non_finite."""
    try:
        return json.loads(value)  # bytes: json detects UTF-8 without a decoded copy
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise DecodeError(INVALID_JSON, str(exc)[:200]) from exc


def parse_ts(value: Any) -> int | None:
    """Epoch milliseconds from an int/float, ASCII digit string, or ISO-8601 string (naive =
    UTC). Other digits (``"²"``, ``"٣"``) are not a timestamp; beyond ±10**15 ms is
    ``timestamp_out_of_range``."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise DecodeError(BAD_TIMESTAMP, f"ts is a boolean: {value!r}")
    if isinstance(value, int | float):
        return _ts_in_range(value)
    if isinstance(value, str):
        return _parse_ts_text(value.strip())
    raise DecodeError(BAD_TIMESTAMP, f"ts has type {type(value).__name__}")


def _ts_in_range(value: float) -> int:
    if not math.isfinite(value) or abs(value) > _MAX_ABS_TS_MS:
        raise DecodeError(TIMESTAMP_OUT_OF_RANGE, f"ts out of range: {str(value)[:40]}")
    return round(value)


def _parse_ts_text(text: str) -> int:
    digits = text[1:] if text.startswith("-") else text
    if digits and digits.isascii() and digits.isdigit():
        if len(digits) > _MAX_TS_DIGITS:
            raise DecodeError(TIMESTAMP_OUT_OF_RANGE, f"ts of {len(digits)} digits")
        return _ts_in_range(int(text))
    if not text.isascii():
        raise DecodeError(BAD_TIMESTAMP, f"ts is not ASCII: {text[:64]!r}")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise DecodeError(BAD_TIMESTAMP, f"not ISO-8601 or epoch ms: {text[:64]!r}") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return _ts_in_range(parsed.timestamp() * 1000)
    except (OverflowError, OSError, ValueError) as exc:  # e.g. year 1 with a +14:00 offset
        raise DecodeError(TIMESTAMP_OUT_OF_RANGE, f"ts out of range: {text[:64]!r}") from exc


def parse_key(body_key: Any, kafka_key: bytes | None) -> str | None:
    """The entity key: the body's ``key`` when present, else the Kafka message key."""
    if body_key is None:
        if not kafka_key:
            return None
        return (
            kafka_key.decode("utf-8", "replace") if isinstance(kafka_key, bytes) else str(kafka_key)
        )
    if isinstance(body_key, bool) or not isinstance(body_key, str | int | float):
        raise DecodeError(BAD_KEY, f"key must be a string or number, not {type(body_key).__name__}")
    return str(body_key)


_JSON_NUMBERS = (int, float)  # exact types: a JSON true is a bool, not a number
_F32_MAX = float(np.finfo(np.float32).max)


def to_float_array(items: Sequence[Any]) -> np.ndarray:
    """A flat list of JSON numbers as float32; booleans, strings and nesting are non-numeric.

    The hot path of every vector message: one type scan, one conversion, one finite check.
    """
    if not all(type(item) in _JSON_NUMBERS for item in items):
        bad = next(item for item in items if type(item) not in _JSON_NUMBERS)
        raise DecodeError(NON_NUMERIC, f"value {str(bad)[:40]!r} is not a number")
    # One comparison rejects NaN (compares false), ±Inf and what float32 cannot hold,
    # before numpy sees it: cheaper than converting and checking the array.
    if not all(-_F32_MAX <= item <= _F32_MAX for item in items):
        bad = next(i for i, item in enumerate(items) if not -_F32_MAX <= item <= _F32_MAX)
        raise DecodeError(NON_FINITE, f"value at index {bad} is NaN or infinite "
                                      "(or beyond float32)")
    return np.array(items, dtype=np.float32)


def check_finite(array: np.ndarray) -> np.ndarray:
    """Reject NaN and ±Inf (including float32 overflow of huge numbers)."""
    finite = np.isfinite(array)
    if not finite.all():
        bad = int(np.flatnonzero(~finite.ravel())[0])
        raise DecodeError(NON_FINITE, f"value at index {bad} is NaN or infinite")
    return array


# ---------------------------------------------------------------- vectors


class VectorDecoder:
    """Decode vector and scalar messages to a 1-D float32 :class:`Reading`.

    Named features: the order is ``features`` when given, else the order of the first named
    message that decodes; afterwards every named message must carry exactly those names.
    The width is free until ``dimension`` is given or :meth:`fix_dimension` is called.
    """

    def __init__(
        self,
        features: Sequence[str] = (),
        dimension: int | None = None,
        max_bytes: int = 1 << 20,
    ) -> None:
        self._features: tuple[str, ...] | None = tuple(features) or None
        if self._features and len(set(self._features)) != len(self._features):
            raise ValueError(f"duplicate feature names in {self._features}")
        if self._features and dimension is not None and dimension != len(self._features):
            raise ValueError(f"dimension {dimension} != {len(self._features)} features")
        if dimension is not None and dimension < 1:
            raise ValueError(f"dimension must be >= 1, got {dimension}")
        self._dimension = (
            dimension
            if dimension is not None
            else (len(self._features) if self._features else None)
        )
        self.max_bytes = max_bytes

    @property
    def features(self) -> tuple[str, ...] | None:
        """The fixed feature order, or None while no named message has been seen."""
        return self._features

    @property
    def dimension(self) -> int | None:
        """The enforced width, or None while any width is accepted."""
        return self._dimension

    def fix_dimension(self, dimension: int) -> None:
        """Enforce ``dimension`` from now on (after warm-up or a checkpoint load)."""
        if dimension < 1:
            raise ValueError(f"dimension must be >= 1, got {dimension}")
        if self._features and dimension != len(self._features):
            raise ValueError(f"dimension {dimension} != {len(self._features)} named features")
        self._dimension = dimension

    def decode(
        self,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]] = (),
        key: bytes | None = None,
    ) -> Reading:
        """Decode one message; raises DecodeError with a reason from REASONS."""
        payload = check_size(value, self.max_bytes)
        ctype = content_type(headers)
        if ctype in FLOAT32_TYPES:
            values = self._decode_float32(payload)
            ts = parse_ts(header(headers, "ts"))
            reading = Reading(parse_key(None, key), ts, values, self._features)
        elif ctype is None or ctype in JSON_TYPES:
            reading = self._decode_json(parse_json(payload), key)
        else:
            raise DecodeError(UNSUPPORTED_CONTENT_TYPE, f"content-type {ctype[:80]!r}")
        self._check_width(reading.values)
        return reading

    def _decode_float32(self, payload: bytes) -> np.ndarray:
        if len(payload) % 4:
            raise DecodeError(BAD_BINARY, f"{len(payload)} bytes is not a multiple of 4")
        return check_finite(np.frombuffer(payload, dtype="<f4").astype(np.float32))

    def _decode_json(self, body: Any, kafka_key: bytes | None) -> Reading:
        if isinstance(body, list):
            return Reading(parse_key(None, kafka_key), None, to_float_array(body), self._features)
        if isinstance(body, int | float) and not isinstance(body, bool):
            return Reading(parse_key(None, kafka_key), None, to_float_array([body]))
        if not isinstance(body, dict):
            raise DecodeError(NON_NUMERIC, f"body is a JSON {type(body).__name__}")
        key = parse_key(body.get("key"), kafka_key)
        ts = parse_ts(body.get("ts"))
        if "values" in body:
            raw = body["values"]
        elif "value" in body:
            raw = [body["value"]]
        else:
            raise DecodeError(MISSING_VALUES, "body has neither 'values' nor 'value'")
        if isinstance(raw, dict):
            return Reading(key, ts, self._decode_named(raw), self._features)
        if not isinstance(raw, list):
            raise DecodeError(NON_NUMERIC, f"'values' is a JSON {type(raw).__name__}")
        return Reading(key, ts, to_float_array(raw), self._features)

    def _decode_named(self, raw: Mapping[str, Any]) -> np.ndarray:
        if not raw:
            raise DecodeError(MISSING_VALUES, "'values' is an empty object")
        order = self._features or tuple(raw)
        if len(raw) != len(order) or raw.keys() != set(order):
            unknown = [name for name in raw if name not in order]
            if unknown:
                raise DecodeError(UNKNOWN_FEATURE, f"unknown features {unknown[:5]}"[:200])
            missing = [name for name in order if name not in raw]
            raise DecodeError(MISSING_FEATURE, f"missing features {missing[:5]}"[:200])
        values = to_float_array([raw[name] for name in order])
        if self._features is None:
            self._check_width(values)
            self._features = order
            self._dimension = len(order)
            logger.info("feature order fixed by first message features=%s", ",".join(order))
        return values

    def _check_width(self, values: np.ndarray) -> None:
        if values.size == 0:
            raise DecodeError(MISSING_VALUES, "no values")
        if self._dimension is not None and values.size != self._dimension:
            raise DecodeError(WRONG_DIMENSION, f"width {values.size} != {self._dimension}")


# ---------------------------------------------------------------- output records


NULL_HEADERS = "streamae.headers.null"  # names of original headers whose value was null


def copy_headers(headers: Sequence[Any] | None) -> list[tuple[str, bytes]]:
    """The original headers in a form any producer can send again.

    Keys become UTF-8 text (undecodable bytes replaced), values bytes. Kafka allows a null
    value, which kafka-python cannot send: it becomes ``b""`` and its key is listed in the
    ``streamae.headers.null`` header, so the difference stays visible.
    """
    copied: list[tuple[str, bytes]] = []
    nulls: list[str] = []
    for item in headers or ():
        try:
            name, value = item
        except (TypeError, ValueError):
            continue  # not a (key, value) pair: nothing a broker could have sent
        key = _header_text(name)
        if value is None:
            nulls.append(key)
            value = b""
        copied.append((key, _header_bytes(value)))
    if nulls:
        copied.append((NULL_HEADERS, ",".join(nulls).encode("utf-8")))
    return copied


def _header_text(name: Any) -> str:
    raw = name if isinstance(name, bytes | bytearray) else str(name).encode("utf-8", "replace")
    return bytes(raw).decode("utf-8", "replace")


def _header_bytes(value: Any) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    return str(value).encode("utf-8", "replace")


def dead_letter_headers(
    error: Exception, *, topic: str, partition: int, offset: int, now_ms: int
) -> list[tuple[str, bytes]]:
    """Headers that say why and from where a message was dead-lettered."""
    reason = getattr(error, "reason", UNEXPECTED)
    detail = getattr(error, "detail", str(error))
    encoded = str(detail).encode("utf-8", "replace")
    if len(encoded) > DETAIL_MAX_BYTES:
        encoded = encoded[: DETAIL_MAX_BYTES - 3].decode("utf-8", "ignore").encode() + b"..."
    return [
        ("streamae.error.class", type(error).__name__.encode()),
        ("streamae.error.reason", str(reason).encode()),
        ("streamae.error.detail", encoded),
        ("streamae.source.topic", topic.encode()),
        ("streamae.source.partition", str(partition).encode()),
        ("streamae.source.offset", str(offset).encode()),
        ("streamae.dead_lettered_at", str(now_ms).encode()),
    ]


def anomaly_event(
    *,
    topic: str,
    partition: int,
    offset: int,
    key: str | None,
    event_ts_ms: int | None,
    detected_ts_ms: int,
    score: float,
    threshold: float,
    threshold_method: str,
    model_kind: str,
    model_version: str | int,
    features: list[dict] | None = None,
    regions: list[dict] | None = None,
    heatmap: list[list[float]] | None = None,
    window: dict | None = None,
    unseen: list[dict] | None = None,
    spread: list[dict] | None = None,
    mode: list[dict] | None = None,
) -> dict:
    """The anomaly record (flat; optional explanation fields only when given).

    ``score`` is ``-log10(p_value)``, p_value the share of normal readings at least this
    extreme under the model's calibration; ``threshold`` is on the same scale
    (``threshold_p`` = the false-alarm rate it stands for)."""
    event: dict[str, Any] = {
        "schema": ANOMALY_SCHEMA,
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "key": key,
        "event_ts_ms": event_ts_ms,
        "detected_ts_ms": detected_ts_ms,
        "score": score,
        "threshold": threshold,
        "threshold_method": threshold_method,
        "p_value": 10.0 ** -float(score),
        "threshold_p": 10.0 ** -float(threshold),
        "model_kind": model_kind,
        "model_version": model_version,
    }
    optional = {"features": features, "regions": regions, "heatmap": heatmap, "window": window,
                "unseen": unseen, "spread": spread, "mode": mode}
    event.update({name: item for name, item in optional.items() if item is not None})
    return event


def score_record(
    *,
    topic: str,
    partition: int,
    offset: int,
    key: str | None,
    score: float,
    threshold: float | None,
    anomaly: bool,
    model_version: str | int,
) -> dict:
    """One line of the optional scores topic (every message, not only anomalies)."""
    return {
        "schema": SCORE_SCHEMA,
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "key": key,
        "score": score,
        "threshold": threshold,
        "anomaly": bool(anomaly),
        "model_version": model_version,
    }


def _jsonable(obj: Any) -> Any:
    """Plain JSON types: numpy handled, floats to 6 significant digits, NaN/Inf to null."""
    if isinstance(obj, bool | np.bool_):
        return bool(obj)
    if isinstance(obj, float | np.floating):
        value = float(obj)
        return float(f"{value:.6g}") if math.isfinite(value) else None
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(item) for item in obj]
    if isinstance(obj, bytes):
        return obj.decode("utf-8", "replace")
    if obj is None or isinstance(obj, str):
        return obj
    raise TypeError(f"cannot encode {type(obj).__name__} as JSON")


def encode_json(obj: dict) -> bytes:
    """Compact UTF-8 JSON of an output record; strict (no NaN literals)."""
    return orjson.dumps(_jsonable(obj))


def _round6(value: float) -> float | None:
    return float(f"{value:.6g}") if math.isfinite(value) else None


def _score_context(threshold: float | None,
                   model_version: str | int) -> tuple[float | None, str | int]:
    """A batch's threshold and model version as every score line carries them."""
    limit = None if threshold is None else _round6(float(threshold))
    version = int(model_version) if isinstance(model_version, int | np.integer) \
        else model_version
    return limit, version


def score_records(records: Sequence[Any], keys: Sequence[str | None], scores: np.ndarray,
                  flags: np.ndarray, threshold: float | None,
                  model_version: str | int) -> list[bytes]:
    """The scores topic's lines of a batch (as :func:`score_record` + :func:`encode_json`
    would write each, built in one pass: this runs for every message)."""
    limit, version = _score_context(threshold, model_version)
    dumps = orjson.dumps
    return [dumps({"schema": SCORE_SCHEMA, "topic": record.topic,
                   "partition": record.partition, "offset": record.offset, "key": key,
                   "score": _round6(score), "threshold": limit, "anomaly": flag,
                   "model_version": version})
            for record, key, score, flag in zip(records, keys, scores.tolist(),
                                                flags.astype(bool).tolist(), strict=True)]


def score_batches(records: Sequence[Any], keys: Sequence[str | None], scores: np.ndarray,
                  flags: np.ndarray, threshold: float | None, model_version: str | int,
                  size: int = SCORES_PER_BATCH) -> list[tuple[bytes, bytes]]:
    """The scores topic's batch format: per input partition, in offset order, records of
    at most ``size`` readings as columns; (Kafka key ``topic/partition``, value) pairs.
    One record stands for many messages, so the topic costs about one send per turn."""
    limit, version = _score_context(threshold, model_version)
    rounded = [_round6(score) for score in scores.tolist()]
    flagged = flags.astype(bool).tolist()
    rows: dict[tuple[str, int], list[int]] = {}
    for i, record in enumerate(records):
        rows.setdefault((record.topic, record.partition), []).append(i)
    out = []
    for (topic, partition), indices in rows.items():
        for start in range(0, len(indices), size):
            chunk = indices[start:start + size]
            out.append((f"{topic}/{partition}".encode(), orjson.dumps({
                "schema": SCORES_SCHEMA, "topic": topic, "partition": partition,
                "offsets": [records[i].offset for i in chunk],
                "keys": [keys[i] for i in chunk], "scores": [rounded[i] for i in chunk],
                "anomalies": [j for j, i in enumerate(chunk) if flagged[i]],
                "threshold": limit, "model_version": version})))
    return out


def unbatch_scores(body: dict) -> list[dict]:
    """A batch record's readings as the record format's lines (for consumers and tests)."""
    anomalies = set(body["anomalies"])
    return [{"schema": SCORE_SCHEMA, "topic": body["topic"], "partition": body["partition"],
             "offset": offset, "key": key, "score": score, "threshold": body["threshold"],
             "anomaly": j in anomalies, "model_version": body["model_version"]}
            for j, (offset, key, score) in enumerate(zip(body["offsets"], body["keys"],
                                                         body["scores"], strict=True))]


__all__ = [
    "ANOMALY_SCHEMA",
    "REASONS",
    "SCORES_SCHEMA",
    "SCORE_SCHEMA",
    "ImageDecoder",
    "Reading",
    "VectorDecoder",
    "anomaly_event",
    "copy_headers",
    "dead_letter_headers",
    "encode_json",
    "score_batches",
    "score_record",
    "score_records",
    "unbatch_scores",
]
