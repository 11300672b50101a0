"""Decoding image messages to (C, H, W) float32 arrays in [0, 1].

Accepted inputs (:class:`ImageDecoder`):

* PNG/JPEG bytes, header ``content-type: image/png`` or ``image/jpeg`` (also sniffed by
  magic number when there is no content type);
* JSON ``{"key": .., "ts": .., "image": "<base64 PNG/JPEG>"}`` (a ``data:`` URL works too);
* JSON ``{"key": .., "ts": .., "pixels": [[...]]}``: nested lists shaped (H, W), (C, H, W)
  or (H, W, C); values above 1 are read as 0-255, so a 0/1 image must be sent as floats;
* raw bytes with ``content-type: application/x-raw-uint8`` (0-255) or
  ``application/x-raw-float32`` (little-endian, [0, 1] or 0-255) and header ``shape`` like
  ``28,28`` or ``3,28,28`` or ``28,28,3``.

Grey becomes RGB by repetition, RGB becomes grey by ITU-R 601-2 luma (as Pillow's "L");
an alpha channel is dropped. Another size is resized (bilinear) when ``resize`` is set,
otherwise the message fails with ``wrong_image_size``. Images whose header claims more than
``max_pixels`` are refused before any pixel is decompressed (decompression bombs).
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from streamae.exceptions import DecodeError
from streamae.messages import (
    BAD_BINARY,
    BAD_IMAGE,
    JSON_TYPES,
    MISSING_VALUES,
    NON_NUMERIC,
    UNSUPPORTED_CONTENT_TYPE,
    WRONG_IMAGE_SIZE,
    Reading,
    check_finite,
    check_size,
    content_type,
    header,
    parse_json,
    parse_key,
    parse_ts,
)

logger = logging.getLogger(__name__)

ENCODED_TYPES = frozenset({"image/png", "image/jpeg", "image/jpg"})
RAW_TYPES = {
    "application/x-raw-uint8": np.dtype("u1"),
    "application/x-raw-float32": np.dtype("<f4"),
}
_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")
_FORMATS = ("PNG", "JPEG")  # nothing else reaches Pillow's parsers
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_MAX_SHAPE_DIMS = 3


class ImageDecoder:
    """Decode image messages to a :class:`Reading` with values (C, H, W) float32 in [0, 1]."""

    def __init__(
        self,
        height: int,
        width: int,
        channels: int,
        resize: bool = True,
        max_bytes: int = 8 << 20,
        max_pixels: int = 16_000_000,
    ) -> None:
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        if height < 1 or width < 1:
            raise ValueError(f"image size must be positive, got {height}x{width}")
        self.height = height
        self.width = width
        self.channels = channels
        self.resize = resize
        self.max_bytes = max_bytes
        self.max_pixels = max_pixels

    @property
    def shape(self) -> tuple[int, int, int]:
        """The (C, H, W) shape of every decoded image."""
        return (self.channels, self.height, self.width)

    def decode(
        self,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]] = (),
        key: bytes | None = None,
    ) -> Reading:
        """Decode one message; raises DecodeError with a reason from messages.REASONS."""
        payload = check_size(value, self.max_bytes)
        ctype = content_type(headers)
        if ctype in ENCODED_TYPES or (ctype is None and payload.startswith(_MAGIC)):
            ts = parse_ts(header(headers, "ts"))
            return Reading(parse_key(None, key), ts, self._from_encoded(payload))
        if ctype in RAW_TYPES:
            ts = parse_ts(header(headers, "ts"))
            return Reading(parse_key(None, key), ts, self._from_raw(payload, ctype, headers))
        if ctype is None or ctype in JSON_TYPES:
            return self._from_json(parse_json(payload), key)
        raise DecodeError(UNSUPPORTED_CONTENT_TYPE, f"content-type {ctype[:80]!r}")

    # ------------------------------------------------------------ sources

    def _from_encoded(self, payload: bytes) -> np.ndarray:
        """PNG/JPEG via Pillow, refusing oversized headers before decompression."""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image = Image.open(io.BytesIO(payload), formats=_FORMATS)
                width, height = image.size
                if width * height > self.max_pixels:
                    raise DecodeError(
                        BAD_IMAGE, f"{width}x{height} exceeds {self.max_pixels} pixels"
                    )
                image = image.convert("L" if self.channels == 1 else "RGB")
        except DecodeError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise DecodeError(BAD_IMAGE, f"decompression bomb: {exc}"[:200]) from exc
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise DecodeError(BAD_IMAGE, f"cannot decode image: {exc}"[:200]) from exc
        if image.size != (self.width, self.height):
            if not self.resize:
                raise DecodeError(
                    WRONG_IMAGE_SIZE, f"{width}x{height} != {self.width}x{self.height}"
                )
            image = image.resize((self.width, self.height), Image.Resampling.BILINEAR)
        array = np.asarray(image, dtype=np.float32) / 255.0
        if array.ndim == 2:
            return array[None]
        return np.ascontiguousarray(array.transpose(2, 0, 1))

    def _from_raw(
        self, payload: bytes, ctype: str, headers: Sequence[tuple[str, bytes]]
    ) -> np.ndarray:
        """Raw uint8/float32 bytes laid out as the ``shape`` header says."""
        shape = _parse_shape(header(headers, "shape"))
        dtype = RAW_TYPES[ctype]
        expected = int(np.prod(shape)) * dtype.itemsize
        if len(payload) != expected:
            raise DecodeError(BAD_BINARY, f"{len(payload)} bytes != {expected} for shape {shape}")
        array = np.frombuffer(payload, dtype=dtype).reshape(shape)
        if dtype == np.uint8:
            return self._finish(array.astype(np.float32) / 255.0)
        return self._finish(_unit_range(array.astype(np.float32)))

    def _from_json(self, body: Any, kafka_key: bytes | None) -> Reading:
        """JSON with a base64 ``image`` or a nested ``pixels`` list."""
        if not isinstance(body, dict):
            raise DecodeError(MISSING_VALUES, f"body is a JSON {type(body).__name__}, not object")
        key = parse_key(body.get("key"), kafka_key)
        ts = parse_ts(body.get("ts"))
        if "image" in body:
            return Reading(key, ts, self._from_encoded(_b64(body["image"])))
        if "pixels" in body:
            return Reading(key, ts, self._finish(_unit_range(_pixels(body["pixels"]))))
        raise DecodeError(MISSING_VALUES, "body has neither 'image' nor 'pixels'")

    # ------------------------------------------------------------ layout

    def _finish(self, array: np.ndarray) -> np.ndarray:
        """(H,W)/(C,H,W)/(H,W,C) in [0, 1] -> (C, H, W) of the configured size and channels."""
        chw = _channels(_to_chw(array, (self.height, self.width)), self.channels)
        if chw.shape[1:] != (self.height, self.width):
            if not self.resize:
                raise DecodeError(
                    WRONG_IMAGE_SIZE,
                    f"{chw.shape[2]}x{chw.shape[1]} != {self.width}x{self.height}",
                )
            chw = self._resize(chw)
        return np.ascontiguousarray(chw, dtype=np.float32)

    def _resize(self, chw: np.ndarray) -> np.ndarray:
        """Bilinear resize of each channel with Pillow's float mode."""
        size = (self.width, self.height)
        planes = [
            np.asarray(Image.fromarray(plane).resize(size, Image.Resampling.BILINEAR))
            for plane in chw.astype(np.float32)
        ]
        return np.clip(np.stack(planes), 0.0, 1.0)


