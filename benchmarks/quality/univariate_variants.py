#!/usr/bin/env python3
"""Univariate streams of kinds the suite does not generate: do the defaults hold?

    .venv/bin/python benchmarks/quality/univariate_variants.py [STREAMAE_X=Y ...]   # ~2 min

Shapes met in public univariate benchmarks (counts with a daily cycle, a wandering level, a
coarse sensor, a machine's heat-and-reset cycle), each with its own labelled events.
Recall of events and false alarms per 1,000 normal readings per seed (0-2), with the
defaults (or the settings given). Written to find failures, not to pass: the figures and
what they show are in docs/quality.md ("Beyond the suite: univariate streams").
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parents[1]))

import generators as g  # noqa: E402
import run as quality  # noqa: E402


def counts(seed: int) -> g.Scenario:
    """Poisson counts whose mean follows a daily cycle (288 rows) between 2 and 10; events:
    the rate x4 for 12 rows (at the cycle's low point within the peak's normal range)."""
    rng = np.random.default_rng(seed)
    n = g.TRAIN + g.TEST
    rate = 6 + 4 * np.sin(2 * np.pi * np.arange(n) / 288)
    labels = np.zeros(n, bool)
    for start in g._event_starts(rng, 12):
        rate[start:start + 12] *= 4
        labels[start:start + 12] = True
    x = rng.poisson(rate).astype(np.float32)[:, None]
    return g.Scenario("poisson counts, daily cycle", x, labels, g.TRAIN, ("count",))


def random_walk(seed: int) -> g.Scenario:
    """A random walk (a level that wanders, benign); events: a jump of 8 step sizes held
    for 30 rows, then back."""
    rng = np.random.default_rng(seed)
    n = g.TRAIN + g.TEST
    x = np.cumsum(rng.normal(size=n))
    labels = np.zeros(n, bool)
    for start in g._event_starts(rng, 30):
        x[start:start + 30] += rng.choice([-1.0, 1.0]) * 8
        labels[start:start + 30] = True
    return g._finish("random walk", rng, x, labels)


def quantised(seed: int) -> g.Scenario:
    """A cycle (period 50) read by a coarse sensor: whole steps, ~5 levels; events: stuck at
    one value for 60 rows."""
    rng = np.random.default_rng(seed)
    n = g.TRAIN + g.TEST
    x = np.round(2 + 1.6 * np.sin(2 * np.pi * np.arange(n) / 50) + 0.3 * rng.normal(size=n))
    labels = np.zeros(n, bool)
    for start in g._event_starts(rng, 60):
        x[start:start + 60] = x[start]
        labels[start:start + 60] = True
    return g._finish("quantised cycle, stuck", rng, x, labels)


def sawtooth(seed: int) -> g.Scenario:
    """A machine heating slowly and reset (period 400, height 100 noise units); events: a
    ramp 5x steeper for 40 rows, overshooting the normal top by 40 noise units."""
    rng = np.random.default_rng(seed)
    n = g.TRAIN + g.TEST
    t = np.arange(n)
    x = (t % 400) / 400.0 * 5 + 0.05 * rng.normal(size=n)
    labels = np.zeros(n, bool)
    for start in g._event_starts(rng, 40):
        x[start:start + 40] += np.linspace(0, 2, 40)
        labels[start:start + 40] = True
    return g._finish("heat and reset (sawtooth), steep ramp", rng, x, labels)


VARIANTS = {"poisson counts, daily cycle": counts, "random walk": random_walk,
            "quantised cycle, stuck": quantised, "heat and reset (sawtooth), steep ramp": sawtooth}


def main() -> int:
    logging.basicConfig(level=logging.ERROR)
    quality.print_variants(VARIANTS, dict(arg.split("=", 1) for arg in sys.argv[1:]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
