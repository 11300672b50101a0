"""SKAB (Skoltech Anomaly Benchmark) as the daemon sees it: files, protocol, metrics, replay.

Data-set code, so it lives under ``benchmarks/`` (imported as ``skab_data`` by the scripts
here, and by tests through ``tests.conftest.load_script``); the package offers the generic
parts: ``streamae.replay``, ``streamae.backtest`` and its ``evaluation`` metrics.

The data is GPL-3.0 and never part of the project: it is read from ``$STREAMAE_SKAB_DIR``
or ``../shared/datasets/skab`` beside the repository. Per the published leaderboard each
labelled file is one experiment: fit on its first ``FIT_ROWS`` rows, score the rest in
order; rows are pooled over files into one point-wise confusion matrix (no point
adjustment).

For the daemon a file is a stream of JSON vector messages, one per row, in timestamp order
on one key; ``STREAMAE_INPUT__KIND=window`` turns them into sliding windows and a window
is reported under the row that completed it. ``warmup_windows`` is the number of windows
the first ``FIT_ROWS`` rows make, so the cold start trains on exactly those. A row's
verdict is that of the newest window ending at or before it (with stride 1, its own).

:func:`replay` runs one file through ``streamae backtest``'s engine
(``streamae.backtest.engine.run``: the daemon's decoding, windows, model and threshold via
``streamae.replay``, optionally the ``Retrainer``), for tuning; ``benchmarks/skab.py``
streams the same files through the real daemon and broker.
Numpy only: no scikit-learn in the package.
"""

from __future__ import annotations

import contextlib
import csv
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from streamae.backtest.engine import run
from streamae.backtest.evaluation import Confusion
from streamae.backtest.recording import Recording
from streamae.replay import row_message
from streamae.settings import Settings, WindowSettings, load_settings
from streamae.windows import windows_in

FIT_ROWS = 400
SENSORS = ("Accelerometer1RMS", "Accelerometer2RMS", "Current", "Pressure", "Temperature",
           "Thermocouple", "Voltage", "Volume Flow RateRMS")
GROUPS = ("valve1", "valve2", "other")
DIR_ENV = "STREAMAE_SKAB_DIR"

# The published outlier-detection leaderboard (SKAB README, commit b2c0d46): F1, FAR %, MAR %.
PUBLISHED = (
    ("Conv-AE", 0.78, 13.55, 28.02),
    ("MSET", 0.78, 39.73, 14.13),
    ("T-squared+Q (PCA)", 0.76, 26.62, 24.92),
    ("LSTM-AE", 0.74, 29.96, 25.92),
    ("T-squared", 0.66, 19.21, 42.60),
    ("LSTM-VAE", 0.56, 9.13, 55.03),
    ("Vanilla AE", 0.39, 2.59, 75.15),
    ("Isolation forest", 0.29, 2.56, 82.89),
)


# -- the files -------------------------------------------------------------------------
@dataclass(frozen=True)
class SkabFile:
    name: str  # e.g. "valve1/0.csv", also the stream's key
    ts_ms: np.ndarray  # (N,) int64 epoch ms (the datetime column read as UTC)
    values: np.ndarray  # (N, 8) float32, SENSORS order
    labels: np.ndarray  # (N,) bool, the `anomaly` column

    def messages(self) -> list[bytes]:
        """One JSON vector message per row: ``{"key", "ts", "values": {sensor: value}}``."""
        return [row_message(self.name, int(ts), row, SENSORS)
                for ts, row in zip(self.ts_ms, self.values, strict=True)]

    def recording(self) -> Recording:
        """The file as ``streamae backtest`` reads it."""
        return Recording(self.values, SENSORS, [self.name] * len(self.ts_ms),
                         [int(t) for t in self.ts_ms], self.ts_ms, self.labels, self.name)


def data_dir(repo_root: Path | None = None) -> Path | None:
    """``$STREAMAE_SKAB_DIR``, else ``<repo>/../shared/datasets/skab``; None when absent."""
    root = repo_root or Path(__file__).resolve().parents[1]
    candidate = Path(os.environ.get(DIR_ENV) or root.parent / "shared/datasets/skab")
    return candidate if (candidate / "valve1").is_dir() else None


def labelled_files(directory: Path) -> list[str]:
    """The labelled experiments (34 in SKAB), relative names in a stable order."""
    names = [f"{group}/{p.name}" for group in GROUPS for p in (directory / group).glob("*.csv")]
    return sorted(names, key=lambda n: (GROUPS.index(n.split("/")[0]), int(Path(n).stem)))


