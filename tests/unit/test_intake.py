"""Decoding.take: every record leaves as a sample, a dead letter or an absorbed reading."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field

import numpy as np
import pytest
from PIL import Image

from streamae.intake import Decoding
from streamae.settings import InputSettings, WindowSettings


@dataclass
class Record:
    """The fields of a kafka-python ConsumerRecord that intake reads."""

    value: bytes | None
    key: bytes | None = None
    headers: list = field(default_factory=list)
    offset: int = 0
    topic: str = "in"
    partition: int = 0
    timestamp: int = 1_000


def records(*values: object, key: bytes | None = None, headers=()) -> list[Record]:
    out = []
    for n, value in enumerate(values):
        body = value if isinstance(value, bytes) else json.dumps(value).encode()
        out.append(Record(body, key, list(headers), offset=n, timestamp=1_000 + n))
    return out


def decoding(kind: str = "vector", **window: object) -> Decoding:
    """Windows in the reading's units unless a test asks for key profiles."""
    input_ = InputSettings(kind=kind, image_height=8, image_width=8)
    settings = WindowSettings(**{"length": 3, "profile_readings": 0, **window})
    return Decoding(input_, settings, max_bytes=4096)


def reasons(intake) -> list[str]:
    return [error.reason for _, error in intake.dead]


def accounted(intake) -> list[int]:
    """Offsets in the order they left, each exactly once (windows report their last one)."""
    out = [s.record.offset for s in intake.samples] + [r.offset for r, _ in intake.dead]
    return sorted(out + [r.offset for r in intake.absorbed])


def test_vectors_become_samples_with_key_ts_and_names():
    batch = records({"key": "pump-1", "ts": 5, "values": {"a": 1.0, "b": 2.0}},
                    {"values": {"a": 3.0, "b": 4.0}}, key=b"kafka-key")
    intake = decoding().take(batch)
    first, second = intake.samples
    assert (first.key, first.ts_ms, first.names) == ("pump-1", 5, ("a", "b"))
    assert (second.key, second.ts_ms) == ("kafka-key", batch[1].timestamp)  # fallbacks
    np.testing.assert_array_equal(second.values, [3.0, 4.0])
    assert first.record is batch[0] and first.window is None
    assert not intake.dead and not intake.absorbed


def test_bad_vectors_are_dead_with_reason_and_first_width_is_learnt():
    batch = records([1, 2, 3], b"{nope", [1, 2], {"values": ["x"]}, [4, 5, 6])
    intake = decoding().take(batch)
    assert [s.record.offset for s in intake.samples] == [0, 4]
    assert reasons(intake) == ["invalid_json", "wrong_dimension", "non_numeric"]
    assert accounted(intake) == [0, 1, 2, 3, 4]


def test_fix_shape_makes_other_widths_bad_input():
    dec = decoding()
    dec.fix_shape((4,))
    intake = dec.take(records([1, 2, 3], [1, 2, 3, 4]))
    assert reasons(intake) == ["wrong_dimension"]
    assert len(intake.samples) == 1


def test_windows_absorb_until_full_then_emit_every_reading():
    batch = records(*({"key": "k", "ts": t, "value": float(t)} for t in range(5)))
    intake = decoding("window").take(batch)
    assert [r.offset for r in intake.absorbed] == [0, 1]
    assert [s.record.offset for s in intake.samples] == [2, 3, 4]
    last = intake.samples[-1]
    assert last.values.shape == (3, 1) and last.window is not None
    np.testing.assert_array_equal(last.values[:, 0], [2.0, 3.0, 4.0])
    assert (last.key, last.ts_ms) == ("k", 4)


