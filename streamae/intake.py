"""From polled records to model-ready samples: decode, then (for window input) window.

Every record leaves here in exactly one of three ways: as the source of a sample, as a
dead letter with its error (a ``DecodeError`` with a reason, or any other exception,
dead-lettered as ``unexpected`` under its class name), or absorbed (a reading held as
context in a window that is not complete yet). The daemon marks absorbed records done at
once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streamae.images import ImageDecoder
from streamae.messages import Reading, VectorDecoder
from streamae.settings import InputSettings, WindowSettings
from streamae.windows import Centring, Window, WindowBuilder


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
class Intake:
    samples: list[Sample] = field(default_factory=list)
    dead: list[tuple[Any, Exception]] = field(default_factory=list)
    absorbed: list[Any] = field(default_factory=list)


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
                                      window.late_policy)
                        if input.kind == "window" else None)
        self.centring = Centring(window.centred_features)

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
        out = Intake()
        for record in records:
            try:
                reading = self.decoder.decode(record.value, record.headers or (), record.key)
                self._learn_width(reading)
                if self.windows is None:
                    out.samples.append(sample_of(record, reading))
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
                out.samples.append(Sample(record, Centring.apply(built.values, centred),
                                          built.key, built.end_ts_ms, reading.names, built))
        return out


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
