"""Labelled synthetic streams, one for each way a detector has been seen to fail.

Every scenario is a function ``(seed) -> Scenario``: a normal-only training part followed by
a test part with labelled anomalous *events* (runs of rows). The anomalies are what an
operator would want paged about; everything else in the test part (a new level after a
shift, a drift, a constant column switching, frequent spikes that are normal) is normal
and every flag on it is a false alarm. Amplitudes are stated in the signal's own noise
units so the same generator is meaningful at any scale; the scale and offset are random
per seed so no default can lean on one magnitude.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

TRAIN = 3_000
TEST = 6_000
EVENTS = 12  # anomalous events per test part


@dataclass(frozen=True)
class Scenario:
    name: str
    values: np.ndarray  # (N, D) float32
    labels: np.ndarray  # (N,) bool, True on anomalous rows
    train_rows: int  # rows [0, train_rows) are normal and train the model
    names: tuple[str, ...]
    keys: tuple[str, ...] | None = None  # per row when several keys interleave; None: one

    @property
    def ts_ms(self) -> np.ndarray:
        return np.arange(len(self.labels), dtype=np.int64) * 1000


def _event_starts(rng: np.random.Generator, length: int, gap: int = 300) -> np.ndarray:
    """EVENTS start rows in the test part, at least ``gap`` apart and off its edges."""
    slots = np.linspace(TRAIN + gap, TRAIN + TEST - gap, EVENTS + 1).astype(int)[:-1]
    jitter = rng.integers(0, max(1, (slots[1] - slots[0]) - length - gap // 2), EVENTS)
    return slots + jitter


def _scaled(rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
    """A random unit and offset: defaults must not depend on the data's magnitude."""
    return (x * 10.0 ** rng.uniform(-2, 3) + rng.uniform(-1e3, 1e3)).astype(np.float32)


def _finish(name: str, rng: np.random.Generator, x: np.ndarray, labels: np.ndarray,
            names: tuple[str, ...] | None = None) -> Scenario:
    x = np.atleast_2d(x.T).T if x.ndim == 1 else x
    cols = names or tuple(f"x{i}" for i in range(x.shape[1]))
    return Scenario(name, _scaled(rng, x), labels, TRAIN, cols)


def spikes(seed: int, noise: float, name: str) -> Scenario:
    """A level with (little or no) noise and single-reading spikes of +-25 units."""
    rng = np.random.default_rng(seed)
    n = TRAIN + TEST
    x = noise * rng.normal(size=n) + 0.05 * np.sin(np.arange(n) * 2 * np.pi / 97)
    labels = np.zeros(n, bool)
    for start in _event_starts(rng, 1):
        x[start] += rng.choice([-1.0, 1.0]) * 25 * max(noise, 0.05)
        labels[start] = True
    return _finish(name, rng, x, labels)


def level_shifts(seed: int) -> Scenario:
    """Low noise; the level jumps by 8 noise units and stays: the jump is the event."""
    rng = np.random.default_rng(seed)
    n = TRAIN + TEST
    x = rng.normal(size=n)
    labels = np.zeros(n, bool)
    for start in _event_starts(rng, 1):
        x[start:] += rng.choice([-1.0, 1.0]) * 8
        labels[start:start + 3] = True
    return _finish("level shifts", rng, x, labels)


def periodic(seed: int) -> Scenario:
    """A noisy cycle of 50 rows; events are one cycle missing (flat) or distorted (2x)."""
    rng = np.random.default_rng(seed)
    n, period = TRAIN + TEST, 50
    x = np.sin(np.arange(n) * 2 * np.pi / period) + 0.05 * rng.normal(size=n)
    labels = np.zeros(n, bool)
    for i, start in enumerate(_event_starts(rng, period)):
        seg = slice(start, start + period)
        x[seg] = 0.05 * rng.normal(size=period) if i % 2 else 2.0 * x[seg]
        labels[seg] = True
    return _finish("periodic, missing/distorted cycle", rng, x, labels)


def spiky_normal(seed: int) -> Scenario:
    """Normal data with frequent large spikes (2% of rows, up to 6 units); events are the
    cycle's amplitude tripling for 60 rows (a vibration rising)."""
    rng = np.random.default_rng(seed)
    n = TRAIN + TEST
    x = 0.3 * rng.normal(size=n) + np.sin(np.arange(n) * 2 * np.pi / 40)
    burst = rng.random(n) < 0.02
    x[burst] += rng.uniform(2, 6, burst.sum()) * rng.choice([-1, 1], burst.sum())
    labels = np.zeros(n, bool)
    for start in _event_starts(rng, 60):
        x[start:start + 60] *= 3.0
        labels[start:start + 60] = True
    return _finish("spiky normal, amplitude x3", rng, x, labels)


