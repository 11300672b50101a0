"""Per-key sliding windows: stride, independence, eviction, late readings."""

from __future__ import annotations

import numpy as np
import pytest

from streamae.exceptions import DecodeError
from streamae.windows import Window, WindowBuilder, profiles_from_json, profiles_to_json


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


def test_a_key_profile_is_fixed_by_its_first_readings_and_its_windows_wait_for_it():
    builder = WindowBuilder(length=3, profile_readings=5)
    first = [10.0, 12.0, 11.0, 13.0, 9.0]  # median 11; windows' stds 0.82, 0.82, 1.63
    assert push_many(builder, "a", first[:4]) == []  # a full window, but no profile yet
    (window,) = push_many(builder, "a", first[4:], start_ts=4)
    spread = np.sqrt(2 / 3)  # the median of the three windows' standard deviations
    assert window.loc.tolist() == [11.0]
    np.testing.assert_allclose(window.scale, [spread], rtol=1e-6)
    assert window.values[:, 0].tolist() == [11.0, 13.0, 9.0]  # the reading's units
    np.testing.assert_allclose(window.normalised()[:, 0], np.array([0, 2, -2]) / spread,
                               rtol=1e-6)
    (later,) = builder.push("a", 5, np.float32(1000.0))  # fixed: a spike does not move it
    assert later.loc.tolist() == [11.0]
    np.testing.assert_allclose(later.to_reading_units(later.normalised()), later.values,
                               rtol=1e-6)


def test_windows_of_keys_in_different_units_reach_the_model_alike():
    rng = np.random.default_rng(3)
    shape = np.sin(np.arange(200) / 5) + 0.1 * rng.normal(size=200)
    builder = WindowBuilder(length=8, profile_readings=64)
    small = push_many(builder, "bar", 1e-3 * shape + 0.5)
    large = push_many(builder, "pa", 1e5 * shape - 3e4)
    assert len(small) == len(large) == 200 - 64 + 1
    for a, b in zip(small, large, strict=True):
        np.testing.assert_allclose(a.normalised(), b.normalised(), atol=1e-3)


@pytest.mark.parametrize(("first", "scale"), [
    ([5.0, 5.0, 5.0, 5.0], 5.0),  # flat at first: its level's magnitude
    ([0.0, 0.0, 0.0, 0.0], 1.0),  # flat at zero: raw units
    ([0.0, 0.0, 0.0, 4.0], 1.2533),  # MAD 0 (mostly one value): the mean absolute deviation
])
def test_a_flat_start_does_not_collapse_the_profile(first, scale):
    builder = WindowBuilder(length=2, profile_readings=4)
    (window, *_) = push_many(builder, "k", first)
    np.testing.assert_allclose(window.scale, [scale], rtol=1e-4)


def test_adopted_profiles_start_a_key_at_once_and_never_replace_its_own():
    builder = WindowBuilder(length=2, profile_readings=50, max_keys=2)
    own = push_many(builder, "own", range(50))[0]
    saved = {"known": (np.array([10.0], np.float32), np.array([2.0], np.float32)),
             "own": (np.array([0.0], np.float32), np.array([1.0], np.float32))}
    builder.adopt_profiles(saved)
    (first, *_) = push_many(builder, "known", [12.0, 14.0])  # no profile readings needed
    np.testing.assert_array_equal(first.normalised()[:, 0], [1.0, 2.0])
    assert builder.key_profiles()["own"][0] == own.loc  # its own, not the saved one


def test_a_key_still_learning_its_profile_takes_the_saved_one_at_once():
    builder = WindowBuilder(length=2, profile_readings=50)
    assert push_many(builder, "k", [1.0, 2.0, 3.0]) == []  # learning
    builder.adopt_profiles({"k": (np.array([2.0], np.float32), np.array([0.5], np.float32))})
    (window,) = builder.push("k", 3, 4.0)
    np.testing.assert_array_equal(window.normalised()[:, 0], [2.0, 4.0])
    push_many(builder, "k", range(60), start_ts=4)  # never replaced by one of its own
    assert builder.key_profiles()["k"][0] == 2.0


def test_a_profile_outlives_its_keys_readings_and_the_remembered_ones_are_bounded():
    builder = WindowBuilder(length=2, profile_readings=10, max_keys=2)
    a = push_many(builder, "a", range(10))[0]
    push_many(builder, "b", range(10))
    push_many(builder, "c", range(3))  # evicts a's readings; a's profile stays
    assert "a" not in builder and set(builder.key_profiles()) == {"a", "b"}
    (back, *_) = push_many(builder, "a", [5.0, 6.0])  # a window at once, in a's units
    assert back.loc == a.loc and back.scale == a.scale
    push_many(builder, "c", range(10))  # c's profile: the least recently used one goes
    assert set(builder.key_profiles()) == {"a", "c"}


def test_a_profile_of_another_width_is_not_adopted():
    builder = WindowBuilder(length=2, profile_readings=3)
    builder.adopt_profiles({"k": (np.zeros(2, np.float32), np.ones(2, np.float32))})
    assert push_many(builder, "k", [1.0, 2.0]) == []  # scalar readings: learns its own
    (window,) = push_many(builder, "k", [3.0], start_ts=2)
    assert window.loc.shape == (1,)


def test_profiles_survive_json_and_bad_entries_are_skipped():
    profiles = {"a": (np.array([1.5, -2.0], np.float32), np.array([0.1, 3.0], np.float32))}
    back = profiles_from_json(profiles_to_json(profiles))
    assert set(back) == {"a"}
    np.testing.assert_array_equal(back["a"][0], profiles["a"][0])
    np.testing.assert_array_equal(back["a"][1], profiles["a"][1])
    bad = {"zero": [[1.0], [0.0]], "ragged": [[1.0, 2.0], [1.0]], "text": "x",
           "nan": [[float("nan")], [1.0]], "ok": [[1.0], [2.0]]}
    assert set(profiles_from_json(bad)) == {"ok"}
    assert profiles_from_json(None) == {} and profiles_from_json([1, 2]) == {}
