"""Vector decoding, its failure reasons, and the output records."""

from __future__ import annotations

import json

import numpy as np
import pytest

from streamae.exceptions import DecodeError
from streamae.messages import (
    ANOMALY_SCHEMA,
    REASONS,
    Reading,
    VectorDecoder,
    anomaly_event,
    copy_headers,
    dead_letter_headers,
    encode_json,
    parse_ts,
    score_batches,
    score_record,
    score_records,
    unbatch_scores,
)
from streamae.replay import Record

F32 = [("content-type", b"application/x-float32")]


def j(obj: object) -> bytes:
    return json.dumps(obj).encode()


def reason_of(decoder: VectorDecoder, value: bytes | None, headers=()) -> str:
    with pytest.raises(DecodeError) as info:
        decoder.decode(value, headers)
    assert info.value.reason in REASONS
    return info.value.reason


# ------------------------------------------------------------------ accepted inputs


def test_positional_values_with_key_and_epoch_ts():
    reading = VectorDecoder().decode(j({"key": "pump-7", "ts": 1718000000000, "values": [1, 2.5]}))
    assert reading.key == "pump-7"
    assert reading.ts_ms == 1718000000000
    assert reading.values.dtype == np.float32
    np.testing.assert_array_equal(reading.values, [1.0, 2.5])
    assert reading.names is None


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        ("2024-06-10T06:13:20Z", 1718000000000),
        ("2024-06-10T06:13:20+00:00", 1718000000000),
        ("2024-06-10T08:13:20.250+02:00", 1718000000250),
        ("2024-06-10T06:13:20", 1718000000000),  # naive means UTC
        ("1718000000000", 1718000000000),
        (1718000000000.4, 1718000000000),
        (None, None),
    ],
)
def test_timestamps(ts, expected):
    reading = VectorDecoder().decode(j({"ts": ts, "values": [1.0]}))
    assert reading.ts_ms == expected


@pytest.mark.parametrize("ts", ["yesterday", True, [1], "2024-13-40T00:00:00", "\u00b2",
                                "\u0663", "\u0661\u0662\u0663\u0664", "-", "12a", "\uff11"])
def test_bad_timestamp(ts):
    assert reason_of(VectorDecoder(), j({"ts": ts, "values": [1.0]})) == "bad_timestamp"


@pytest.mark.parametrize("ts", [1e30, -1e16, "9" * 5000, "-" + "9" * 20, "10000000000000000",
                                "99999999999999999999"])
def test_timestamp_out_of_range(ts):
    reason = reason_of(VectorDecoder(), j({"ts": ts, "values": [1.0]}))
    assert reason == "timestamp_out_of_range"


@pytest.mark.parametrize(("ts", "reason"), [(b"\xc2\xb2", "bad_timestamp"),
                                            (b"9" * 5000, "timestamp_out_of_range")])
def test_float32_ts_header_is_checked_like_json(ts, reason):
    headers = [*F32, ("ts", ts)]
    assert reason_of(VectorDecoder(), np.ones(2, "<f4").tobytes(), headers) == reason


def test_negative_and_ascii_digit_strings_are_epoch_ms():
    assert parse_ts("-1000") == -1000
    assert parse_ts(" 1718000000000 ") == 1718000000000


def test_parse_ts_direct():
    assert parse_ts(0) == 0


def test_kafka_key_is_fallback_and_body_key_wins():
    decoder = VectorDecoder()
    assert decoder.decode(j({"values": [1.0]}), key=b"k-1").key == "k-1"
    assert decoder.decode(j({"key": "body", "values": [1.0]}), key=b"k-1").key == "body"
    assert decoder.decode(j({"key": 42, "values": [1.0]})).key == "42"
    assert decoder.decode(j([1.0]), key=b"k-2").key == "k-2"
    assert decoder.decode(j([1.0])).key is None


def test_bad_key():
    assert reason_of(VectorDecoder(), j({"key": {"a": 1}, "values": [1.0]})) == "bad_key"


def test_bare_list_scalar_and_value_object():
    decoder = VectorDecoder()
    np.testing.assert_array_equal(decoder.decode(b"[1, 2, 3]").values, [1, 2, 3])
    scalar = decoder.decode(b"0.5")
    assert scalar.values.shape == (1,)
    assert scalar.values[0] == pytest.approx(0.5)
    obj = decoder.decode(j({"key": "s", "ts": 5, "value": 2}))
    assert (obj.key, obj.ts_ms, obj.values.tolist()) == ("s", 5, [2.0])


def test_named_features_order_fixed_by_first_message_then_enforced():
    decoder = VectorDecoder()
    first = decoder.decode(j({"values": {"b": 2.0, "a": 1.0}}))
    assert first.names == ("b", "a")
    np.testing.assert_array_equal(first.values, [2.0, 1.0])
    second = decoder.decode(j({"values": {"a": 10.0, "b": 20.0}}))  # reordered: same order out
    np.testing.assert_array_equal(second.values, [20.0, 10.0])
    assert decoder.features == ("b", "a")
    assert decoder.dimension == 2
    assert reason_of(decoder, j({"values": {"a": 1, "b": 2, "c": 3}})) == "unknown_feature"
    assert reason_of(decoder, j({"values": {"a": 1}})) == "missing_feature"
    assert reason_of(decoder, j({"values": {"a": 1, "z": 2}})) == "unknown_feature"


