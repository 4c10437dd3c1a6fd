"""Garbage-collector pause watch and heap settling (conclave.ops.gcpause)."""

from __future__ import annotations

import asyncio
import gc

from conclave.ops.gcpause import (
    GC_PAUSE_SECONDS,
    NO_AUTOMATIC_FULL,
    YOUNG_THRESHOLD,
    PauseWatch,
    run_full_collections,
    settle_heap,
    tune_collector,
)
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


def test_tuning_stops_automatic_full_collections_and_returns_the_old_setting() -> None:
    previous = tune_collector()
    try:
        young, middle, full = gc.get_threshold()
        assert young == YOUNG_THRESHOLD and full == NO_AUTOMATIC_FULL and middle > 0
    finally:
        gc.set_threshold(*previous)
    assert gc.get_threshold() == previous


def test_full_collections_run_on_schedule() -> None:
    async def scenario() -> int:
        before = gc.get_stats()[2]["collections"]
        task = asyncio.create_task(run_full_collections(0.01))
        while gc.get_stats()[2]["collections"] < before + 2:
            await asyncio.sleep(0.01)
        task.cancel()
        return gc.get_stats()[2]["collections"] - before

    assert asyncio.run(asyncio.wait_for(scenario(), 10)) >= 2
