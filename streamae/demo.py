"""A synthetic multi-sensor stream with labelled anomalies, for the demo and the tests.

Each pump has eight sensors driven by two shared hidden factors (so they are correlated,
as real sensors are) plus noise. Injected anomalies, each an episode on one sensor:

    spike        one reading far off
    drift        a slow ramp away from normal
    stuck        the sensor freezes at one value while the others move
    correlation  the sensor moves against the factor it normally follows

A reading is labelled with its episode's kind while the deviation is large enough to be
seen (``VISIBLE``) and ``<kind>-faint`` while it is not; only readings outside every
episode are ``normal``. Recall is measured on the visible ones, false alarms on the
normal ones, and faint readings count for neither.

A :class:`Scenario` adds one long-lived change on top of the episodes (``--scenario``):

    base    none
    poison  one sensor +5 scales from half the stream on: a fault a retrainer must not
            learn away (labelled ``poison``)
    ramp    one sensor 0 -> +5 scales over ``length`` readings, then held (``ramp`` once
            visible, ``ramp-faint`` before)
    drift   every sensor 0 -> +4 scales over ``length`` readings, then held; the factors
            and so the correlations are kept: benign, the readings stay ``normal``
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

SENSORS = ("temp_in", "temp_out", "pressure", "flow", "vibration", "current", "voltage", "rpm")
MEANS = np.array([60.0, 75.0, 2.5, 120.0, 0.8, 14.0, 400.0, 1450.0])
SCALES = np.array([5.0, 6.0, 0.3, 15.0, 0.1, 2.0, 8.0, 60.0])
LOADINGS = np.array([[0.9, 0.2], [0.8, 0.5], [0.3, 0.9], [-0.5, 0.8], [0.6, -0.6],
                     [0.9, 0.4], [-0.3, 0.2], [0.4, 0.9]])
NOISE = 0.08  # in units of each sensor's scale
KINDS = ("spike", "drift", "stuck", "correlation")
EPISODE = 40  # readings per drift / stuck / correlation episode
VISIBLE = 1.0  # a deviation (in sensor scales, ~12 noise sigmas) that counts as anomalous
# Readings at the start with no episode: the daemon's default warm-up (5,000 samples) sees
# a commissioning period known to be normal, as an operator should arrange. The stream's
# episodes cover ~8% of its readings, far more than any warm-up should hold; with them in
# the warm-up the calibration takes them for normal (docs/quality.md, trim_outliers).
CLEAN_PREFIX = 5_000


@dataclass(frozen=True)
class DemoReading:
    key: str
    ts_ms: int
    values: dict[str, float]
    label: str  # "normal", the anomaly kind, or "<kind>-faint"

    def as_message(self) -> dict:
        return {"key": self.key, "ts": self.ts_ms, "values": self.values, "label": self.label}


SCENARIOS = ("base", "poison", "ramp", "drift")


@dataclass(frozen=True)
class Scenario:
    """A long-lived change from reading ``start`` on, reaching ``size`` scales after
    ``length`` readings (0: at once). ``sensor`` None moves every sensor."""

    name: str
    start: int = 0
    length: int = 0
    size: float = 0.0
    sensor: int | None = None

    def offset(self, n: int) -> float:
        """Its deviation (in sensor scales) at reading ``n``."""
        if self.name == "base" or n < self.start:
            return 0.0
        if self.length <= 0:
            return self.size
        return self.size * min(1.0, (n - self.start + 1) / self.length)

    @property
    def faulty(self) -> bool:
        """True when the change is a fault to flag, False for benign drift."""
        return self.name in ("poison", "ramp")


def scenario(name: str, count: int) -> Scenario:
    """The named scenario laid out over a stream of ``count`` readings: the issue's shapes
    at 100k readings (ramp over 20k, drift over 25k), shortened in proportion below that."""
    if name == "base":
        return Scenario("base")
    if name == "poison":
        return Scenario("poison", start=count // 2, size=5.0, sensor=2)
    if name == "ramp":
        return Scenario("ramp", start=count // 4, length=min(20_000, count // 5), size=5.0,
                        sensor=5)
    if name == "drift":
        return Scenario("drift", start=int(0.3 * count), length=min(25_000, count // 4),
                        size=4.0)
    raise ValueError(f"unknown scenario {name!r}; expected one of {SCENARIOS}")


@dataclass
class _Episode:
    kind: str
    sensor: int
    start: int
    stuck_at: float = 0.0


class DemoStream:
    """Readings round-robin over ``pumps`` keys; ``anomaly_rate`` = episodes per reading."""

    def __init__(self, pumps: int = 4, anomaly_rate: float = 0.004, seed: int = 0,
                 start_ms: int = 1_700_000_000_000, period_ms: int = 100,
                 clean_prefix: int = 0, scenario: Scenario | None = None) -> None:
        self.rng = np.random.default_rng(seed)
        self.pumps = pumps
        self.anomaly_rate = anomaly_rate
        self.start_ms, self.period_ms = start_ms, period_ms
        self.clean_prefix = clean_prefix  # readings with no anomaly (a clean warm-up)
        self.phases = self.rng.uniform(0, 2 * math.pi, size=pumps)
        self.episodes: dict[int, _Episode] = {}
        self.scenario = scenario or Scenario("base")

    def __iter__(self) -> Iterator[DemoReading]:
        n = 0
        while True:
            pump = n % self.pumps
            step = n // self.pumps
            yield self._reading(n, pump, step)
            n += 1

    def take(self, count: int) -> list[DemoReading]:
        out = []
        for reading in self:
            out.append(reading)
            if len(out) >= count:
                return out
        return out

    def _normal(self, pump: int, step: int) -> np.ndarray:
        t = step + self.phases[pump] * 100
        factors = np.array([math.sin(2 * math.pi * t / 200), math.sin(2 * math.pi * t / 57 + 1)])
        return LOADINGS @ factors + self.rng.normal(0, NOISE, size=len(SENSORS))

    def _reading(self, n: int, pump: int, step: int) -> DemoReading:
        z = self._normal(pump, step)  # in sigma units around each sensor's mean
        label = "normal"
        episode = self._episode(n, pump, step)
        if episode is not None:
            z, label = self._inject(episode, z, step)
        z, label = self._shift(n, z, label)
        values = MEANS + SCALES * z
        ts = self.start_ms + n * self.period_ms
        return DemoReading(f"pump-{pump + 1}", ts,
                           {name: round(float(v), 5) for name, v in zip(SENSORS, values,
                                                                         strict=True)},
                           label)

    def _shift(self, n: int, z: np.ndarray, label: str) -> tuple[np.ndarray, str]:
        """The scenario's change; a visible fault labels the reading with its name."""
        offset = self.scenario.offset(n)
        if offset == 0.0:
            return z, label
        z = z.copy()
        if self.scenario.sensor is None:
            z += offset
        else:
            z[self.scenario.sensor] += offset
        if self.scenario.faulty:
            label = self.scenario.name if offset > VISIBLE else f"{self.scenario.name}-faint"
        return z, label

    def _episode(self, n: int, pump: int, step: int) -> _Episode | None:
        episode = self.episodes.get(pump)
        if episode is not None and step - episode.start >= (1 if episode.kind == "spike"
                                                            else EPISODE):
            del self.episodes[pump]
            episode = None
        if episode is None and n >= self.clean_prefix and self.rng.random() < self.anomaly_rate:
            kind = KINDS[int(self.rng.integers(len(KINDS)))]
            episode = _Episode(kind, int(self.rng.integers(len(SENSORS))), step)
            self.episodes[pump] = episode
        return episode

    def _inject(self, episode: _Episode, z: np.ndarray, step: int) -> tuple[np.ndarray, str]:
        z = z.copy()
        s, age = episode.sensor, step - episode.start
        before = z[s]
        if episode.kind == "spike":
            z[s] += 8.0 * math.copysign(1.0, self.rng.normal())
        elif episode.kind == "drift":
            z[s] += 6.0 * (age + 1) / EPISODE
        elif episode.kind == "stuck":
            if age == 0:
                episode.stuck_at = float(z[s])
            z[s] = episode.stuck_at
        else:  # correlation: follow the factors with the opposite sign
            z[s] = -z[s]
        visible = abs(z[s] - before) > VISIBLE
        return z, (episode.kind if visible else f"{episode.kind}-faint")