def test_named_features_from_settings():
    decoder = VectorDecoder(features=["x", "y"])
    reading = decoder.decode(j({"values": {"y": 2, "x": 1}}))
    np.testing.assert_array_equal(reading.values, [1, 2])
    assert reading.names == ("x", "y")
    assert reason_of(decoder, j({"values": [1, 2, 3]})) == "wrong_dimension"


def test_failed_first_named_message_does_not_fix_order():
    decoder = VectorDecoder()
    assert reason_of(decoder, j({"values": {"a": "x"}})) == "non_numeric"
    assert decoder.features is None
    assert decoder.decode(j({"values": {"c": 1}})).names == ("c",)


def test_binary_float32_round_trip():
    values = np.array([0.25, -1.5, 3e6], dtype="<f4")
    reading = VectorDecoder().decode(values.tobytes(), [*F32, ("ts", b"1000")], key=b"dev")
    np.testing.assert_array_equal(reading.values, values)
    assert (reading.key, reading.ts_ms) == ("dev", 1000)
    octet_headers = [("Content-Type", b"application/octet-stream")]
    octet = VectorDecoder().decode(values.tobytes(), octet_headers)
    np.testing.assert_array_equal(octet.values, values)


def test_content_type_parameters_are_ignored():
    headers = [("content-type", b"application/json; charset=utf-8")]
    assert VectorDecoder().decode(b"[1]", headers).values.tolist() == [1.0]


def test_fix_dimension():
    decoder = VectorDecoder()
    assert decoder.decode(b"[1, 2, 3]").values.size == 3
    decoder.fix_dimension(2)
    assert decoder.decode(b"[1, 2]").values.size == 2
    assert reason_of(decoder, b"[1, 2, 3]") == "wrong_dimension"
    assert reason_of(decoder, np.ones(3, "<f4").tobytes(), F32) == "wrong_dimension"
    with pytest.raises(ValueError):
        VectorDecoder(features=["a"]).fix_dimension(2)


def test_constructor_validation():
    with pytest.raises(ValueError):
        VectorDecoder(features=["a", "a"])
    with pytest.raises(ValueError):
        VectorDecoder(features=["a"], dimension=2)


# ------------------------------------------------------------------ every reason


@pytest.mark.parametrize(
    ("value", "headers", "reason"),
    [
        (b"", (), "empty"),
        (None, (), "empty"),
        (b"[" + b"1," * 40 + b"1]", (), "oversized"),
        (b"{not json", (), "invalid_json"),
        (b"\xff\xfe[1]", (), "invalid_json"),
        (j({"key": "k"}), (), "missing_values"),
        (j({"values": []}), (), "missing_values"),
        (j({"values": {}}), (), "missing_values"),
        (j({"values": [1, "2"]}), (), "non_numeric"),
        (j({"values": [1, True]}), (), "non_numeric"),
        (j({"values": [[1, 2]]}), (), "non_numeric"),
        (j({"values": "1,2"}), (), "non_numeric"),
        (j({"value": None}), (), "non_numeric"),
        (b'"text"', (), "non_numeric"),
        (b"true", (), "non_numeric"),
        (b"[1, NaN]", (), "non_finite"),
        (b"[Infinity]", (), "non_finite"),
        (b"[1e39]", (), "non_finite"),  # overflows float32
        (b"[1e999]", (), "non_finite"),
        (np.array([1, np.nan], "<f4").tobytes(), F32, "non_finite"),
        (b"\x00\x00\x80", F32, "bad_binary"),
        (b"[1]", [("content-type", b"image/png")], "unsupported_content_type"),
    ],
)
def test_reasons(value, headers, reason):
    assert reason_of(VectorDecoder(max_bytes=64), value, headers) == reason


def test_wrong_dimension_from_constructor():
    assert reason_of(VectorDecoder(dimension=2), b"[1, 2, 3]") == "wrong_dimension"


# ------------------------------------------------------------------ output records


def test_dead_letter_headers():
    error = DecodeError("non_finite", "x" * 5000 + "é")
    headers = dead_letter_headers(error, topic="in", partition=3, offset=41, now_ms=123)
    named = dict(headers)
    assert len(named) == len(headers) == 7
    assert named["streamae.error.class"] == b"DecodeError"
    assert named["streamae.error.reason"] == b"non_finite"
    assert len(named["streamae.error.detail"]) <= 1024
    assert named["streamae.source.topic"] == b"in"
    assert named["streamae.source.partition"] == b"3"
    assert named["streamae.source.offset"] == b"41"
    assert named["streamae.dead_lettered_at"] == b"123"
    assert all(isinstance(v, bytes) for _, v in headers)