def load(directory: Path, name: str) -> SkabFile:
    """Read one semicolon-separated labelled file."""
    with open(directory / name, newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter=";"))
    ts = np.array([datetime.strptime(r["datetime"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
                   .timestamp() * 1000 for r in rows], dtype=np.int64)
    values = np.array([[float(r[s]) for s in SENSORS] for r in rows], dtype=np.float32)
    labels = np.array([float(r.get("anomaly") or 0) > 0.5 for r in rows], dtype=bool)
    return SkabFile(name, ts, values, labels)


def anomaly_free_pieces(directory: Path, rows: int = 1_100) -> list[SkabFile]:
    """SKAB's anomaly-free recording cut into consecutive pieces of ``rows`` rows, each an
    experiment of the labelled files' length, so the protocol can be run on normal data
    alone: every flag on them is a false alarm."""
    whole = load(directory, "anomaly-free/anomaly-free.csv")
    return [SkabFile(f"anomaly-free/{start}", whole.ts_ms[start:start + rows],
                     whole.values[start:start + rows], whole.labels[start:start + rows])
            for start in range(0, len(whole.labels) - rows + 1, rows)]


def warmup_windows(length: int, stride: int = 1, fit_rows: int = FIT_ROWS,
                   profile_readings: int = WindowSettings().profile_readings) -> int:
    """Windows that end before row ``fit_rows``: what the cold start must train on."""
    if fit_rows < max(length, profile_readings):
        raise ValueError(f"window length {length} (or a profile of {profile_readings} "
                         f"readings) exceeds the {fit_rows} training rows")
    return windows_in(fit_rows, length, stride, profile_readings)


# -- metrics (point-wise Confusion: streamae.backtest.evaluation) ----------------------
def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve: P(anomalous row scores above a normal one), ties half.

    Mann-Whitney U from mid-ranks; NaN when one class is absent.
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=bool).ravel()
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    # mid-ranks of tied runs (1-based)
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_s)) + 1]
    ends = np.r_[starts[1:], len(s)]
    mid = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(mid, ends - starts)
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


@dataclass
class FileResult:
    """What the daemon said about one file, per row (rows that no window ended on carry
    the previous window's verdict; rows before the first window are NaN / False)."""

    name: str
    labels: np.ndarray  # (N,) bool
    scores: np.ndarray  # (N,) float, NaN where no window ended yet
    flags: np.ndarray  # (N,) bool
    retrains: list[str] = field(default_factory=list)  # retrainer outcomes, oldest first


@dataclass
class Figure:
    """One row of the table: pooled confusion and ROC AUC over the evaluated rows."""

    name: str
    confusion: Confusion
    auc: float
    files: int = 0
    retrains: int = 0
    promoted: int = 0


def evaluate(name: str, results: Sequence[FileResult], fit_rows: int = FIT_ROWS) -> Figure:
    """Pool rows ``fit_rows`` onwards of every file; unscored rows count as not flagged
    (and lowest score), which cannot happen when warm-up ends before ``fit_rows``."""
    confusion = Confusion()
    scores, labels = [], []
    for result in results:
        flags, y = result.flags[fit_rows:], result.labels[fit_rows:]
        confusion.add(flags, y)
        s = result.scores[fit_rows:]
        scores.append(np.where(np.isfinite(s), s, -np.inf))
        labels.append(y)
    auc = roc_auc(np.concatenate(scores), np.concatenate(labels)) if results else float("nan")
    retrains = [o for r in results for o in r.retrains]
    return Figure(name, confusion, auc, len(results), len(retrains), retrains.count("promoted"))


def baselines(files: Sequence[SkabFile], fit_rows: int = FIT_ROWS) -> list[Figure]:
    """Always-alarm and never-alarm over the same rows (their AUC is 0.5 by definition)."""
    out = []
    for name, flag in (("always alarm", True), ("never alarm", False)):
        confusion = Confusion()
        for f in files:
            y = f.labels[fit_rows:]
            confusion.add(np.full(len(y), flag), y)
        out.append(Figure(name, confusion, 0.5, len(files)))
    return out


def table(figures: Sequence[Figure], published: bool = True) -> str:
    """One markdown table: our figures, the baselines, then the published rows."""
    lines = ["| detector | F1 | FAR % | MAR % | ROC AUC | files | retrains (promoted) |",
             "|---|---|---|---|---|---|---|"]
    for f in figures:
        c = f.confusion
        auc = "n/a" if not np.isfinite(f.auc) else f"{f.auc:.3f}"
        retrains = f"{f.retrains} ({f.promoted})" if f.retrains else "-"
        lines.append(f"| {f.name} | {c.f1:.3f} | {c.far:.2f} | {c.mar:.2f} | {auc} | "
                     f"{f.files} | {retrains} |")
    if published:
        for name, f1, far, mar in PUBLISHED:
            lines.append(f"| published: {name} | {f1:.2f} | {far:.2f} | {mar:.2f} | - | 34 | - |")
    return "\n".join(lines)


# -- settings from the environment ----------------------------------------------------
@contextlib.contextmanager
def environment(env: dict[str, str]) -> Iterator[None]:
    """``os.environ`` with ``env`` applied (and every other STREAMAE_* removed) for a block,
    so ``Settings()`` reads exactly the configuration the harness names."""
    saved = dict(os.environ)
    try:
        for name in [n for n in os.environ if n.startswith("STREAMAE_") and n != DIR_ENV]:
            del os.environ[name]
        os.environ.update(env)
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def settings_from_env(env: dict[str, str]) -> Settings:
    with environment(env):
        return load_settings()


# -- the in-process replay -------------------------------------------------------------
def replay(file: SkabFile, settings: Settings, retrain: bool = False) -> FileResult:
    """One file through ``streamae backtest``'s engine, no broker: the first
    ``settings.warmup_size`` windows train the model, every window is scored."""
    result = run(file.recording(), settings, retrain=retrain, rates=())
    verdicts = result.keys[0]
    return FileResult(file.name, file.labels, verdicts.scores, verdicts.flags,
                      result.replayed.retrains)
