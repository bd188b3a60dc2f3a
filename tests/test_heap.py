"""The collector's pause around a run's big graph (``reconciler.heap``)."""

from __future__ import annotations

import gc

import pytest

from reconciler import heap
from reconciler.heap import collector_paused


def test_no_collection_inside_and_the_collector_back_after_even_on_error() -> None:
    assert gc.isenabled()
    with pytest.raises(ValueError), collector_paused():
        assert not gc.isenabled()
        with collector_paused():  # nested: the outer block resumes it
            assert not gc.isenabled()
        assert not gc.isenabled()
        raise ValueError
    assert gc.isenabled()


def test_a_big_graph_left_by_a_pause_is_frozen_and_a_small_one_left_to_the_collector(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(heap, "FREEZE_AT", 50_000)
    gc.collect()
    frozen = gc.get_freeze_count()
    with collector_paused():
        small = [[] for _ in range(1_000)]
    assert gc.get_freeze_count() == frozen  # collected as usual, cycles and all
    with collector_paused():
        big = [[] for _ in range(60_000)]
    assert gc.get_freeze_count() >= frozen + 60_000  # not walked again by every collection
    assert gc.isenabled()
    del small, big  # reference counting frees frozen objects all the same
