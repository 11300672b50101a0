"""One PNG per key: the signal, the score and threshold with alarms, labelled spans
shaded, incidents as bars. matplotlib is the optional ``report`` extra
(``pip install 'streamae[report]'``); :func:`available` says whether it is installed.

Figures are drawn on ``matplotlib.figure.Figure`` objects (no pyplot state, no GUI
backend), ``WIDTH`` x ``HEIGHT`` pixels each.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from streamae.backtest.engine import KeyVerdicts
from streamae.backtest.evaluation import runs
from streamae.backtest.recording import Recording

if TYPE_CHECKING:
    from matplotlib.axes import Axes

WIDTH, HEIGHT, DPI = 1200, 700, 100  # pixels of every PNG
MAX_SIGNALS = 8  # features drawn per key; the rest are named in the legend title
ALARM, LABEL, WARNING, CRITICAL = "#d62728", "#ffbf00", "#ff7f0e", "#d62728"
INSTALL_HINT = "pip install 'streamae[report]'"


def available() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def file_name(key: str) -> str:
    """A safe file name for a key's PNG."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in key).strip("._")
    return f"key-{safe or 'default'}.png"


def plot_key(path: Path, recording: Recording, verdicts: KeyVerdicts) -> Path:
    """Draw one key's rows from the end of the warm-up on; returns ``path``."""
    from matplotlib.figure import Figure

    rows = verdicts.rows[verdicts.first:]
    first = verdicts.first
    times = recording.ts_ms[rows].astype("datetime64[ms]")
    fig = Figure(figsize=(WIDTH / DPI, HEIGHT / DPI), dpi=DPI, layout="constrained")
    signal, score, bars = fig.subplots(3, 1, sharex=True, height_ratios=(3, 3, 1))
    _signals(signal, times, recording, rows)
    _scores(score, times, verdicts, first)
    _incidents(bars, verdicts)
    labels = None if recording.labels is None else recording.labels[rows]
    for ax in (signal, score, bars):
        _shade(ax, times, labels)
    fig.suptitle(f"{verdicts.key}: {verdicts.alarms} alarms, {len(verdicts.incidents)} "
                 f"incidents over {len(rows)} readings")
    fig.savefig(path, format="png")
    return path


def _signals(ax: Axes, times: np.ndarray, recording: Recording, rows: np.ndarray) -> None:
    values = recording.values[rows]
    names = recording.names or tuple(f"x{i}" for i in range(values.shape[1]))
    for i in range(min(MAX_SIGNALS, values.shape[1])):
        ax.plot(times, values[:, i], linewidth=0.8, label=names[i])
    more = values.shape[1] - MAX_SIGNALS
    ax.legend(loc="upper left", fontsize=7, ncol=4,
              title=f"+{more} more not drawn" if more > 0 else None)
    ax.set_ylabel("signal")


def _scores(ax: Axes, times: np.ndarray, verdicts: KeyVerdicts, first: int) -> None:
    scores = verdicts.scores[first:]
    ax.plot(times, scores, linewidth=0.8, color="#1f77b4", label="score")
    ax.step(times, verdicts.thresholds[first:], where="post", color="black",
            linestyle="--", linewidth=1.0, label="threshold")
    flagged = verdicts.flags[first:]
    ax.scatter(times[flagged], scores[flagged], s=8, color=ALARM, zorder=3, label="alarm")
    ax.legend(loc="upper left", fontsize=7, ncol=3)
    ax.set_ylabel("score (-log10 p)")


def _incidents(ax: Axes, verdicts: KeyVerdicts) -> None:
    for span in verdicts.incidents:
        start = np.datetime64(span.start_ms, "ms")
        width = np.timedelta64(max(span.end_ms - span.start_ms, 1), "ms")
        ax.barh(0, width, left=start, height=0.6, align="center",
                color=CRITICAL if span.severity == "critical" else WARNING)
    ax.set_yticks([])
    ax.set_ylim(-0.5, 0.5)
    ax.set_ylabel("incidents")


def _shade(ax: Axes, times: np.ndarray, labels: np.ndarray | None) -> None:
    """Labelled anomalous spans as a light band (edged, so a one-reading span shows)."""
    if labels is None:
        return
    for start, end in runs(labels):
        ax.axvspan(times[start], times[min(end, len(times) - 1)], color=LABEL, alpha=0.3,
                   linewidth=1.0)
