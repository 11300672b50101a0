"""Readings judged against their operating mode: a value that contradicts its command.

Telemetry often comes as measured values beside two-valued columns (commands, modes,
switches) that set where the values should be: a pump's pressure follows its valve, a
channel's level follows the command in force. An autoencoder on whole windows has room in
its latent for the value's level itself, so it rebuilt a level that contradicts the command
as well as the right one (recall 0.000-0.250 of such events), and it cannot compose a pair
of commands in a row that training never showed (21.68 false alarms per 1,000, 93% of the
error in the command columns). ``ModeLevels`` is the contextual model it lacks, with no
network: per *mode* (one combination of the two-valued columns, seen at least
MIN_MODE_ROWS times in training) the median and robust spread of every measured column
(one with more than two values). It serves twice:

* the scaler feeds the model each measured value **as its deviation from its mode's
  level** (``residual``: less the mode's median, in units of the mode's spread times the
  column's typical spread) and the mode columns as 0: the model learns the readings' shape
  within a mode, which a new sequence of commands cannot upset (with the commands as input,
  a pair of commands training never showed still made 0.7-1.3 false alarms per 1,000);
* ``ErrorStats`` scores a window by the largest deviation a measured column holds for at
  least half of the window (``deviations``), a part
  calibrated and joined like the others, and weighs the mode columns' errors 0.

A reading in a mode seen fewer than MIN_MODE_ROWS times keeps its values (mode columns
included: the model sees a mode it does not know) and counts 0 here, unless it is one flag
away from exactly one known mode (a command sent now and then): it is read as that mode.
So "mode columns all 0" marks a reading judged against its mode: a column's two scaled
values are never 0, as its mean lies between them. Data without two-valued columns has no
``ModeLevels``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from streamae.exceptions import ModelError
from streamae.windows import MAD_TO_SIGMA

MIN_MODE_ROWS = 30  # a mode seen in fewer training readings has no levels (too few to trust)
MAX_MODES = 1_024  # the most frequent modes kept: the state stays small
# A mode's spread is at least this share of the column's whole spread (1 in scaled units):
# a noiseless level must not make the float rounding of a normal reading a 1e6-sigma event.
SPREAD_FLOOR = 1e-3
VALUE_TOLERANCE = 1e-4  # scaled units: a mode column at one of its two values (float32 noise)
_HASH = np.random.default_rng(20261202).integers(1, 2**62, size=8_192, dtype=np.int64) | 1


def distinct_counts(rows: np.ndarray) -> np.ndarray:
    """Per column of (R, D): how many distinct values it takes."""
    return np.array([np.unique(rows[:, j]).size for j in range(rows.shape[1])])


def _codes(bits: np.ndarray) -> np.ndarray:
    """0/1 mode bits (..., M) -> an int64 code each (a hash that wraps: fine as a key)."""
    return bits.astype(np.int64) @ _HASH[: bits.shape[-1]]  # 10x a multiply and sum


@dataclass(frozen=True)
class ModeLevels:
    """Per mode, where each measured column normally sits, in scaled units."""

    mode_columns: np.ndarray  # (M,) int: the two-valued columns
    values: np.ndarray  # (M, 2) each mode column's two values, low then high
    measured: np.ndarray  # (K,) int: the columns judged against their mode
    patterns: np.ndarray  # (C, M) 0/1: the modes with levels, in code order
    median: np.ndarray  # (C, K)
    spread: np.ndarray  # (C, K), floored
    codes: np.ndarray = field(init=False, repr=False)  # (C,) sorted, from the patterns
    typical: np.ndarray = field(init=False, repr=False)  # (K,) median spread over modes
    # Per mode and one more row for "no known mode": what residual() subtracts from and
    # multiplies the measured values by, and keeps of the mode columns (the last row: all).
    _shift: np.ndarray = field(init=False, repr=False)  # (C + 1, K)
    _gain: np.ndarray = field(init=False, repr=False)  # (C + 1, K)
    _keep: np.ndarray = field(init=False, repr=False)  # (C + 1, 1)

    def __post_init__(self) -> None:
        object.__setattr__(self, "codes", _codes(self.patterns))
        object.__setattr__(self, "typical", np.median(self.spread, axis=0).astype(np.float32))
        width = self.median.shape[1]
        tables = {"_shift": np.vstack([self.median, np.zeros((1, width))]),
                  "_gain": np.vstack([self.typical / self.spread, np.ones((1, width))]),
                  "_keep": np.r_[np.zeros(len(self.median)), 1.0][:, None]}
        for name, table in tables.items():
            object.__setattr__(self, name, table.astype(np.float32))
        if self.codes.size and np.any(np.diff(self.codes) <= 0):
            raise ModelError("malformed mode levels: patterns out of order or repeated")

    @classmethod
    def fit(cls, rows: np.ndarray) -> ModeLevels | None:
        """From normal readings (R, D) scaled (standardised); None where there are no
        two-valued columns, no measured ones, or no mode seen MIN_MODE_ROWS times. A
        constant column is neither."""
        x = np.asarray(rows, dtype=np.float32)
        distinct = distinct_counts(x)
        columns, measured = np.flatnonzero(distinct == 2), np.flatnonzero(distinct > 2)
        if columns.size == 0 or measured.size == 0:
            return None
        values = np.stack([np.unique(x[:, j]) for j in columns]).astype(np.float32)
        bits = x[:, columns] > values.mean(axis=1)
        codes = _codes(bits)
        _, first, inverse, counts = np.unique(codes, return_index=True, return_inverse=True,
                                              return_counts=True)
        kept = np.flatnonzero(counts >= MIN_MODE_ROWS)
        kept = np.sort(kept[np.argsort(-counts[kept], kind="stable")[:MAX_MODES]])
        if kept.size == 0:
            return None
        median = np.empty((kept.size, measured.size), dtype=np.float32)
        spread = np.empty_like(median)
        for i, mode in enumerate(kept):
            readings = x[inverse.ravel() == mode][:, measured]
            median[i] = np.median(readings, axis=0)
            mad = np.median(np.abs(readings - median[i]), axis=0)
            spread[i] = np.maximum(MAD_TO_SIGMA * mad, SPREAD_FLOOR)
        return cls(columns, values, measured, bits[first[kept]].astype(np.float32), median,
                   spread)

    def _rows(self, flags: np.ndarray) -> np.ndarray:
        """Scaled mode columns (..., M) -> each reading's row of the tables, the last where
        its mode has no levels (see ``_one_flag_off``). A mode column off both of its
        values (a command 7 where training had 0 and 1) is no known mode: the model sees it
        as it is."""
        low, high = self.values[:, 0], self.values[:, 1]
        bits = flags > 0.5 * (low + high)
        codes = _codes(bits)
        index = np.clip(np.searchsorted(self.codes, codes), 0, len(self.codes) - 1)
        exact = ((np.abs(flags - low) <= VALUE_TOLERANCE)
                 | (np.abs(flags - high) <= VALUE_TOLERANCE)).all(axis=-1)
        row = np.where((self.codes[index] == codes) & exact, index, len(self.codes))
        return self._one_flag_off(row, bits, exact)

    def _one_flag_off(self, row: np.ndarray, bits: np.ndarray, exact: np.ndarray) -> np.ndarray:
        """Readings one flag away from exactly one known mode are read as that mode: a
        command sent now and then (a pulse, too rare to be a mode of its own) is context
        on top of the mode in force, not a state the model has never seen. Fed as they
        were, such rows made the false alarms of value + commands sent on 0.1% of rows
        (2.69 per 1,000; 0.00 read as the mode). Two modes one flag away (two commands at
        once, where each alone is known) stay unknown."""
        unknown = np.flatnonzero((row.ravel() == len(self.codes)) & exact.ravel())
        if unknown.size == 0:
            return row
        flat = bits.reshape(-1, bits.shape[-1])[unknown].astype(np.int32)
        patterns = self.patterns.astype(np.int32)
        # Hamming distances (U, C) by two products: ones where one has them, the other not.
        distance = flat @ (1 - patterns).T + (1 - flat) @ patterns.T
        nearest = distance.argmin(axis=1)
        single = (distance == 1).sum(axis=1) == 1
        out = row.ravel().copy()
        out[unknown[single]] = nearest[single]
        return out.reshape(row.shape)

    def residual(self, x: np.ndarray) -> np.ndarray:
        """Scaled readings (..., D) as the model sees them (see the module docstring); a
        new array."""
        out = np.array(x, dtype=np.float32, copy=True)
        row = self._rows(out[..., self.mode_columns])
        out[..., self.measured] = (out[..., self.measured] - self._shift[row]) * self._gain[row]
        out[..., self.mode_columns] *= self._keep[row]
        return out

    def restore(self, x: np.ndarray, flags: np.ndarray) -> np.ndarray:
        """Inverse of ``residual`` for ``x`` (e.g. a reconstruction) of readings whose
        scaled mode columns are ``flags`` (..., M): they say the mode and are given back as
        they were."""
        out = np.array(x, dtype=np.float32, copy=True)
        flags = np.asarray(flags, dtype=np.float32)
        row = self._rows(flags)
        out[..., self.measured] = out[..., self.measured] / self._gain[row] + self._shift[row]
        out[..., self.mode_columns] = np.where(self._keep[row] == 0.0, flags,
                                               out[..., self.mode_columns])
        return out

    def _z(self, residuals: np.ndarray) -> np.ndarray:
        """Model inputs (B, L, D) -> (B, L, K) each measured value's deviation from its
        mode's level in units of the mode's spread; 0 outside known modes."""
        x = np.asarray(residuals, dtype=np.float32)
        known = (x[..., self.mode_columns] == 0.0).all(axis=-1)
        return np.where(known[..., None], np.abs(x[..., self.measured]) / self.typical, 0.0)

    def deviations(self, residuals: np.ndarray) -> np.ndarray:
        """Residual windows (B, L, D) -> (B,): the largest held deviation (``_held``)."""
        return self._held(residuals).max(axis=1)

    def _held(self, residuals: np.ndarray) -> np.ndarray:
        """Residual windows (B, L, D) -> (B, K): per measured column, the deviation that at
        least half of the window's readings reach: a level held off, not a moment. A value
        settling on a new command's level (a transient of a few readings) is normal, and
        with the largest deviation instead its transients ruled the tail: recall 0.00-0.33
        on value + commands with a settling time of 3 readings. A short excursion is the
        model's to judge (its peak part)."""
        z = np.sort(self._z(residuals), axis=1)
        return z[:, z.shape[1] // 2]

    def deviation(self, residual: np.ndarray) -> tuple[int, float]:
        """One residual window (L, D) -> (measured column, its held deviation), the one
        that lies furthest from its mode's level."""
        z = self._held(np.asarray(residual)[None])[0]
        best = int(np.argmax(z))
        return int(self.measured[best]), float(z[best])

    def fits(self, width: int) -> bool:
        """Whether every column it names exists in readings of ``width`` features."""
        columns = np.concatenate([self.mode_columns, self.measured])
        return bool(columns.min() >= 0 and columns.max() < width)

    def state(self) -> dict[str, np.ndarray]:
        """The arrays, float32 (indices and bits are exact in it)."""
        return {"mode_columns": self.mode_columns.astype(np.float32), "values": self.values,
                "measured": self.measured.astype(np.float32), "patterns": self.patterns,
                "median": self.median, "spread": self.spread}

    @classmethod
    def from_state(cls, state: dict | None) -> ModeLevels | None:
        """Inverse of ``state`` (arrays or nested lists); None for None (a state from
        before modes were judged). ModelError on anything malformed."""
        if state is None:
            return None
        try:
            arrays = {k: np.asarray(state[k], dtype=np.float32) for k in
                      ("mode_columns", "values", "measured", "patterns", "median", "spread")}
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"malformed mode levels: {exc}") from exc
        columns, measured = arrays["mode_columns"].astype(np.int64), arrays["measured"]
        if not columns.size or arrays["patterns"].size % columns.size:
            raise ModelError("malformed mode levels: patterns do not fit the mode columns")
        patterns, median = arrays["patterns"].reshape(-1, columns.size), arrays["median"]
        shape = (len(patterns), measured.size)
        if (median.shape != shape or arrays["spread"].shape != shape
                or arrays["values"].shape != (columns.size, 2) or not measured.size
                or not np.isfinite(median).all() or not (arrays["spread"] > 0).all()
                or not np.isin(patterns, (0.0, 1.0)).all()):
            raise ModelError("malformed mode levels: shapes or values")
        return cls(columns, arrays["values"], measured.astype(np.int64), patterns, median,
                   arrays["spread"])
