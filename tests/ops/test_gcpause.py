"""Garbage-collector pause watch and heap settling (conclave.ops.gcpause)."""

from __future__ import annotations

import gc

from conclave.ops.gcpause import GC_PAUSE_SECONDS, PauseWatch, settle_heap
from conclave.ops.metrics import REGISTRY


def _count(generation: str) -> float:
    value = REGISTRY.get_sample_value("conclave_gc_pause_seconds_count", {"generation": generation})
    return value or 0.0


def test_every_collection_is_timed() -> None:
    watch = PauseWatch(slow=0.0)  # every pause counts as slow here
    before = _count("2")
    watch.install()
    try:
        watch.install()  # idempotent
        gc.collect()
    finally:
        watch.remove()
        watch.remove()
    assert _count("2") == before + 1
    gc.collect()  # removed: no longer counted
    assert _count("2") == before + 1
    assert GC_PAUSE_SECONDS is not None


def test_settle_heap_freezes_the_survivors() -> None:
    try:
        keep = [object() for _ in range(1000)]
        frozen = settle_heap()
        assert frozen == gc.get_freeze_count() > 0
        assert keep
    finally:
        gc.unfreeze()
