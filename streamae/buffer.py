"""A bounded, thread-safe store of recent windows that were scored normal.

The scoring loop adds batches; the background retrainer takes a :meth:`ReplayBuffer.snapshot`
to train a challenger on recent normal data. Items live in a preallocated numpy ring (one
allocation, sized on the first add from the item shape), so adding a batch is two slice
copies and the memory bound holds exactly. Oldest items go first when ``max_items`` or
``max_bytes`` would be exceeded.

A second, small ring keeps recent *flagged* items, so a challenger can be checked to still
flag what the champion flagged before it is swapped in.
"""

from __future__ import annotations

import logging
import threading

import numpy as np

logger = logging.getLogger(__name__)


class _Ring:
    """A FIFO of same-shaped float32 items in one array; not locked (the owner locks)."""

    def __init__(self, max_items: int, max_bytes: int) -> None:
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._data: np.ndarray | None = None
        self._count = 0
        self._next = 0

    def __len__(self) -> int:
        return self._count

    @property
    def item_shape(self) -> tuple[int, ...] | None:
        return None if self._data is None else tuple(self._data.shape[1:])

    @property
    def nbytes(self) -> int:
        return 0 if self._data is None else self._count * self._data[0:1].nbytes

    def add(self, items: np.ndarray) -> None:
        if self._data is None:
            self._allocate(items.shape[1:])
        assert self._data is not None
        if items.shape[1:] != self._data.shape[1:]:
            raise ValueError(f"item shape {items.shape[1:]} != held {self._data.shape[1:]}")
        capacity = self._data.shape[0]
        new = items[-capacity:] if capacity else items[:0]
        n = new.shape[0]
        first = min(n, capacity - self._next)
        self._data[self._next : self._next + first] = new[:first]
        self._data[: n - first] = new[first:]
        if capacity:
            self._next = (self._next + n) % capacity
        self._count = min(capacity, self._count + n)

    def _allocate(self, shape: tuple[int, ...]) -> None:
        """Size the ring from the first item: the tighter of the two bounds wins."""
        item_bytes = int(np.prod(shape, dtype=np.int64)) * 4
        capacity = min(self.max_items, self.max_bytes // max(item_bytes, 1))
        if capacity == 0:
            logger.warning(
                "replay buffer holds nothing item_bytes=%d max_bytes=%d", item_bytes, self.max_bytes
            )
        self._data = np.empty((capacity, *shape), dtype=np.float32)

    def snapshot(self) -> np.ndarray:
        if self._data is None:
            return np.zeros((0,), dtype=np.float32)
        if self._count < self._data.shape[0]:
            return self._data[: self._count].copy()
        return np.concatenate([self._data[self._next :], self._data[: self._next]])

    def clear(self) -> None:
        self._data = None  # the next add may bring a new shape (a new model's input)
        self._count = self._next = 0


class ReplayBuffer:
    """Recent normal items (B, *shape) float32 for retraining; safe to share across threads."""

    def __init__(self, max_items: int, max_bytes: int, max_flagged: int = 256) -> None:
        if max_items < 1 or max_bytes < 1 or max_flagged < 0:
            raise ValueError(f"bounds must be positive: {max_items}, {max_bytes}, {max_flagged}")
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._items = _Ring(max_items, max_bytes)
        self._flagged = _Ring(max_flagged, max_bytes)
        self._added_total = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    @property
    def nbytes(self) -> int:
        """Bytes held by normal items (the flagged store is bounded separately)."""
        with self._lock:
            return self._items.nbytes

    @property
    def added_total(self) -> int:
        """Items ever passed to :meth:`add`, kept or not."""
        with self._lock:
            return self._added_total

    @property
    def item_shape(self) -> tuple[int, ...] | None:
        """Shape of one item, or None before the first add."""
        with self._lock:
            return self._items.item_shape

    def add(self, items: np.ndarray) -> None:
        """Append a batch (B, *shape); raises ValueError for another item shape."""
        batch = _batch(items)
        with self._lock:
            self._items.add(batch)
            self._added_total += batch.shape[0]

    def snapshot(self) -> np.ndarray:
        """A copy of every item held, oldest first (shape (N, *shape); (0,) when empty)."""
        with self._lock:
            return self._items.snapshot()

    def add_flagged(self, items: np.ndarray) -> None:
        """Remember recent flagged items (B, *shape)."""
        batch = _batch(items)
        with self._lock:
            self._flagged.add(batch)

    def flagged_snapshot(self) -> np.ndarray:
        """A copy of the flagged items held, oldest first."""
        with self._lock:
            return self._flagged.snapshot()

    def clear(self) -> None:
        """Forget all items, normal and flagged (counters are totals and stay)."""
        with self._lock:
            self._items.clear()
            self._flagged.clear()


def _batch(items: np.ndarray) -> np.ndarray:
    """A batch as a float32 array with a leading batch axis."""
    array = np.asarray(items, dtype=np.float32)
    if array.ndim < 2:
        raise ValueError(f"expected a batch (B, *shape), got shape {array.shape}")
    return array
