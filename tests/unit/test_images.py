"""Image decoding: every input form, channel conversion, resizing and refusals."""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from streamae.exceptions import DecodeError
from streamae.images import ImageDecoder


def gradient(height: int = 8, width: int = 8) -> np.ndarray:
    """A uint8 (H, W) image with distinct values."""
    return (np.arange(height * width, dtype=np.uint8) * 3).reshape(height, width)


def encode(array: np.ndarray, fmt: str = "PNG") -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format=fmt)
    return out.getvalue()


def ctype(value: str) -> list[tuple[str, bytes]]:
    return [("content-type", value.encode())]


def reason_of(decoder: ImageDecoder, value: bytes, headers=()) -> str:
    with pytest.raises(DecodeError) as info:
        decoder.decode(value, headers)
    return info.value.reason


def test_png_grayscale_exact():
    image = gradient()
    reading = ImageDecoder(8, 8, 1).decode(encode(image), ctype("image/png"), key=b"cam")
    assert reading.values.shape == (1, 8, 8)
    assert reading.values.dtype == np.float32
    np.testing.assert_allclose(reading.values[0], image / 255.0, atol=1e-6)
    assert reading.key == "cam"


def test_png_sniffed_without_content_type():
    reading = ImageDecoder(8, 8, 1).decode(encode(gradient()))
    assert reading.values.shape == (1, 8, 8)


def test_jpeg_rgb():
    rgb = np.stack([gradient(), 255 - gradient(), np.full((8, 8), 128, np.uint8)], axis=-1)
    reading = ImageDecoder(8, 8, 3).decode(encode(rgb, "JPEG"), ctype("image/jpeg"))
    assert reading.values.shape == (3, 8, 8)
    np.testing.assert_allclose(reading.values, rgb.transpose(2, 0, 1) / 255.0, atol=0.12)


def test_grayscale_to_rgb_and_rgb_to_grayscale():
    gray = ImageDecoder(8, 8, 3).decode(encode(gradient()), ctype("image/png")).values
    assert gray.shape == (3, 8, 8)
    np.testing.assert_array_equal(gray[0], gray[2])
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 1] = 200
    luma = ImageDecoder(8, 8, 1).decode(encode(rgb), ctype("image/png")).values
    np.testing.assert_allclose(luma, 0.587 * 200 / 255, atol=0.01)


def test_base64_json_with_key_and_ts():
    body = {"key": "cam-1", "ts": 1234, "image": base64.b64encode(encode(gradient())).decode()}
    reading = ImageDecoder(8, 8, 1).decode(json.dumps(body).encode())
    assert (reading.key, reading.ts_ms) == ("cam-1", 1234)
    np.testing.assert_allclose(reading.values[0], gradient() / 255.0, atol=1e-6)
    data_url = "data:image/png;base64," + body["image"]
    assert ImageDecoder(8, 8, 1).decode(json.dumps({"image": data_url}).encode()).key is None


@pytest.mark.parametrize(
    ("pixels", "scale"),
    [
        (gradient(4, 4).tolist(), 255.0),  # 0-255 integers
        ((gradient(4, 4) / 255.0).tolist(), 1.0),  # already in [0, 1]
    ],
)
def test_pixels_json(pixels, scale):
    reading = ImageDecoder(4, 4, 1).decode(json.dumps({"pixels": pixels}).encode())
    np.testing.assert_allclose(reading.values[0], np.asarray(pixels) / scale, atol=1e-6)


@pytest.mark.parametrize("shape", ["4,4", "1,4,4", "4,4,1", "3,4,4", "4,4,3"])
def test_raw_uint8_layouts(shape):
    dims = tuple(int(d) for d in shape.split(","))
    data = (np.arange(np.prod(dims)) % 256).astype(np.uint8).reshape(dims)
    headers = [*ctype("application/x-raw-uint8"), ("shape", shape.encode())]
    values = ImageDecoder(4, 4, 3).decode(data.tobytes(), headers).values
    assert values.shape == (3, 4, 4)
    if dims[-1] == 3:
        np.testing.assert_allclose(values, data.transpose(2, 0, 1) / 255.0, atol=1e-6)
    elif dims[0] == 3:
        np.testing.assert_allclose(values, data / 255.0, atol=1e-6)