def _correlated(rng: np.random.Generator, n: int, width: int) -> np.ndarray:
    """``width`` channels driven by two smooth latent factors plus noise."""
    t = np.arange(n)
    factors = np.stack([np.sin(t * 2 * np.pi / 60), np.cos(t * 2 * np.pi / 170)], axis=1)
    mixing = rng.normal(size=(2, width))
    return factors @ mixing + 0.1 * rng.normal(size=(n, width))


def constant_switch(seed: int) -> Scenario:
    """Three correlated channels and two columns constant in training that switch in the
    test part (benign); events are one channel's sign flipped for 40 rows (a broken
    correlation: each channel alone stays in range)."""
    rng = np.random.default_rng(seed)
    n = TRAIN + TEST
    x = np.concatenate([_correlated(rng, n, 3), np.zeros((n, 2))], axis=1)
    x[TRAIN + 500:TRAIN + 2500, 3] = 1.0
    x[TRAIN + 3500:, 4] = 7.0
    labels = np.zeros(n, bool)
    for start in _event_starts(rng, 40):
        x[start:start + 40, 0] *= -1.0
        labels[start:start + 40] = True
    return _finish("constant columns that switch", rng, x, labels)


def value_commands(seed: int) -> Scenario:
    """A value column and five one-hot command columns: the value's level follows the
    command (telemetry), so the value alone is often far from its overall mean; events are
    the value leaving its command's range for 20 rows. (A command never used in training
    is the constant-columns scenario.)"""
    rng = np.random.default_rng(seed)
    n = TRAIN + TEST
    command = np.repeat(rng.integers(0, 5, n // 100 + 1), 100)[:n]
    levels = np.array([0.0, 2.0, -1.5, 4.0, 1.0])
    value = levels[command] + 0.1 * rng.normal(size=n)
    labels = np.zeros(n, bool)
    for start in _event_starts(rng, 20):
        value[start:start + 20] += rng.choice([-1.0, 1.0]) * 1.0
        labels[start:start + 20] = True
    onehot = np.eye(5)[command]
    x = np.concatenate([value[:, None], onehot], axis=1)
    names = ("value", *[f"cmd{i}" for i in range(5)])
    return Scenario("value + one-hot commands", x.astype(np.float32), labels, TRAIN, names)


def slow_drift(seed: int) -> Scenario:
    """Four correlated channels whose level drifts slowly and steadily, 6 units over the
    whole recording (benign, already under way in training); events are a spike of 2 units
    in one channel for 5 rows."""
    rng = np.random.default_rng(seed)
    n = TRAIN + TEST
    x = _correlated(rng, n, 4)
    x += np.linspace(0, 6, n)[:, None]
    labels = np.zeros(n, bool)
    for start in _event_starts(rng, 5):
        x[start:start + 5, rng.integers(0, 4)] += 2.0
        labels[start:start + 5] = True
    return _finish("slow benign drift", rng, x, labels)


def keys_in_units(seed: int) -> Scenario:
    """Four sensors of one kind (a noisy cycle, each its own phase), each reporting in its
    own unit and offset (10^-3 to 10^4): one model for all of them; events are spikes of 8
    noise units in one sensor, three per sensor. Rows interleave the keys."""
    rng = np.random.default_rng(seed)
    keys, per_key = 4, (TRAIN + TEST) // 4
    train, t = TRAIN // 4, np.arange(per_key)
    series, labels = np.zeros((keys, per_key)), np.zeros((keys, per_key), bool)
    for k in range(keys):
        x = np.sin(t * 2 * np.pi / 40 + rng.uniform(0, 2 * np.pi)) + 0.1 * rng.normal(size=per_key)
        slots = np.linspace(train + 100, per_key - 100, EVENTS // keys + 1).astype(int)[:-1]
        for start in slots + rng.integers(0, 200, len(slots)):
            x[start] += rng.choice([-1.0, 1.0]) * 0.8
            labels[k, start] = True
        series[k] = x * 10.0 ** rng.uniform(-3, 4) + rng.uniform(-1e3, 1e3)
    names = tuple(f"sensor-{k}" for k in range(keys)) * per_key
    return Scenario("keys in different units", series.T.reshape(-1, 1).astype(np.float32),
                    labels.T.reshape(-1), TRAIN, ("value",), names)


SCENARIOS: dict[str, Callable[[int], Scenario]] = {
    "noiseless_spikes": lambda seed: spikes(seed, 0.0, "noiseless + spikes"),
    "low_noise_spikes": lambda seed: spikes(seed, 0.01, "low noise + spikes"),
    "level_shifts": level_shifts,
    "periodic": periodic,
    "spiky_normal": spiky_normal,
    "constant_switch": constant_switch,
    "value_commands": value_commands,
    "slow_drift": slow_drift,
    "keys_in_units": keys_in_units,
}