def test_profiled_windows_reach_the_model_in_the_keys_units_and_keep_the_readings():
    dec = decoding("window", profile_readings=4)
    batch = records(*({"key": "k", "ts": t, "value": 100.0 + 10 * (t % 2)} for t in range(6)))
    intake = dec.take(batch)
    assert [r.offset for r in intake.absorbed] == [0, 1, 2]  # the 4th reading fixes units
    first = intake.samples[0]
    assert first.record.offset == 3
    np.testing.assert_array_equal(first.window.values[:, 0], [110.0, 100.0, 110.0])
    loc, scale = first.window.loc[0], first.window.scale[0]  # median 105, window std 4.71
    assert loc == 105.0 and scale == pytest.approx(10 * np.sqrt(2) / 3, rel=1e-6)
    np.testing.assert_allclose(first.values[:, 0], (first.window.values[:, 0] - loc) / scale)


def test_window_keys_are_separate_and_fall_back_to_kafka_key_then_partition():
    dec = decoding("window", length=2)
    a = records(1.0, 2.0, key=b"a")
    anonymous = [Record(b"7.0", None, offset=10), Record(b"8.0", None, offset=11)]
    intake = dec.take([a[0], anonymous[0], a[1], anonymous[1]])
    assert [s.key for s in intake.samples] == ["a", "in/0"]
    np.testing.assert_array_equal(intake.samples[1].values[:, 0], [7.0, 8.0])


def test_late_reading_is_absorbed_and_counted_bad_reading_leaves_window_intact():
    dec = decoding("window")
    batch = records({"key": "k", "ts": 10, "value": 1.0}, {"key": "k", "ts": 5, "value": 9.0},
                    {"key": "k", "ts": 11, "values": [1.0, 2.0]},  # wrong width
                    {"key": "k", "ts": 12, "value": 2.0}, {"key": "k", "ts": 13, "value": 3.0})
    intake = dec.take(batch)
    assert dec.windows.late_dropped == 1
    assert [r.offset for r in intake.absorbed] == [0, 1, 3]
    assert reasons(intake) == ["wrong_dimension"]
    (sample,) = intake.samples
    np.testing.assert_array_equal(sample.values[:, 0], [1.0, 2.0, 3.0])
    assert accounted(intake) == [0, 1, 2, 3, 4]


def test_window_vectors_must_keep_the_first_width():
    intake = decoding("window").take(records([1.0, 2.0], [1.0, 2.0, 3.0], key=b"k"))
    assert reasons(intake) == ["wrong_dimension"]


def test_centred_features_lose_their_level_and_keep_their_shape_the_rest_untouched():
    dec = decoding("window", centred_features=["temp"])
    rows = [{"key": "k", "values": {"flow": 1.0 + t, "temp": 50.0 + 2 * t}} for t in range(4)]
    warm, hot = dec.take(records(*rows)).samples
    np.testing.assert_array_equal(warm.values[:, 1], [-2.0, 0.0, 2.0])  # 50, 52, 54 centred
    np.testing.assert_array_equal(hot.values[:, 1], warm.values[:, 1])  # 10 degrees warmer: same
    np.testing.assert_array_equal(hot.values[:, 0], [2.0, 3.0, 4.0])  # flow keeps its level
    np.testing.assert_array_equal(hot.window.values[:, 1], [52.0, 54.0, 56.0])  # raw kept


def test_a_reading_without_a_centred_feature_is_dead_lettered_and_leaves_the_window_intact():
    dec = decoding("window", centred_features=["temp"])
    batch = records({"key": "k", "values": [9.0, 9.0]},  # no names known yet: no temp
                    {"key": "k", "values": {"flow": 1.0, "temp": 5.0}},
                    {"key": "k", "values": {"flow": 2.0, "temp": 6.0}},
                    {"key": "k", "values": {"flow": 3.0, "temp": 7.0}})
    intake = dec.take(batch)
    assert reasons(intake) == ["missing_feature"]
    assert "unnamed" in intake.dead[0][1].detail
    (sample,) = intake.samples
    np.testing.assert_array_equal(sample.values[:, 0], [1.0, 2.0, 3.0])
    assert accounted(intake) == [0, 1, 2, 3]
    other = decoding("window", centred_features=["pressure"]).take(batch[1:2])
    assert reasons(other) == ["missing_feature"] and "pressure" in other.dead[0][1].detail


