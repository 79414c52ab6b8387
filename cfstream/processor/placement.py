"""Where librdkafka's cooperative-sticky assignor will put a partition next.

A standby replica only helps if it sits where the partition goes when its owner leaves or dies,
and a joining replica can only warm up what it is about to get. librdkafka has no pluggable
assignors, so cfstream cannot choose; it predicts instead. This module replays the assignor of
librdkafka 2.16.0 (``rd_kafka_sticky_assignor_assign_cb`` in ``rdkafka_sticky_assignor.c``)
plus the cooperative protocol's revoke-then-assign rounds, for one topic whose members all
subscribe alike and set no ``client.rack``:

- ``heirs``: survivors keep what they own; the orphans go out in descending partition order,
  each to the survivor with the fewest partitions (ties: the smaller member id, bytewise).
- ``after_join``: the assignor walks the partitions round robin from the most loaded member
  (ties: the larger id), lowest first, and moves each to the least loaded member while its
  owner holds 2 or more than that member. The cooperative protocol revokes the moved
  partitions first; the next round hands them out like orphans (from a balanced group they
  land where the walk meant them to).

tests/processor/test_placement_librdkafka.py pins the model to the installed librdkafka. The
model can still miss: a partition claimed by two members right after a rebalance, several
members lost in one rebalance, mixed librdkafka versions during an upgrade, KIP-848 (there the
broker assigns). A miss costs what cfstream pays without standbys: the new owner restores the
partition from its changelog.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from itertools import combinations

from cfstream.kafka.config import consumer_protocol
from cfstream.settings import Settings

# Enough for any snapshot the assignor itself produced (it converges in two rounds: assign what
# nobody owns and revoke what moves, then assign the revoked); a bound, not a tuning knob.
MAX_ROUNDS = 8

Owners = dict[int, str]


def by_id(members: Iterable[str]) -> list[str]:
    """Member ids in the order librdkafka breaks ties: ``strcmp`` on their bytes."""
    return sorted(members, key=str.encode)


def joining_id(instance_id: str) -> str:
    """A stand-in for the member id a static member gets when it joins: the broker names it
    ``<instance id>-<uuid>``, and the stand-in sorts the same against every other member id
    that does not itself start with ``<instance id>-``."""
    return f"{instance_id}-"


def heirs(assignment: Mapping[str, Collection[int]], owner: str) -> dict[int, str]:
    """For each partition of ``owner``, the member that gets it if ``owner`` leaves or dies
    (alone): in descending partition order, the survivor then holding the fewest."""
    survivors = {m: ps for m, ps in assignment.items() if m != owner}
    if not survivors:
        return {}
    after = _settle(survivors, _partitions(assignment))
    return {p: after[p] for p in sorted(assignment.get(owner, ()))}


def standbys(assignment: Mapping[str, Collection[int]], k: int) -> dict[int, list[str]]:
    """For every partition, its ``k`` standby members, best first. Standby #1 gets the partition
    if its owner goes; #j gets it if the owner and standbys #1..#j-1 all go at once. At most
    ``members - 1`` standbys."""
    k = min(k, len(assignment) - 1)
    partitions = _partitions(assignment)
    owners = _owners(assignment)
    after: dict[frozenset[str], Owners] = {}  # the group after these members went
    result: dict[int, list[str]] = {}
    for p in partitions:
        chain = [owners[p]]
        while len(chain) <= k:
            gone = frozenset(chain)
            if gone not in after:
                rest = {m: ps for m, ps in assignment.items() if m not in gone}
                after[gone] = _settle(rest, partitions)
            chain.append(after[gone][p])
        result[p] = chain[1:]
    return result


def after_join(assignment: Mapping[str, Collection[int]], newcomer: str) -> dict[str, list[int]]:
    """The assignment once ``newcomer`` (owning nothing) has joined and the cooperative
    rebalance has finished."""
    if newcomer in assignment:
        raise ValueError(f"{newcomer!r} is already a member")
    owned: dict[str, Collection[int]] = {**assignment, newcomer: ()}
    after = _settle(owned, _partitions(assignment))
    return {m: sorted(p for p, o in after.items() if o == m) for m in by_id(owned)}


def _partitions(assignment: Mapping[str, Collection[int]]) -> list[int]:
    """The topic's partitions: the snapshot of a stable group covers them all."""
    return sorted({p for ps in assignment.values() for p in ps})


def _owners(assignment: Mapping[str, Collection[int]]) -> Owners:
    return {p: m for m, ps in assignment.items() for p in ps}


