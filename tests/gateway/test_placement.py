"""The placement table of shared agent types, by example: fairness of the
strategies, drains, the bound on placed keys, and what a placed key costs."""

from __future__ import annotations

import math
import tracemalloc

import pytest

from agentwire._gateway._placement import (
    HashPlacement,
    LeastLoadedPlacement,
    PlacementTable,
    placement_strategy,
)


def table_with(*workers: str, strategy: str = "hash", max_keys: int = 1_000_000) -> PlacementTable:
    table = PlacementTable(placement_strategy(strategy), max_keys=max_keys)
    for worker in workers:
        table.join(worker, "echo")
    return table


def test_hash_placement_spreads_keys_within_four_standard_deviations_of_fair() -> None:
    table = table_with("w1", "w2", "w3", "w4")
    keys = 20_000
    for i in range(keys):
        table.place("echo", f"user-{i}")
    fair = keys / 4
    bound = 4 * math.sqrt(keys * 0.25 * 0.75)
    shares = table.statistics()["echo"].keys
    assert sum(shares.values()) == keys
    assert all(abs(share - fair) <= bound for share in shares.values()), shares


def test_least_loaded_placement_keeps_workers_within_a_few_keys_of_each_other() -> None:
    table = PlacementTable(LeastLoadedPlacement(seed=1))
    for worker in ("w1", "w2", "w3", "w4"):
        table.join(worker, "echo")
    for i in range(4000):
        table.place("echo", f"k{i}")
    shares = table.statistics()["echo"].keys.values()
    assert max(shares) - min(shares) <= 40, shares


def test_a_joiner_takes_only_new_keys_and_a_leaver_gives_its_keys_back() -> None:
    table = table_with("w1", "w2")
    before = {f"k{i}": table.place("echo", f"k{i}") for i in range(200)}
    table.join("w3", "echo")
    assert {k: table.place("echo", k) for k in before} == before
    assert table.place("echo", "fresh-0") is not None
    new_on_w3 = [i for i in range(300) if table.place("echo", f"new{i}") == "w3"]
    assert new_on_w3  # the joiner does take new keys
    lost = [k for k, w in before.items() if w == "w1"]
    assert table.leave("w1") == table.keys_replaced > len(lost)
    assert table.statistics()["echo"].workers == 2
    for key in lost:
        assert table.owner("echo", key) is None
        assert table.place("echo", key) in ("w2", "w3")
    table.check_invariants()


def test_a_draining_worker_keeps_its_keys_and_gets_no_new_ones() -> None:
    table = table_with("w1", "w2")
    mine = [f"k{i}" for i in range(100) if table.place("echo", f"k{i}") == "w1"]
    assert table.drain("w1")
    assert all(table.place("echo", k) == "w1" for k in mine)
    assert all(table.place("echo", f"n{i}") == "w2" for i in range(100))
    assert table.drain("w2")
    assert table.place("echo", "another") is None
    assert "draining" in table.why_not("echo")
    assert not table.drain("stranger")


def test_new_keys_beyond_max_keys_are_refused_until_a_worker_leaves() -> None:
    table = table_with("w1", "w2", max_keys=3)
    owners = [table.place("echo", k) for k in ("a", "b", "c")]
    assert table.place("echo", "d") is None
    assert "max_placed_keys" in table.why_not("echo")
    assert table.place("echo", "a") == owners[0]  # placed keys still route
    table.leave("w1")
    assert table.place("echo", "d") is not None


def test_a_type_without_workers_places_nothing() -> None:
    table = table_with()
    assert table.place("echo", "k") is None
    assert "no worker" in table.why_not("echo")


def test_unknown_strategy_names_are_refused() -> None:
    with pytest.raises(ValueError, match="hash"):
        placement_strategy("random")
    strategy = HashPlacement()
    assert placement_strategy(strategy) is strategy


def test_a_placed_key_costs_under_200_bytes() -> None:
    table = table_with("w1", "w2", "w3", "w4")
    keys = [f"conversation-{i:08d}" for i in range(20_000)]  # the caller's strings
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for key in keys:
            table.place("echo", key)
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert (after - before) / len(keys) < 200
