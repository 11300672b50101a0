"""Saving and loading detectors: safetensors for arrays, JSON for the rest, never pickle.

One checkpoint is one self-describing safetensors blob: the tensors are the model weights
(``model.*``), the scaler (``scaler.*``), the per-feature error statistics
(``error_stats.*``) and the validation scores; the header's ``__metadata__["streamae"]``
holds the JSON (kind, input shape, constructor arguments, sample error statistics,
threshold state, version, created time, caller metadata). The same blob is published on
the Kafka model topic.

On disk a version is ``model-NNNNNN.safetensors`` plus ``model-NNNNNN.json`` (the same
JSON and the blob's sha256). Both are written to a temporary file and renamed, JSON last,
so a version without its JSON (or with a wrong digest) was never complete and is ignored
or refused. Loading parses JSON and raw tensors only; it never executes code.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as load_arrays
from safetensors.numpy import save as save_arrays

from streamae.calibration import TailCalibration
from streamae.exceptions import CheckpointError, ModelError, ModelRejected
from streamae.models import KINDS, array_net
from streamae.models.arrays import as_arrays
from streamae.scaling import Scaler
from streamae.scoring import Detector, ErrorStats, parts_from_state

logger = logging.getLogger(__name__)

FORMAT = 2  # 2: calibrated scores; bump when the layout changes; older readers refuse newer formats
MAX_VALIDATION_SCORES = 20_000  # more add nothing to a threshold warm-up
T = TypeVar("T")
_NAME = re.compile(r"^model-(\d{6,})\.(safetensors|json)$")


@dataclass
class Checkpoint:
    """A loaded version: the detector and the state saved beside it."""

    version: int
    detector: Detector
    threshold_state: dict
    metadata: dict


def _jsonable(value: object) -> object:
    """json.dumps fallback for numpy values in threshold state or metadata."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _subsample(scores: np.ndarray) -> np.ndarray:
    """At most MAX_VALIDATION_SCORES, evenly spaced so order and spread survive."""
    if len(scores) <= MAX_VALIDATION_SCORES:
        return scores
    keep = np.linspace(0, len(scores) - 1, MAX_VALIDATION_SCORES).round().astype(int)
    return scores[keep]


def _tensors(detector: Detector) -> dict[str, np.ndarray]:
    """Every array of a detector, contiguous float32, by prefixed name."""
    tensors = {f"model.{k}": v for k, v in as_arrays(detector.model).state_dict().items()}
    for name, array in detector.scaler.state().items():
        tensors[f"scaler.{name}"] = array
    stats = detector.error_stats
    for name in ("feature_centre", "feature_scale", "feature_mean"):
        tensors[f"error_stats.{name}"] = getattr(stats, name)
    scores = np.asarray(detector.validation_scores, np.float32).ravel()
    tensors["validation_scores"] = _subsample(scores)
    return {k: np.ascontiguousarray(v, np.float32) for k, v in tensors.items()}


def _header(detector: Detector, threshold_state: dict, metadata: dict, version: int) -> dict:
    """The JSON half of a checkpoint."""
    model = detector.model
    stats = detector.error_stats
    return {
        "format": FORMAT,
        "version": int(version),
        "created": time.time(),
        "kind": model.kind,
        "input_shape": list(model.input_shape),
        "constructor_args": model.constructor_args(),
        "error_stats": {"method": stats.method, "calibration": stats.calibration.state(),
                        "parts": (None if stats.parts is None
                                  else [part.state() for part in stats.parts]),
                        "spread_typical": (None if stats.spread_typical is None
                                           else stats.spread_typical.tolist()),
                        "spread_low": (None if stats.spread_low is None
                                       else stats.spread_low.tolist()),
                        "mode_tail": (None if stats.mode_tail is None
                                      else stats.mode_tail.state())},
        "train_loss": float(detector.train_loss),
        "val_loss": float(detector.val_loss),
        "epochs_run": int(detector.epochs_run),
        "threshold_state": threshold_state,
        "metadata": metadata,
    }


def checkpoint_to_bytes(
    detector: Detector, threshold_state: dict, metadata: dict, version: int
) -> bytes:
    """One self-describing safetensors blob (JSON in the header's metadata)."""
    header = _header(detector, threshold_state, metadata, version)
    try:
        text = json.dumps(header, default=_jsonable, allow_nan=True)
    except TypeError as exc:
        raise CheckpointError(f"threshold state or metadata is not JSON-able: {exc}") from exc
    return save_arrays(_tensors(detector), metadata={"streamae": text})


