from __future__ import annotations

import gc
import weakref

from streamae.pipeline import settle_heap


class _Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the collector frees it


def test_settling_the_heap_freezes_what_lives_and_frees_a_replaced_models_cycles():
    """The loop freezes the heap when it starts and after each model swap: what is alive
    then leaves the collector's walks, and a replaced model (frozen at the previous swap)
    must still be freed, not kept for the process's lifetime."""
    old = _Node()
    gone = weakref.ref(old)
    settle_heap()
    try:
        assert gc.get_freeze_count() > 0
        del old  # the swap drops the old model; its cycle sits in the frozen generation
        assert gone() is not None
        settle_heap()
        assert gone() is None
    finally:
        gc.unfreeze()
