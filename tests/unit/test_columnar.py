"""decode_vectors (a poll at once) gives what VectorDecoder.decode gives record by record:
the same rows, values, keys, timestamps and names, and the same reason for each bad one."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from streamae.columnar import decode_vectors
from streamae.messages import VectorDecoder

F32 = ("content-type", b"application/x-float32")
NAMES = ("a", "b", "c")


def j(obj: object) -> bytes:
    return json.dumps(obj).encode()


MIXED = [  # (value, headers, kafka key)
    (j({"key": "p1", "ts": 5, "values": {"a": 1, "b": 2.5, "c": -3}}), [], b"k"),
    (j({"values": [1, 2, 3]}), [], b"kafka-key"),
    (j({"values": {"c": 3, "a": 1, "b": 2}}), [], None),  # other key order
    (struct.pack("<3f", 1, 2, 3), [F32], b"bin"),
    (struct.pack("<3f", 4, 5, 6), [F32, ("ts", b"77")], None),  # ts header: slow path
    (j({"key": 7, "ts": "1970-01-01T00:00:01Z", "values": [1, 2, 3]}), [], None),
    (j([4, 5, 6]), [], None),
    (j({"values": [1e39, 1, 1]}), [], None),  # beyond float32
    (b'{"values": [NaN, 1, 2]}', [], None),
    (j({"values": [True, 1, 2]}), [], None),
    (j({"values": ["1", 1, 2]}), [], None),
    (j({"values": {"a": 1, "b": 2}}), [], None),
    (j({"values": {"a": 1, "b": 2, "d": 3}}), [], None),
    (j({"values": [1, 2]}), [], None),
    (b"{not json", [], None),
    (b"", [], None),
    (b"[1,2,]", [], None),
    (struct.pack("<3f", float("nan"), 1, 2), [F32], None),
    (struct.pack("<2f", 1, 2), [F32], None),
    (j({"values": [1, 2, 3], "ts": True}), [], None),
    (j({"values": [1, 2, 3], "key": {"x": 1}}), [], None),
    (b"<x/>", [("content-type", b"text/xml")], None),
    (j({"value": 1.0}), [], None),
]


def one_by_one(decoder: VectorDecoder, poll: list = MIXED) -> tuple[list, dict]:
    rows, errors = [], {}
    for i, (value, headers, key) in enumerate(poll):
        try:
            reading = decoder.decode(value, headers, key)
        except Exception as error:
            errors[i] = getattr(error, "reason", type(error).__name__)
            continue
        rows.append((i, reading.values.tolist(), reading.key, reading.ts_ms, reading.names))
    return rows, errors


def decoded_as_one_by_one(poll: list) -> tuple[list, object]:
    """Decode ``poll`` at once, assert it equals record by record; its rows and columns."""
    expected_rows, expected_errors = one_by_one(VectorDecoder(NAMES, max_bytes=4096), poll)
    decoder = VectorDecoder(NAMES, max_bytes=4096)
    decoder.fix_dimension(len(NAMES))
    columns = decode_vectors(decoder, *zip(*poll, strict=True))
    rows = [(i, columns.values[n].tolist(), columns.keys[n], columns.ts[n], columns.names[n])
            for n, i in enumerate(columns.rows)]
    assert rows == expected_rows
    assert {i: getattr(e, "reason", type(e).__name__) for i, e in columns.errors} == \
        expected_errors
    return rows, columns


def test_a_poll_decodes_as_record_by_record_with_the_same_reasons():
    rows, columns = decoded_as_one_by_one(MIXED)
    assert columns.values.dtype == np.float32 and len(rows) >= 6


@pytest.mark.parametrize("seed", range(6))
def test_records_with_other_headers_than_their_neighbours_decode_as_alone(seed):
    # the fast path remembers the last headers it read: every neighbour must count
    rng = np.random.default_rng(seed)
    heads = [[F32], [F32, ("ts", b"77")], [], [("content-type", b"application/json")],
             [("CONTENT-TYPE", b"application/x-float32; v=1")], [F32, ("x", None)]]
    poll = []
    for n in range(60):
        h = heads[int(rng.integers(len(heads)))]
        binary = "float32" in str(h).lower()
        value = struct.pack("<3f", n, 1, 2) if binary else j({"values": [n, 1, 2]})
        poll.append((value, list(h), None))
    rows, _ = decoded_as_one_by_one(poll)
    assert any(ts == 77 for _, _, _, ts, _ in rows)


@pytest.mark.parametrize("odd", [None, "nan", "short", "ts header", "other header", "no value"])
def test_a_float32_poll_decodes_at_once_and_one_odd_record_as_alone(odd):
    poll = [(struct.pack("<3f", n, -n, 0.5), [F32], f"k{n % 3}".encode()) for n in range(40)]
    odd_record = {"nan": (struct.pack("<3f", float("nan"), 1, 2), [F32], None),
                  "short": (struct.pack("<2f", 1, 2), [F32], None),
                  "ts header": (struct.pack("<3f", 1, 2, 3), [F32, ("ts", b"9")], None),
                  "other header": (struct.pack("<3f", 1, 2, 3), [F32, ("x", b"y")], b"k"),
                  "no value": (None, [F32], None)}.get(odd)
    if odd_record is not None:
        poll[17] = odd_record
    _, columns = decoded_as_one_by_one(poll)
    assert columns.values.flags.writeable and columns.values.dtype == np.float32


def test_the_first_named_message_fixes_the_order_for_the_rest_of_the_poll():
    decoder = VectorDecoder(max_bytes=4096)
    values = [j({"values": {"b": 2, "a": 1}}), j({"values": {"a": 3, "b": 4}}),
              j({"values": {"a": 5}})]
    columns = decode_vectors(decoder, values, [[]] * 3, [None] * 3)
    assert decoder.features == ("b", "a")
    assert columns.values.tolist() == [[2, 1], [4, 3]]
    assert [e.reason for _, e in columns.errors] == ["missing_feature"]
