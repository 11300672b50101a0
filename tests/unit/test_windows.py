"""Per-key sliding windows: stride, independence, eviction, late readings."""

from __future__ import annotations

import numpy as np
import pytest

from streamae.exceptions import DecodeError
from streamae.windows import Window, WindowBuilder


def push_many(builder: WindowBuilder, key: str, values, start_ts: int = 0) -> list[Window]:
    out: list[Window] = []
    for i, value in enumerate(values):
        out.extend(builder.push(key, start_ts + i, np.float32(value)))
    return out


def test_first_window_after_length_then_every_reading():
    builder = WindowBuilder(length=3)
    windows = push_many(builder, "a", range(5))
    assert [w.values[:, 0].tolist() for w in windows] == [[0, 1, 2], [1, 2, 3], [2, 3, 4]]
    assert windows[0].values.shape == (3, 1)
    assert windows[0].values.dtype == np.float32
    assert [w.end_ts_ms for w in windows] == [2, 3, 4]
    assert all(w.key == "a" for w in windows)


@pytest.mark.parametrize(
    ("stride", "expected_ends"), [(1, [3, 4, 5, 6, 7, 8, 9]), (2, [3, 5, 7, 9]), (4, [3, 7])]
)
def test_stride(stride, expected_ends):
    builder = WindowBuilder(length=4, stride=stride)
    windows = push_many(builder, "k", range(10))
    assert [int(w.values[-1, 0]) for w in windows] == expected_ends


def test_vectors_keep_their_width():
    builder = WindowBuilder(length=2)
    assert builder.push("k", 1, np.array([1.0, 2.0])) == []
    (window,) = builder.push("k", 2, np.array([3.0, 4.0]))
    np.testing.assert_array_equal(window.values, [[1, 2], [3, 4]])
    with pytest.raises(DecodeError) as info:
        builder.push("k", 3, np.array([1.0, 2.0, 3.0]))
    assert info.value.reason == "wrong_dimension"
    (after,) = builder.push("k", 4, np.array([5.0, 6.0]))  # state untouched by the error
    np.testing.assert_array_equal(after.values, [[3, 4], [5, 6]])
    with pytest.raises(DecodeError):
        builder.push("k", 5, np.ones((2, 2)))


def test_windows_are_copies():
    builder = WindowBuilder(length=2)
    push_many(builder, "k", [1, 2])
    (window,) = builder.push("k", 9, 3.0)
    window.values[:] = 0
    (next_window,) = builder.push("k", 10, 4.0)
    assert next_window.values[:, 0].tolist() == [3, 4]


def test_keys_are_independent():
    builder = WindowBuilder(length=2)
    assert builder.push("a", 0, 1.0) == []
    assert builder.push("b", 0, 10.0) == []
    (wa,) = builder.push("a", 1, 2.0)
    (wb,) = builder.push("b", 1, 20.0)
    assert wa.values[:, 0].tolist() == [1, 2]
    assert wb.values[:, 0].tolist() == [10, 20]
    assert len(builder) == 2
    assert "a" in builder
    builder.push("c", 0, np.array([1.0, 2.0, 3.0]))  # another key may have another width
    assert len(builder) == 3


def test_evicts_least_recently_seen_key():
    builder = WindowBuilder(length=2, max_keys=2)
    builder.push("a", 0, 1.0)
    builder.push("b", 0, 1.0)
    builder.push("a", 1, 2.0)  # a is now more recent than b
    builder.push("c", 0, 1.0)  # evicts b
    assert builder.evicted == 1
    assert len(builder) == 2
    assert "b" not in builder and "a" in builder and "c" in builder
    assert builder.push("b", 1, 2.0) == []  # b starts over; evicts a
    assert builder.evicted == 2
    assert "a" not in builder


def test_late_reading_dropped_by_default():
    builder = WindowBuilder(length=3)
    push_many(builder, "k", [1, 2], start_ts=100)  # ts 100, 101
    assert builder.push("k", 50, 99.0) == []
    assert builder.late_dropped == 1
    assert builder.push("k", 101, 3.0)[0].values[:, 0].tolist() == [1, 2, 3]  # equal ts is fine
    assert builder.late_accepted == 0


def test_late_reading_accepted_in_arrival_order():
    builder = WindowBuilder(length=3, late_policy="accept")
    push_many(builder, "k", [1, 2], start_ts=100)
    (window,) = builder.push("k", 50, 99.0)
    assert window.values[:, 0].tolist() == [1, 2, 99]
    assert window.end_ts_ms == 101  # the newest timestamp seen, not the late one
    assert builder.late_accepted == 1
    assert builder.late_dropped == 0


def test_readings_without_timestamp_are_never_late():
    builder = WindowBuilder(length=2)
    builder.push("k", 100, 1.0)
    (window,) = builder.push("k", None, 2.0)
    assert window.end_ts_ms == 100
    assert builder.late_dropped == 0


def test_drop_and_clear():
    builder = WindowBuilder(length=2)
    builder.push("a", 0, 1.0)
    builder.push("b", 0, 1.0)
    builder.drop("a")
    assert len(builder) == 1
    builder.clear()
    assert len(builder) == 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"length": 0},
        {"length": 2, "stride": 0},
        {"length": 2, "max_keys": 0},
        {"length": 2, "late_policy": "reorder"},
    ],
)
def test_constructor_validation(kwargs):
    with pytest.raises(ValueError):
        WindowBuilder(**kwargs)
