"""The daemon's collector settings: rarer collections, start-up objects frozen."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from agent.daemon.gctune import GEN0_THRESHOLD, collector_paused, tune_gc


@pytest.fixture
def restore_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def test_tune_gc_freezes_what_is_loaded_and_collects_less_often(restore_gc: None) -> None:
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    tune_gc()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold()[0] == GEN0_THRESHOLD > 700


def test_the_collector_is_paused_for_a_job_and_restored_after(restore_gc: None) -> None:
    gc.enable()
    with pytest.raises(RuntimeError), collector_paused():
        assert not gc.isenabled()
        raise RuntimeError("the job failed")
    assert gc.isenabled()
    gc.disable()  # paused by someone else before: left so
    try:
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()