def _settle(owned: Mapping[str, Collection[int]], partitions: list[int]) -> Owners:
    """Rebalance rounds until none revokes anything: the cooperative protocol grants a partition
    only if nobody else owns it yet; one that moves is revoked, and the next round assigns it."""
    members = list(owned)
    before = _owners(owned)
    plan = _assign(members, before, partitions)
    for _ in range(MAX_ROUNDS):
        granted = {p: m for p, m in plan.items() if before.get(p, m) == m}
        if granted == plan:
            break
        before = granted
        plan = _assign(members, before, partitions)
    return plan


def _assign(members: list[str], owned: Owners, partitions: list[int]) -> Owners:
    """One run of ``rd_kafka_sticky_assignor_assign_cb`` (with ``balance``) for members that
    subscribe alike: who gets each partition, given who claims to own it."""
    order = _reassignment_order(members, owned, partitions)
    owners = {p: owned[p] for p in partitions if p in owned}
    count = _counts(members, owners)
    initializing = not owners
    unassigned = [p for p in order if p not in owners]
    for p in unassigned:  # maybeAssign
        least = _least(count)
        owners[p] = least
        count[least] += 1
    before = dict(owners)
    moves: dict[int, tuple[str, str]] = {}  # PartitionMovements: partition -> (first src, dst)
    if unassigned:
        _reassign(unassigned, owners, count, moves)
    moved = _reassign(order, owners, count, moves)
    if moved and not initializing:
        if _imbalance(count) >= _imbalance(_counts(members, before)):
            return before  # no better balanced: keep the assignment before the moves
    return owners


def _reassignment_order(members: list[str], owned: Owners, partitions: list[int]) -> list[int]:
    """``sortPartitions`` for identical subscriptions: the owned partitions round robin from the
    member holding the most (ties: the larger id), lowest first; then the unowned ones in
    ``rd_map`` order, which is reverse insertion, so descending. If nobody owns anything:
    ascending."""
    held = {m: sorted(p for p, o in owned.items() if o == m) for m in members}
    order: list[int] = []
    while any(held.values()):
        most = max((m for m in held if held[m]), key=lambda m: (len(held[m]), m.encode()))
        order.append(held[most].pop(0))
    if not order:
        return list(partitions)
    taken = set(order)
    return order + [p for p in reversed(partitions) if p not in taken]


def _reassign(
    order: list[int], owners: Owners, count: dict[str, int], moves: dict[int, tuple[str, str]]
) -> bool:
    """``performReassignments``: walk ``order`` until balanced, moving a partition to the least
    loaded member when its owner holds 2 or more than that member; repeat while it moved any.
    Returns whether it moved any."""
    performed = False
    while True:
        modified = False
        for p in order:
            if max(count.values()) - min(count.values()) <= 1:
                break
            least = _least(count)
            if count[owners[p]] > count[least] + 1:
                _move(p, least, owners, count, moves)
                performed = modified = True
        if not modified:
            return performed


def _move(
    p: int, to: str, owners: Owners, count: dict[str, int], moves: dict[int, tuple[str, str]]
) -> None:
    """Move ``p`` to ``to``, or rather a partition that already moved from ``to`` to ``p``'s
    owner, which goes back (``getTheActualPartitionToBeMoved``; librdkafka, unlike Java, looks
    for that pair with the current owner, not the partition's first one)."""
    src = owners[p]
    back = [q for q, pair in moves.items() if pair == (to, src)]
    if back:
        p = back[0]
    if p in moves:
        first, _ = moves.pop(p)
        if first != to:
            moves[p] = (first, to)
    else:
        moves[p] = (src, to)
    owners[p] = to
    count[src] -= 1
    count[to] += 1


def _least(count: dict[str, int]) -> str:
    """The head of ``sortedCurrentSubscriptions``: fewest partitions, then the smaller id."""
    return min(count, key=lambda m: (count[m], m.encode()))


def _counts(members: list[str], owners: Owners) -> dict[str, int]:
    count = dict.fromkeys(members, 0)
    for m in owners.values():
        count[m] += 1
    return count


def _imbalance(count: dict[str, int]) -> int:
    """``getBalanceScore``: the sum of the differences over all pairs of members."""
    return sum(abs(a - b) for a, b in combinations(count.values(), 2))


def predicts_assignment(settings: Settings) -> bool:
    """Whether this replica keeps standby copies and warms up before it joins: only where it can
    tell where partitions will go (librdkafka's cooperative-sticky on the classic protocol; under
    KIP-848 the broker's assignor places them)."""
    return ((settings.standby_replicas > 0 or settings.warmup_timeout > 0)
            and not consumer_protocol(settings))