def _parse_shape(text: str | None) -> tuple[int, ...]:
    """``28,28`` / ``3x28x28`` / ``(28, 28, 3)`` -> a tuple of positive ints."""
    if not text:
        raise DecodeError(BAD_BINARY, "raw image without a 'shape' header")
    parts = text.strip("()[] ").replace("x", ",").split(",")
    try:
        shape = tuple(int(part) for part in parts if part.strip())
    except ValueError as exc:
        raise DecodeError(BAD_BINARY, f"bad shape header {text[:40]!r}") from exc
    if not 2 <= len(shape) <= _MAX_SHAPE_DIMS or min(shape) < 1:
        raise DecodeError(BAD_BINARY, f"bad shape header {text[:40]!r}")
    return shape


def _b64(value: Any) -> bytes:
    """Base64 text (optionally a ``data:image/...;base64,`` URL) to bytes."""
    if not isinstance(value, str) or not value:
        raise DecodeError(BAD_IMAGE, "'image' must be a non-empty base64 string")
    if value.startswith("data:"):
        value = value.partition(",")[2]
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise DecodeError(BAD_IMAGE, f"invalid base64: {exc}"[:200]) from exc


def _pixels(value: Any) -> np.ndarray:
    """A nested JSON list of numbers as a float32 array (rectangular, 2-D or 3-D)."""
    if not isinstance(value, list) or not value:
        raise DecodeError(MISSING_VALUES, "'pixels' must be a non-empty nested list")
    try:
        array = np.asarray(value, dtype=object)
    except ValueError as exc:  # ragged
        raise DecodeError(BAD_IMAGE, "'pixels' is not rectangular") from exc
    if array.ndim not in (2, 3):
        raise DecodeError(BAD_IMAGE, f"'pixels' has {array.ndim} dimensions; need 2 or 3")
    if array.size == 0:
        raise DecodeError(MISSING_VALUES, f"'pixels' shaped {array.shape} holds no value")
    flat = array.ravel()
    if any(isinstance(v, bool) or not isinstance(v, int | float) for v in flat):
        raise DecodeError(NON_NUMERIC, "'pixels' holds a value that is not a number")
    with np.errstate(over="ignore"):
        return check_finite(array.astype(np.float64).astype(np.float32))


