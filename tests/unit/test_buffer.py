"""Replay buffer: bounds, FIFO order, thread safety, flagged store."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from streamae.buffer import ReplayBuffer


def batch(start: int, n: int, shape: tuple[int, ...] = (4,)) -> np.ndarray:
    """Items whose every entry is their index, so order is easy to check."""
    ids = np.arange(start, start + n, dtype=np.float32)
    return np.broadcast_to(ids.reshape(-1, *([1] * len(shape))), (n, *shape)).copy()


def ids(items: np.ndarray) -> list[int]:
    return items.reshape(len(items), -1)[:, 0].astype(int).tolist()


def test_empty():
    buffer = ReplayBuffer(max_items=10, max_bytes=1 << 20)
    assert len(buffer) == 0
    assert buffer.nbytes == 0
    assert buffer.snapshot().shape[0] == 0
    assert buffer.item_shape is None


def test_count_bound_drops_oldest_first():
    buffer = ReplayBuffer(max_items=5, max_bytes=1 << 20)
    buffer.add(batch(0, 3))
    buffer.add(batch(3, 4))
    assert len(buffer) == 5
    assert ids(buffer.snapshot()) == [2, 3, 4, 5, 6]
    assert buffer.added_total == 7
    assert buffer.nbytes == 5 * 4 * 4
    buffer.add(batch(7, 12))  # bigger than the buffer: only the newest stay
    assert ids(buffer.snapshot()) == [14, 15, 16, 17, 18]
    assert buffer.added_total == 19


def test_byte_bound():
    buffer = ReplayBuffer(max_items=1000, max_bytes=3 * 16 * 4 + 10)  # room for 3 items
    buffer.add(batch(0, 5, shape=(4, 4)))
    assert len(buffer) == 3
    assert buffer.nbytes <= 3 * 16 * 4 + 10
    assert ids(buffer.snapshot()) == [2, 3, 4]


def test_snapshot_is_a_float32_copy_oldest_first():
    buffer = ReplayBuffer(max_items=4, max_bytes=1 << 20)
    buffer.add(batch(0, 2, shape=(2, 3)).astype(np.float64))
    snap = buffer.snapshot()
    assert snap.dtype == np.float32
    assert snap.shape == (2, 2, 3)
    snap[:] = -1
    assert ids(buffer.snapshot()) == [0, 1]


def test_shape_must_not_change_until_clear():
    buffer = ReplayBuffer(max_items=4, max_bytes=1 << 20)
    buffer.add(batch(0, 2, shape=(4,)))
    with pytest.raises(ValueError):
        buffer.add(batch(0, 2, shape=(5,)))
    with pytest.raises(ValueError):
        buffer.add(np.zeros(3, np.float32))  # not a batch
    buffer.clear()
    assert len(buffer) == 0
    buffer.add(batch(0, 2, shape=(5,)))
    assert buffer.item_shape == (5,)
    assert buffer.added_total == 4


def test_item_larger_than_byte_bound_is_not_kept():
    buffer = ReplayBuffer(max_items=10, max_bytes=8)
    buffer.add(batch(0, 3, shape=(4,)))
    assert len(buffer) == 0
    assert buffer.added_total == 3


def test_flagged_store_is_separate_and_bounded():
    buffer = ReplayBuffer(max_items=100, max_bytes=1 << 20, max_flagged=3)
    buffer.add(batch(0, 2))
    buffer.add_flagged(batch(100, 5))
    assert ids(buffer.flagged_snapshot()) == [102, 103, 104]
    assert len(buffer) == 2
    assert buffer.added_total == 2
    buffer.clear()
    assert len(buffer.flagged_snapshot()) == 0


def test_thread_safety_smoke():
    buffer = ReplayBuffer(max_items=500, max_bytes=1 << 22)
    errors: list[BaseException] = []
    stop = threading.Event()

    def writer(offset: int) -> None:
        try:
            for i in range(200):
                buffer.add(batch(offset + i * 8, 8, shape=(3, 2)))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    def reader() -> None:
        try:
            while not stop.is_set():
                snap = buffer.snapshot()
                if len(snap) == 0:
                    continue
                assert snap.shape[1:] == (3, 2) and len(snap) <= 500
                # every item is whole: a torn write would mix ids inside one item
                flat = snap.reshape(len(snap), -1)
                assert (flat == flat[:, :1]).all()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k * 100_000,)) for k in range(2)]
    read = threading.Thread(target=reader)
    read.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stop.set()
    read.join()
    assert not errors
    assert buffer.added_total == 2 * 200 * 8
    assert len(buffer) == 500


def test_constructor_validation():
    with pytest.raises(ValueError):
        ReplayBuffer(max_items=0, max_bytes=10)