def test_eviction_counts_keys_beyond_max_keys():
    dec = decoding("window", max_keys=2)
    dec.take(records(*({"key": f"k{n}", "value": 1.0} for n in range(5))))
    assert dec.windows.evicted == 3 and len(dec.windows) == 2


def png(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG")
    return out.getvalue()


def test_images_become_chw_samples_and_corrupt_ones_are_dead():
    image = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    header = [("content-type", b"image/png")]
    batch = [Record(png(image), b"cam", header, offset=0),
             Record(b"\x89PNG\r\n\x1a\nbroken", b"cam", header, offset=1),
             Record(png(np.zeros((4, 4), np.uint8)), b"cam", header, offset=2)]  # resized
    intake = decoding("image").take(batch)
    assert [s.values.shape for s in intake.samples] == [(1, 8, 8), (1, 8, 8)]
    np.testing.assert_allclose(intake.samples[0].values[0], image / 255.0, atol=1e-6)
    assert intake.samples[0].key == "cam"
    assert reasons(intake) == ["bad_image"]


@pytest.mark.parametrize("kind", ["vector", "window", "image"])
def test_empty_and_oversized_values_are_dead(kind):
    intake = decoding(kind).take([Record(None), Record(b"[" + b"1," * 5000 + b"1]", offset=1)])
    assert reasons(intake) == ["empty", "oversized"]


@pytest.mark.parametrize("pixels", [[[]], [[[]]], [[], []]])
def test_empty_pixel_arrays_are_dead_and_the_rest_of_the_batch_goes_on(pixels):
    good = {"pixels": np.full((8, 8), 0.5).tolist()}
    batch = records(good, {"pixels": pixels}, good)
    intake = decoding("image").take(batch)
    assert [s.record.offset for s in intake.samples] == [0, 2]
    assert reasons(intake) == ["missing_values"]


class Exploding:
    """A decoder with a bug: raises something that is not a DecodeError for one value."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def decode(self, value, headers, key):
        if value == b'"boom"':
            raise ZeroDivisionError("a bug, not bad input")
        return self.inner.decode(value, headers, key)


@pytest.mark.parametrize("kind", ["vector", "window"])
def test_any_exception_dead_letters_that_record_only(kind):
    taker = decoding(kind)
    taker.decoder = Exploding(taker.decoder)
    batch = records([1.0, 2.0], "boom", [3.0, 4.0], [5.0, 6.0])
    intake = taker.take(batch)
    assert [(r.offset, type(e).__name__) for r, e in intake.dead] == [(1, "ZeroDivisionError")]
    assert accounted(intake) == [0, 1, 2, 3]


def test_a_model_trained_in_reading_units_turns_key_profiles_off():
    """Upgrading over a checkpoint from before key profiles (or made with them off) must
    not hand its model windows in other units than it learnt."""
    dec = decoding("window", profile_readings=50)
    dec.follow_model("reading", {})
    intake = dec.take(records(*({"key": "k", "ts": t, "value": 100.0 + t} for t in range(3))))
    (sample,) = intake.samples
    np.testing.assert_array_equal(sample.values[:, 0], [100.0, 101.0, 102.0])
    assert dec.key_profiles() is None  # and the next versions say so


def test_a_model_trained_in_key_units_brings_its_keys_profiles_even_when_they_are_off():
    dec = decoding("window")  # profile_readings 0
    saved = {"k": (np.array([100.0], np.float32), np.array([2.0], np.float32))}
    dec.follow_model("key", saved)
    intake = dec.take(records(*({"key": "k", "ts": t, "value": 100.0 + t} for t in range(3))))
    (sample,) = intake.samples  # a known key: its first window after `length` readings
    np.testing.assert_array_equal(sample.values[:, 0], [0.0, 0.5, 1.0])
    assert set(dec.key_profiles()) == {"k"}
    dec.follow_model(None, {})  # a model built in this process changes nothing
    assert set(dec.key_profiles()) == {"k"}