def test_raw_float32():
    data = np.linspace(0, 1, 3 * 4 * 4, dtype="<f4").reshape(3, 4, 4)
    headers = [*ctype("application/x-raw-float32"), ("shape", b"3,4,4"), ("ts", b"77")]
    reading = ImageDecoder(4, 4, 3).decode(data.tobytes(), headers, key=b"k")
    np.testing.assert_allclose(reading.values, data, atol=1e-7)
    assert (reading.key, reading.ts_ms) == ("k", 77)


def test_resize_on_and_off():
    big = encode(gradient(16, 12))
    resized = ImageDecoder(8, 8, 1, resize=True).decode(big, ctype("image/png")).values
    assert resized.shape == (1, 8, 8)
    assert resized.min() >= 0.0 and resized.max() <= 1.0
    assert reason_of(ImageDecoder(8, 8, 1, resize=False), big, ctype("image/png")) == (
        "wrong_image_size"
    )
    raw = [*ctype("application/x-raw-uint8"), ("shape", b"16,12")]
    payload = gradient(16, 12).tobytes()
    assert ImageDecoder(8, 8, 1).decode(payload, raw).values.shape == (1, 8, 8)
    assert reason_of(ImageDecoder(8, 8, 1, resize=False), payload, raw) == "wrong_image_size"


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims a huge size but whose data is tiny."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 16)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("decoder", "payload"),
    [
        (ImageDecoder(8, 8, 1), png_claiming(100_000, 100_000)),  # Pillow's own bomb error
        (ImageDecoder(8, 8, 1, max_pixels=1000), png_claiming(2000, 2000)),  # our limit
        (ImageDecoder(8, 8, 1, max_pixels=1000), encode(gradient(40, 40))),
    ],
)
def test_decompression_bomb_guard(decoder, payload):
    assert reason_of(decoder, payload, ctype("image/png")) == "bad_image"


@pytest.mark.parametrize(
    ("value", "headers", "reason"),
    [
        (b"\x89PNG\r\n\x1a\nnot really", ctype("image/png"), "bad_image"),
        (encode(gradient())[:40], ctype("image/png"), "bad_image"),  # truncated
        (b"GIF89a....", ctype("image/png"), "bad_image"),
        (json.dumps({"image": "@@not base64@@"}).encode(), (), "bad_image"),
        (json.dumps({"image": base64.b64encode(b"junk").decode()}).encode(), (), "bad_image"),
        (json.dumps({"pixels": [[1, 2], [3]]}).encode(), (), "bad_image"),
        (json.dumps({"pixels": [[-1, 2], [3, 4]]}).encode(), (), "bad_image"),
        (json.dumps({"pixels": [[1, 2, 3, 4]]}).encode(), (), "wrong_image_size"),
        (json.dumps({"pixels": [[1, "a"], [3, 4]]}).encode(), (), "non_numeric"),
        (json.dumps({"key": "k"}).encode(), (), "missing_values"),
        (b"{oops", (), "invalid_json"),
        (b"", (), "empty"),
        (b"x" * 5000, (), "oversized"),
        (b"\x00" * 10, [*ctype("application/x-raw-uint8"), ("shape", b"4,4")], "bad_binary"),
        (b"\x00" * 16, ctype("application/x-raw-uint8"), "bad_binary"),
        (b"\x00" * 16, [*ctype("application/x-raw-uint8"), ("shape", b"a,b")], "bad_binary"),
        (
            np.full(16, np.nan, "<f4").tobytes(),
            [*ctype("application/x-raw-float32"), ("shape", b"4,4")],
            "non_finite",
        ),
        (b"abc", ctype("video/mp4"), "unsupported_content_type"),
    ],
)
def test_image_reasons(value, headers, reason):
    assert reason_of(ImageDecoder(2, 2, 1, resize=False, max_bytes=4096), value, headers) == reason


def test_constructor_validation():
    with pytest.raises(ValueError):
        ImageDecoder(8, 8, 2)
    assert ImageDecoder(8, 6, 3).shape == (3, 8, 6)
