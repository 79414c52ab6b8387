"""A worker's backlog merges queued executions by defer key (cfstream.scheduling.backlog)."""

from __future__ import annotations

from dataclasses import dataclass

from cfstream.scheduling.backlog import Backlog, Merge


@dataclass(frozen=True)
class Item:
    id: str
    key: str
    submitted_ms: int


def drain(backlog: Backlog[Item]) -> list[str]:
    out = []
    while (item := backlog.pop()) is not None:
        out.append(item.id)
    return out


def test_empty_backlog_pops_nothing() -> None:
    backlog: Backlog[Item] = Backlog()
    assert len(backlog) == 0
    assert backlog.pop() is None


def test_items_come_out_in_arrival_order() -> None:
    backlog: Backlog[Item] = Backlog()
    for i in range(5):
        assert backlog.add(Item(f"e{i}", f"k{i}", submitted_ms=100 - i)) is None
    assert len(backlog) == 5
    assert drain(backlog) == ["e0", "e1", "e2", "e3", "e4"]
    assert len(backlog) == 0


def test_same_key_keeps_first_position_and_newest_call() -> None:
    backlog: Backlog[Item] = Backlog()
    first, other, newer = Item("a", "k", 10), Item("x", "other", 5), Item("b", "k", 20)
    backlog.add(first)
    backlog.add(other)

    assert backlog.add(newer) == Merge(loser=first, winner=newer)
    assert len(backlog) == 2
    assert drain(backlog) == ["b", "x"]  # the busy key is not pushed back behind "other"


def test_older_arrival_loses_to_the_queued_call() -> None:
    backlog: Backlog[Item] = Backlog()
    queued, late = Item("b", "k", 20), Item("a", "k", 10)
    backlog.add(queued)

    assert backlog.add(late) == Merge(loser=late, winner=queued)
    assert drain(backlog) == ["b"]


def test_redelivered_duplicate_has_no_winner() -> None:
    backlog: Backlog[Item] = Backlog()
    item = Item("a", "k", 10)
    backlog.add(item)

    merge = backlog.add(Item("a", "k", 10))
    assert merge is not None
    assert merge.winner is None
    assert merge.loser == item
    assert drain(backlog) == ["a"]


def test_different_keys_never_merge() -> None:
    backlog: Backlog[Item] = Backlog()
    assert backlog.add(Item("a", "k1", 10)) is None
    assert backlog.add(Item("b", "k2", 10)) is None
    assert backlog.add(Item("c", "k3", 5)) is None
    assert drain(backlog) == ["a", "b", "c"]


def test_popped_item_no_longer_merges() -> None:
    # A running execution has left the backlog: a newer call with its key queues on its own.
    backlog: Backlog[Item] = Backlog()
    backlog.add(Item("a", "k", 10))
    assert backlog.pop() == Item("a", "k", 10)
    assert backlog.add(Item("b", "k", 20)) is None
    assert drain(backlog) == ["b"]


def test_drop_removes_and_returns_rejected_items_keeping_the_rest_in_order() -> None:
    backlog: Backlog[Item] = Backlog()
    items = [Item(f"e{i}", f"p{i % 2}:k{i}", i) for i in range(6)]
    for item in items:
        backlog.add(item)

    gone = backlog.drop(lambda item: item.key.startswith("p0:"))

    assert gone == [items[1], items[3], items[5]]
    assert len(backlog) == 3
    assert drain(backlog) == ["e0", "e2", "e4"]


def test_drop_keeping_everything_removes_nothing() -> None:
    backlog: Backlog[Item] = Backlog()
    backlog.add(Item("a", "k", 1))
    assert backlog.drop(lambda item: True) == []
    assert drain(backlog) == ["a"]
