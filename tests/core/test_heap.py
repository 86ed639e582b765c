"""Freezing the start-up heap: what is alive moves out of the collector's walks, new garbage
cycles are still collected."""

from __future__ import annotations

import gc
import weakref

from core.heap import freeze_startup_heap


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def test_start_up_objects_are_frozen_and_later_cycles_still_collected() -> None:
    try:
        freeze_startup_heap()
        assert gc.get_freeze_count() > 1000  # the modules, classes and objects of the test run
        first, second = Node(), Node()
        first.other, second.other = second, first  # a cycle made after the freeze
        alive = weakref.ref(first)
        del first, second
        gc.collect()
        assert alive() is None
    finally:
        gc.unfreeze()
