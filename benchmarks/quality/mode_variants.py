#!/usr/bin/env python3
"""Value + one-hot commands, varied beyond the suite's generator: do operating modes hold?

    .venv/bin/python benchmarks/quality/mode_variants.py [STREAMAE_X=Y ...]   # ~1 min
    .venv/bin/python benchmarks/quality/mode_variants.py --cost   # scoring, modes on/off

Each variant draws the commands' levels per seed (the suite's are fixed) and changes one
thing: how many commands, how often they switch, how the flags are coded, how long the
events last, how slowly the value settles on a new level; then commands sent as pulses
(``pulses``). Recall of events and false alarms per 1,000 normal readings over seeds 0-2,
with the defaults (or the settings given, e.g.
``STREAMAE_MODEL__OPERATING_MODES=false``). ``--cost``: CPU per window of scoring the
suite's scenario with modes on and off, median of 9 alternating passes, same process. Figures in
docs/quality.md.
"""

from __future__ import annotations

import functools
import logging
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parents[1]))

import generators as g  # noqa: E402
import run as quality  # noqa: E402


def telemetry(seed: int, commands: int = 5, segment: int = 100, settling: float = 0.0,
              coding: tuple[float, float] = (0.0, 1.0), event: int = 20) -> g.Scenario:
    """A value at its command's level (noise 0.1; ``settling``: the time constant, in
    readings, of its approach to a new level) and the one-hot commands coded as ``coding``;
    events: the value 1.0 (10 noise units) off for ``event`` readings."""
    rng = np.random.default_rng(seed)
    n = g.TRAIN + g.TEST
    command = np.repeat(rng.integers(0, commands, n // segment + 1), segment)[:n]
    target = rng.uniform(-3, 5, commands)[command]
    value = target.copy()
    if settling > 0:
        keep = np.exp(-1.0 / settling)
        for i in range(1, n):
            value[i] = keep * value[i - 1] + (1 - keep) * target[i]
    value += 0.1 * rng.normal(size=n)
    labels = np.zeros(n, bool)
    for start in g._event_starts(rng, event):
        value[start:start + event] += rng.choice([-1.0, 1.0])
        labels[start:start + event] = True
    flags = np.where(np.eye(commands)[command] > 0, coding[1], coding[0])
    names = ("value", *[f"cmd{i}" for i in range(commands)])
    return g.Scenario("variant", np.column_stack([value, flags]).astype(np.float32), labels,
                      g.TRAIN, names)


def pulses(seed: int, commands: int = 10, rate: float = 0.004, response: float = 0.0,
           unseen: int = 0) -> g.Scenario:
    """Commands *sent* now and then (a public telemetry benchmark's shape: each column 1 on
    a random ``rate`` of rows, else 0) beside a value on a slow cycle (noise 0.1);
    ``response``: the value's transient after a command (decaying over ~10 rows);
    ``unseen``: commands never sent in the warm-up. Events: the value 1.0 off for 20 rows."""
    rng = np.random.default_rng(seed)
    n = g.TRAIN + g.TEST
    value = np.sin(2 * np.pi * np.arange(n) / 300) + 0.1 * rng.normal(size=n)
    flags = (rng.random((n, commands)) < rate).astype(float)
    flags[: g.TRAIN, :unseen] = 0.0
    if response:
        value += np.convolve(flags.sum(axis=1) * response, np.exp(-np.arange(10) / 3.0))[:n]
    labels = np.zeros(n, bool)
    for start in g._event_starts(rng, 20):
        value[start:start + 20] += rng.choice([-1.0, 1.0])
        labels[start:start + 20] = True
    names = ("value", *[f"cmd{i}" for i in range(commands)])
    return g.Scenario("pulses", np.column_stack([value, flags]).astype(np.float32), labels,
                      g.TRAIN, names)


PULSE_VARIANTS = {
    "10 commands sent as pulses, 0.4% of rows each": {},
    "pulses on 0.1% of rows": {"rate": 0.001},
    "pulses on 2% of rows": {"rate": 0.02},
    "the value responds to each pulse (0.5)": {"response": 0.5},
    "3 commands never sent in the warm-up": {"unseen": 3},
}
VARIANTS = {
    "5 commands, segments of 100": {},
    "commands coded -5/+5": {"coding": (-5.0, 5.0)},
    "segments of 20": {"segment": 20},
    "events of 5 readings": {"event": 5},
    "settling, time constant 2": {"settling": 2.0},
    "settling, time constant 3": {"settling": 3.0},
    "20 commands (some unused in the warm-up)": {"commands": 20},
}


def scoring_cost() -> None:
    """CPU us per window of ``Scorer.score`` on value + commands, modes on and off."""
    from numpy.lib.stride_tricks import sliding_window_view

    from streamae.live import train_detector
    from streamae.scoring import Scorer
    from streamae.settings import ModelSettings

    scenario = g.value_commands(0)
    windows = sliding_window_view(scenario.values, (16, 6))[:, 0].copy()
    train, test = windows[: g.TRAIN - 15], windows[g.TRAIN - 15:]
    scorers = {modes: Scorer(train_detector(train, ModelSettings(operating_modes=modes), "cpu"),
                             "cpu") for modes in (True, False)}
    passes: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(9):  # alternating, so the machine's noise falls on both alike
        for modes, scorer in scorers.items():
            start = time.process_time()
            scorer.score(test)
            passes[modes].append((time.process_time() - start) / len(test) * 1e6)
    cost = {modes: float(np.median(p)) for modes, p in passes.items()}
    for modes, us in cost.items():
        print(f"operating modes {'on' if modes else 'off'}: {us:.1f} us per window")
    print(f"ratio on / off: {cost[True] / cost[False]:.2f}")


def main() -> int:
    logging.basicConfig(level=logging.ERROR)
    if "--cost" in sys.argv:
        scoring_cost()
        return 0
    env = dict(arg.split("=", 1) for arg in sys.argv[1:])
    quality.print_variants({**{name: functools.partial(telemetry, **change)
                               for name, change in VARIANTS.items()},
                            **{name: functools.partial(pulses, **change)
                               for name, change in PULSE_VARIANTS.items()}}, env)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