def test_dead_letter_headers_for_unexpected_error():
    named = dict(dead_letter_headers(KeyError("x"), topic="t", partition=0, offset=0, now_ms=1))
    assert named["streamae.error.class"] == b"KeyError"
    assert named["streamae.error.reason"] == b"unexpected"


def test_anomaly_event_fields_and_numpy_encoding():
    event = anomaly_event(
        topic="in",
        partition=np.int64(2),
        offset=7,
        key="pump-7",
        event_ts_ms=1000,
        detected_ts_ms=1500,
        score=np.float32(3.14159265),
        threshold=1.5,
        threshold_method="quantile",
        model_kind="dense",
        model_version=4,
        features=[{"name": "a", "value": np.float64(1.0), "z": np.float32(5.5)}],
        heatmap=np.array([[0.1, 0.2]], dtype=np.float32).tolist(),
        window={"length": 32, "values": np.arange(3, dtype=np.float32)},
    )
    assert event["schema"] == ANOMALY_SCHEMA == "streamae.anomaly/v2"
    assert "regions" not in event
    decoded = json.loads(encode_json(event))
    assert decoded["partition"] == 2
    assert decoded["score"] == pytest.approx(3.14159, abs=1e-5)
    assert decoded["p_value"] == pytest.approx(10 ** -3.14159265, rel=1e-5)
    assert decoded["threshold_p"] == pytest.approx(10 ** -1.5, rel=1e-5)
    assert decoded["features"][0]["z"] == 5.5
    assert decoded["window"]["values"] == [0.0, 1.0, 2.0]
    assert decoded["heatmap"] == [[0.1, 0.2]]
    for name in (
        "topic",
        "offset",
        "key",
        "event_ts_ms",
        "detected_ts_ms",
        "threshold",
        "threshold_method",
        "model_kind",
        "model_version",
    ):
        assert name in decoded


def test_encode_json_is_compact_and_strict():
    raw = encode_json({"a": np.bool_(True), "b": float("nan"), "c": (1, 2), "d": b"k"})
    assert raw == b'{"a":true,"b":null,"c":[1,2],"d":"k"}'
    with pytest.raises(TypeError):
        encode_json({"x": object()})


def test_score_record():
    record = score_record(
        topic="in",
        partition=0,
        offset=1,
        key=None,
        score=0.5,
        threshold=None,
        anomaly=np.bool_(False),
        model_version="v1",
    )
    assert record["schema"] == "streamae.score/v1"
    assert record["anomaly"] is False
    assert json.loads(encode_json(record))["threshold"] is None


def test_score_batches_hold_the_record_formats_lines_per_partition_in_order():
    records = [Record(b"", offset, topic="in", partition=offset % 3) for offset in range(20)]
    keys = [None if i % 4 else f"k{i}" for i in range(20)]
    scores = np.linspace(0.0, 9.5, 20).astype(np.float32)
    flags = scores > 4.0
    batches = score_batches(records, keys, scores, flags, 4.0, 3, size=3)
    # partition p holds offsets p, p + 3, ...: 7, 7 and 6 readings, in records of 3 at most
    assert [len(json.loads(body)["offsets"]) for _, body in batches] == [3, 3, 1, 3, 3, 1, 3, 3]
    assert {key for key, _ in batches} == {b"in/0", b"in/1", b"in/2"}
    lines = [line for _, body in batches for line in unbatch_scores(json.loads(body))]
    expected = [json.loads(b) for b in score_records(records, keys, scores, flags, 4.0, 3)]
    assert sorted(lines, key=lambda line: line["offset"]) == expected
    for partition in range(3):
        offsets = [line["offset"] for line in lines if line["partition"] == partition]
        assert offsets == sorted(offsets)
    assert all(json.loads(body)["schema"] == "streamae.scores/v1" for _, body in batches)


def test_reading_is_frozen():
    reading = Reading("k", None, np.zeros(1, np.float32), None)
    with pytest.raises(AttributeError):
        reading.key = "other"  # type: ignore[misc]


def test_image_decoder_reexported():
    from streamae import images, messages

    assert messages.ImageDecoder is images.ImageDecoder


def test_copy_headers_makes_null_values_and_odd_keys_sendable():
    odd = "k\udcff"  # a key that cannot be encoded as UTF-8
    original = [("a", b"1"), ("n", None), (b"\xff\xfe", b"2"), (odd, "text"), ("broken",)]
    copied = copy_headers(original)
    assert copied == [("a", b"1"), ("n", b""), ("\ufffd\ufffd", b"2"), ("k?", b"text"),
                      ("streamae.headers.null", b"n")]
    assert all(isinstance(k, str) and isinstance(v, bytes) for k, v in copied)
    assert all(k.encode("utf-8") for k, _ in copied)  # every key encodes now
    assert copy_headers(None) == [] and copy_headers([("x", b"")]) == [("x", b"")]