def _read_header(data: bytes) -> dict:
    """The streamae JSON from a safetensors blob's header, parsed without loading tensors."""
    if len(data) < 8:
        raise CheckpointError("checkpoint blob is truncated")
    size = int.from_bytes(data[:8], "little")
    if size > len(data) - 8:
        raise CheckpointError("checkpoint header is longer than the blob")
    try:
        raw = json.loads(data[8 : 8 + size])
        return json.loads(raw["__metadata__"]["streamae"])
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"checkpoint header is not a streamae header: {exc}") from exc


def _as_array(tensors: dict[str, np.ndarray], name: str) -> np.ndarray:
    """A named tensor, or CheckpointError when absent."""
    if name not in tensors:
        raise CheckpointError(f"checkpoint lacks tensor {name!r}")
    return tensors[name]


def _check_finite(tensors: dict[str, np.ndarray]) -> None:
    """A NaN or infinite weight (or scaler, or statistic) makes every score meaningless."""
    for name, tensor in tensors.items():
        if np.issubdtype(tensor.dtype, np.floating) and not np.isfinite(tensor).all():
            raise ModelRejected("non_finite", f"tensor {name!r} holds NaN or infinite values")


def _constructor_args(header: dict) -> dict:
    """The header's constructor arguments; a conv checkpoint written before conv models
    could downsample by strided convs was built with max-pooling."""
    args = dict(header["constructor_args"])
    if header["kind"] in ("conv", "conv1d"):
        args.setdefault("downsample", "pool")
    return args


def _build(header: dict, tensors: dict[str, np.ndarray]) -> Checkpoint:
    """Rebuild a detector from a parsed header and its tensors; every failure is ours."""
    if header.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint format {header.get('format')!r} != {FORMAT}")
    try:
        shape = tuple(int(s) for s in header["input_shape"])
        if header["kind"] not in KINDS:
            raise ModelError(f"unknown model kind {header['kind']!r}")
        weights = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
        model = array_net(header["kind"], shape, _constructor_args(header), weights)
        _check_finite(tensors)
        scaler = Scaler.from_state(
            {n[7:]: t for n, t in tensors.items() if n.startswith("scaler.")})
        sample_stats = header["error_stats"]
        parts, spread_typical, spread_low = parts_from_state(sample_stats)
        stats = ErrorStats(
            method=sample_stats["method"],
            calibration=TailCalibration.from_state(sample_stats["calibration"]),
            feature_centre=_as_array(tensors, "error_stats.feature_centre"),
            feature_scale=_as_array(tensors, "error_stats.feature_scale"),
            feature_mean=_as_array(tensors, "error_stats.feature_mean"),
            parts=parts,
            spread_typical=spread_typical,
            spread_low=spread_low,
            modes=scaler.modes if sample_stats.get("mode_tail") is not None else None,
            mode_tail=(None if sample_stats.get("mode_tail") is None
                       else TailCalibration.from_state(sample_stats["mode_tail"])),
        )
        if any(a.shape != shape for a in (stats.feature_centre, stats.feature_scale,
                                          stats.feature_mean)) or (
                spread_typical is not None and spread_typical.shape != shape[-1:]):
            raise CheckpointError(f"error statistics do not match input shape {shape}")
        detector = Detector(
            model=model,
            scaler=scaler,
            error_stats=stats,
            train_loss=float(header["train_loss"]),
            val_loss=float(header["val_loss"]),
            validation_scores=_as_array(tensors, "validation_scores"),
            epochs_run=int(header["epochs_run"]),
        )
        return Checkpoint(
            int(header["version"]), detector, header["threshold_state"], header["metadata"]
        )
    except CheckpointError:
        raise
    except (ModelError, KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"checkpoint does not describe a valid model: {exc}") from exc


def checkpoint_from_bytes(data: bytes) -> Checkpoint:
    """Inverse of ``checkpoint_to_bytes``; CheckpointError on anything malformed."""
    header = _read_header(data)
    try:
        tensors = load_arrays(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"checkpoint tensors are corrupt: {exc}") from exc
    return _build(header, tensors)


