"""What ``streamae encode`` and ``streamae sample`` read and write.

A trained autoencoder is also a compressor (the latent is a short code for each input), a
dimensionality reduction and a feature extractor; a trained VAE is a generator. These
helpers turn files into model-shaped arrays, arrays into files, and latent vectors into
records on the optional latent topic, so the CLI commands stay a few lines each.

Inputs: a CSV (vectors; for a window model, consecutive rows become sliding windows of the
model's length) or a ``.npy`` array shaped (N, *input_shape) (images, windows, anything).
Outputs: ``.npy`` keeps any shape; ``.csv`` flattens each item to one row.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from kafka.errors import KafkaError

from streamae.exceptions import InfrastructureError, StreamaeError
from streamae.kafka_io import build_producer
from streamae.messages import encode_json
from streamae.settings import KafkaSettings
from streamae.tables import read_table, write_table
from streamae.windows import key_profile

log = logging.getLogger(__name__)

LATENT_SCHEMA = "streamae.latent/v1"
FLUSH_TIMEOUT_S = 60.0


def load_inputs(path: Path, input_shape: Sequence[int], *, columns: list[str] | None = None,
                exclude: tuple[str, ...] = (), stride: int = 1,
                profile_readings: int = 0) -> np.ndarray:
    """Model-shaped float32 (N, *input_shape) from a ``.npy`` file or a CSV. A CSV's rows
    are one key: with ``profile_readings`` its windows are in the units its first rows fix,
    as the daemon's are (``streamae.windows``)."""
    shape = tuple(int(s) for s in input_shape)
    if path.suffix.lower() == ".npy":
        array = np.load(path, allow_pickle=False).astype(np.float32)
        if len(shape) == 3 and array.ndim == 3 and shape[0] == 1:
            array = array[:, None]  # (N, H, W) grey images
    else:
        rows = read_table(path, columns=columns, exclude=exclude).values
        if len(shape) == 2 and profile_readings:
            loc, scale = key_profile(rows[:profile_readings], shape[0])
            rows = (rows - loc) / scale
        array = windows_of(rows, shape[0], stride) if len(shape) == 2 else rows
    if array.shape[1:] != shape:
        raise StreamaeError(f"{path}: items shaped {array.shape[1:]}, the model takes {shape}")
    return array


def windows_of(rows: np.ndarray, length: int, stride: int = 1) -> np.ndarray:
    """Sliding windows (N, length, D) over consecutive rows (T, D), as the daemon builds
    them for one key: the first ends at row ``length - 1``, then one every ``stride``."""
    if len(rows) < length:
        raise StreamaeError(f"{len(rows)} rows are fewer than one window of {length}")
    view = np.lib.stride_tricks.sliding_window_view(rows, length, axis=0)  # (N, D, L)
    return np.ascontiguousarray(view[::stride].transpose(0, 2, 1), dtype=np.float32)


def write_array(path: Path, array: np.ndarray, names: Sequence[str] | None = None,
                prefix: str = "x") -> None:
    """``.npy`` keeps the shape; anything else is a CSV with one flattened item per row."""
    if path.suffix.lower() == ".npy":
        np.save(path, array)
        return
    flat = array.reshape(len(array), -1)
    if names is None or len(names) != flat.shape[1]:
        names = [f"{prefix}{i}" for i in range(flat.shape[1])]
    write_table(path, list(names), [[float(f"{v:.6g}") for v in row] for row in flat])


def latent_records(latents: np.ndarray, *, source: str, kind: str,
                   version: int) -> Iterator[dict]:
    """One JSON record per input row, in order."""
    for row, vector in enumerate(latents):
        yield {"schema": LATENT_SCHEMA, "source": source, "row": row, "model_kind": kind,
               "model_version": version, "latent": vector.tolist()}


def publish(kafka: KafkaSettings, topic: str, records: Iterator[dict]) -> int:
    """Send every record (key = row number) and wait for all acks; returns the count."""
    producer = build_producer(kafka)
    futures = []
    try:
        for record in records:
            futures.append(producer.send(topic, key=str(record["row"]).encode(),
                                         value=encode_json(record)))
        producer.flush(timeout=FLUSH_TIMEOUT_S)
    except KafkaError as exc:
        raise InfrastructureError(f"cannot publish latents to {topic}: {exc}") from exc
    finally:
        producer.close(timeout=10)
    failed = [f for f in futures if not f.succeeded()]
    if failed:
        raise InfrastructureError(f"{len(failed)} latent records to {topic} not acknowledged: "
                                  f"{failed[0].exception!r}")
    log.info("event=latents_published topic=%s records=%d", topic, len(futures))
    return len(futures)
