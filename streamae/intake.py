"""From polled records to model-ready samples: decode, then (for window input) window.

Every record leaves here in exactly one of three ways: as the source of a sample, as a
dead letter with its error (a ``DecodeError`` with a reason, or any other exception,
dead-lettered as ``unexpected`` under its class name), or absorbed (a reading held as
context in a window that is not complete yet). The daemon marks absorbed records done at
once.

Samples travel as a columnar :class:`Batch` (one float32 array, records, keys and
timestamps beside it); a :class:`Sample` is built only where one row is looked at alone
(an anomaly's explanation). Plain vectors are decoded a poll at a time
(:mod:`streamae.columnar`); windows and images keep a per-record path.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streamae.columnar import decode_vectors
from streamae.images import ImageDecoder
from streamae.messages import Reading, VectorDecoder
from streamae.settings import InputSettings, WindowSettings
from streamae.windows import Centring, Profile, Window, WindowBuilder, WindowUnits

log = logging.getLogger(__name__)


@dataclass
class Sample:
    """One thing to score; ``record`` is the Kafka record it is reported under."""

    record: Any
    values: np.ndarray
    key: str | None
    ts_ms: int | None
    names: tuple[str, ...] | None = None
    window: Window | None = None


@dataclass
class Batch:
    """Samples as columns: row ``i`` is ``values[i]``, reported under ``records[i]``."""

    records: list[Any]
    values: np.ndarray  # (n, ...) float32
    keys: list[str | None]
    ts: list[int | None]  # event time (ms): the body's, else the record's timestamp
    names: list[tuple[str, ...] | None]
    windows: list[Window | None] | None = None

    def __len__(self) -> int:
        return len(self.records)

    def sample(self, i: int) -> Sample:
        window = self.windows[i] if self.windows is not None else None
        return Sample(self.records[i], self.values[i], self.keys[i], self.ts[i],
                      self.names[i], window)

    def samples(self) -> list[Sample]:
        return [self.sample(i) for i in range(len(self))]

    @classmethod
    def empty(cls) -> Batch:
        return cls([], np.zeros((0, 0), np.float32), [], [], [])

    @classmethod
    def of(cls, samples: Sequence[Sample]) -> Batch:
        if not samples:
            return cls.empty()
        windows = [s.window for s in samples]
        return cls([s.record for s in samples],
                   np.stack([s.values for s in samples]).astype(np.float32, copy=False),
                   [s.key for s in samples], [s.ts_ms for s in samples],
                   [s.names for s in samples],
                   windows if any(w is not None for w in windows) else None)

    @classmethod
    def concat(cls, batches: Sequence[Batch]) -> Batch:
        batches = [b for b in batches if len(b)]
        if len(batches) <= 1:
            return batches[0] if batches else cls.empty()
        windowed = any(b.windows is not None for b in batches)
        return cls([r for b in batches for r in b.records],
                   np.concatenate([b.values for b in batches]),
                   [k for b in batches for k in b.keys], [t for b in batches for t in b.ts],
                   [n for b in batches for n in b.names],
                   [w for b in batches for w in (b.windows or [None] * len(b))]
                   if windowed else None)

    def split(self, at: int) -> tuple[Batch, Batch]:
        """The first ``at`` rows and the rest."""
        def part(rows: slice) -> Batch:
            return Batch(self.records[rows], self.values[rows], self.keys[rows],
                         self.ts[rows], self.names[rows],
                         None if self.windows is None else self.windows[rows])
        return part(slice(0, at)), part(slice(at, None))


@dataclass
class Intake:
    batch: Batch = field(default_factory=Batch.empty)
    dead: list[tuple[Any, Exception]] = field(default_factory=list)
    absorbed: list[Any] = field(default_factory=list)

    @property
    def samples(self) -> list[Sample]:
        """One :class:`Sample` per row (replay, tests; the daemon reads ``batch``)."""
        return self.batch.samples()


class Decoding:
    """Owns the decoder and, for window input, the per-key window builder."""

    def __init__(self, input: InputSettings, window: WindowSettings,
                 max_bytes: int) -> None:
        self.kind = input.kind
        if input.kind == "image":
            self.decoder: VectorDecoder | ImageDecoder = ImageDecoder(
                input.image_height, input.image_width, input.image_channels,
                resize=input.image_resize, max_bytes=max_bytes)
        else:
            self.decoder = VectorDecoder(features=input.features, dimension=input.dimension,
                                         max_bytes=max_bytes)
        self.windows = (WindowBuilder(window.length, window.stride, window.max_keys,
                                      window.late_policy, window.profile_readings)
                        if input.kind == "window" else None)
        self.centring = Centring(window.centred_features)

    def key_profiles(self) -> dict[str, Profile] | None:
        """The window builder's key profiles; None when windows are not profiled (another
        input kind, or profiles off), so a model says which units it was trained in."""
        if self.windows is None or not self.windows.profile_readings:
            return None
        return self.windows.key_profiles()

    def follow_model(self, units: WindowUnits | None, profiles: dict[str, Profile]) -> None:
        """A loaded model's window units rule over the setting: a model trained on readings'
        own units (before key profiles, or with them off) keeps getting them, and one trained
        in key units gets its keys' saved profiles (see ``WindowBuilder.adopt_profiles``)."""
        windows = self.windows
        if windows is None or units is None:
            return
        if units == "reading" and windows.profile_readings:
            log.warning("event=key_profiles_off reason=model_trained_in_reading_units hint="
                        "a new cold start (no checkpoint) trains in key units")
            windows.set_profiling(0)
        elif units == "key" and not windows.profile_readings:
            readings = WindowSettings().profile_readings
            log.warning("event=key_profiles_on reason=model_trained_in_key_units "
                        "profile_readings=%d", readings)
            windows.set_profiling(readings)
        if units == "key":
            windows.adopt_profiles(profiles)

    def fix_shape(self, input_shape: Sequence[int]) -> None:
        """Once a model exists, inputs of another width are bad input, not a crash."""
        if isinstance(self.decoder, VectorDecoder):
            self.decoder.fix_dimension(int(input_shape[-1]))

    def _learn_width(self, reading: Reading) -> None:
        """The first good vector fixes the width until a model or setting says otherwise."""
        decoder = self.decoder
        if isinstance(decoder, VectorDecoder) and decoder.dimension is None:
            decoder.fix_dimension(int(reading.values.shape[-1]))

    def take(self, records: Sequence[Any]) -> Intake:
        if self.windows is None and isinstance(self.decoder, VectorDecoder):
            return self._take_vectors(records)
        out, samples = Intake(), []
        for record in records:
            try:
                reading = self.decoder.decode(record.value, record.headers or (), record.key)
                self._learn_width(reading)
                if self.windows is None:
                    samples.append(sample_of(record, reading))
                    continue
                centred = self.centring.columns(reading.names)
                windows = self.windows.push(window_key(record, reading), reading.ts_ms,
                                            reading.values)
            except Exception as error:  # one bad record never stops the batch
                out.dead.append((record, error))
                continue
            if not windows:
                out.absorbed.append(record)
            for built in windows:
                samples.append(Sample(record, Centring.apply(built.normalised(), centred),
                                      built.key, built.end_ts_ms, reading.names, built))
        out.batch = Batch.of(samples)
        return out

    def _take_vectors(self, records: Sequence[Any]) -> Intake:
        """A whole poll at once (see streamae.columnar)."""
        if not records:
            return Intake()
        columns = decode_vectors(self.decoder, [r.value for r in records],
                                 [r.headers for r in records], [r.key for r in records])
        kept = [records[i] for i in columns.rows]
        ts = [t if t is not None else r.timestamp for t, r in zip(columns.ts, kept,
                                                                   strict=True)]
        return Intake(Batch(kept, columns.values, columns.keys, ts, columns.names),
                      [(records[i], error) for i, error in columns.errors])


def sample_of(record: Any, reading: Reading) -> Sample:
    key = reading.key if reading.key is not None else decode_key(record.key)
    ts = reading.ts_ms if reading.ts_ms is not None else record.timestamp
    return Sample(record, reading.values, key, ts, reading.names)


def window_key(record: Any, reading: Reading) -> str:
    if reading.key is not None:
        return reading.key
    return decode_key(record.key) or f"{record.topic}/{record.partition}"


def decode_key(key: bytes | None) -> str | None:
    return None if key is None else key.decode("utf-8", errors="replace")