# -- the directory of versions ---------------------------------------------------------------


def _paths(directory: Path, version: int) -> tuple[Path, Path]:
    """The (safetensors, json) pair of one version."""
    stem = f"model-{version:06d}"
    return directory / f"{stem}.safetensors", directory / f"{stem}.json"


def _scan(directory: Path) -> tuple[list[int], int]:
    """Complete versions (both files present), ascending, and the highest number seen."""
    if not directory.is_dir():
        return [], 0
    seen: dict[int, set[str]] = {}
    for path in directory.iterdir():
        match = _NAME.match(path.name)
        if match:
            seen.setdefault(int(match.group(1)), set()).add(match.group(2))
    complete = sorted(v for v, exts in seen.items() if exts == {"safetensors", "json"})
    return complete, max(seen, default=0)


def _write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary sibling, fsync, rename: readers see all of it or nothing."""
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_checkpoint(
    directory: Path, detector: Detector, *, threshold_state: dict, metadata: dict, keep: int = 5,
    protect: Iterable[int] = (),
) -> int:
    """Write the next version (max existing + 1), prune to the newest ``keep`` (never a
    ``protect``ed version: the retrainer's anchor); return it."""
    if keep < 1:
        raise CheckpointError(f"keep must be >= 1, got {keep}")
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        version = _scan(directory)[1] + 1
        blob = checkpoint_to_bytes(detector, threshold_state, metadata, version)
        header = _read_header(blob)
        header["sha256"] = hashlib.sha256(blob).hexdigest()
        weights_path, json_path = _paths(directory, version)
        _write_atomic(weights_path, blob)
        _write_atomic(json_path, json.dumps(header, indent=2).encode())
        _prune(directory, keep, frozenset(protect))
    except OSError as exc:
        raise CheckpointError(f"cannot write checkpoint to {directory}: {exc}") from exc
    logger.info(
        "checkpoint_saved directory=%s version=%d kind=%s", directory, version, detector.model.kind
    )
    return version


def _prune(directory: Path, keep: int, protect: frozenset[int] = frozenset()) -> None:
    """Delete every version file older than the newest ``keep`` complete versions, except
    the ``protect``ed versions."""
    complete, _ = _scan(directory)
    if len(complete) <= keep:
        return
    oldest_kept = complete[-keep]
    for path in directory.iterdir():
        match = _NAME.match(path.name)
        if match and int(match.group(1)) < oldest_kept and int(match.group(1)) not in protect:
            path.unlink(missing_ok=True)
            logger.debug("checkpoint_pruned path=%s", path)


def load_version(directory: Path, version: int) -> Checkpoint:
    """Load one complete version; CheckpointError when missing, corrupt or mismatched."""
    weights_path, json_path = _paths(Path(directory), version)
    try:
        header = json.loads(json_path.read_text())
        blob = weights_path.read_bytes()
    except FileNotFoundError as exc:
        raise CheckpointError(f"checkpoint version {version} not found in {directory}") from exc
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint version {version} unreadable: {exc}") from exc
    if not isinstance(header, dict) or header.get("sha256") != hashlib.sha256(blob).hexdigest():
        raise CheckpointError(f"checkpoint version {version}: weights do not match its JSON")
    checkpoint = checkpoint_from_bytes(blob)
    if checkpoint.version != version:
        raise CheckpointError(f"file version {version} holds version {checkpoint.version}")
    return checkpoint


def load_newest_intact(directory: Path,
                       on_reject: Callable[[int, CheckpointError], None] | None = None,
                       build: Callable[[Checkpoint], T] = lambda checkpoint: checkpoint,
                       ) -> T | None:
    """``build`` of the newest version that loads and builds, trying older ones when newer
    ones raise CheckpointError; ``on_reject`` hears of each version passed over. None when
    no version loads."""
    complete, _ = _scan(Path(directory))
    for version in reversed(complete):
        try:
            return build(load_version(directory, version))
        except CheckpointError as exc:
            if on_reject is not None:
                on_reject(version, exc)
    return None


def load_latest(directory: Path) -> Checkpoint | None:
    """The newest complete version, or None when there is none yet."""
    complete, _ = _scan(Path(directory))
    if not complete:
        return None
    return load_version(directory, complete[-1])