def _unit_range(array: np.ndarray) -> np.ndarray:
    """Float pixels to [0, 1]: kept if already there, divided by 255 if within 0-255."""
    array = check_finite(array)
    low, high = float(array.min()), float(array.max())
    if low < 0.0 or high > 255.0:
        raise DecodeError(BAD_IMAGE, f"pixel values span [{low:g}, {high:g}]; need 0-1 or 0-255")
    return array / 255.0 if high > 1.0 else array


def _to_chw(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W) -> (1, H, W); 3-D arrays are read as (C, H, W) or (H, W, C).

    A layout whose spatial size equals the target ``size`` wins; otherwise the axis that
    looks like channels (1 or 3, then 4 = RGBA) decides, the first axis on a tie.
    """
    if array.ndim == 2:
        return array[None]
    if array.ndim != 3:
        raise DecodeError(BAD_IMAGE, f"array has {array.ndim} dimensions; need 2 or 3")
    first, last = array.shape[0], array.shape[-1]
    channel_like = (1, 3, 4)
    if first in channel_like and array.shape[1:] == size:
        return array
    if last in channel_like and array.shape[:2] == size:
        return array.transpose(2, 0, 1)
    if first in (1, 3) or (first == 4 and last not in channel_like):
        return array
    if last in channel_like:
        return array.transpose(2, 0, 1)
    raise DecodeError(BAD_IMAGE, f"cannot find 1, 3 or 4 channels in shape {array.shape}")


def _channels(chw: np.ndarray, channels: int) -> np.ndarray:
    """Drop alpha, then grey -> RGB by repetition or RGB -> grey by luma."""
    if chw.shape[0] == 4:
        chw = chw[:3]
    if chw.shape[0] == channels:
        return chw
    if channels == 3:
        return np.repeat(chw, 3, axis=0)
    return np.tensordot(_LUMA, chw, axes=1)[None]
