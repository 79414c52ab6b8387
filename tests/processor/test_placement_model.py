"""The placement model (cfstream.processor.placement) on hand-worked cases; the same model on
librdkafka's real assignor is tests/processor/test_placement_librdkafka.py."""

from __future__ import annotations

import random

import pytest

from cfstream.processor.placement import after_join, by_id, heirs, joining_id, standbys

# 8 partitions, as a fresh group of three gets them: round robin in member id order.
THREE = {"a": [0, 3, 6], "b": [1, 4, 7], "c": [2, 5]}
# 8 partitions, two each.
FOUR = {"a": [0, 4], "b": [1, 5], "c": [2, 6], "d": [3, 7]}


def round_robin(members: list[str], partitions: int) -> dict[str, list[int]]:
    return {m: list(range(i, partitions, len(members))) for i, m in enumerate(members)}


def balanced(assignment: dict[str, list[int]]) -> bool:
    counts = [len(ps) for ps in assignment.values()]
    return max(counts) - min(counts) <= 1


def test_orphans_go_in_descending_order_each_to_the_survivor_with_the_fewest() -> None:
    # a leaves: 6 -> c (2 < 3), 3 -> b (3 = 3, b < c), 0 -> c (3 < 4)
    assert heirs(THREE, "a") == {0: "c", 3: "b", 6: "c"}
    # b leaves: 7 -> c (2 < 3), 4 -> a (3 = 3, a < c), 1 -> c (3 < 4)
    assert heirs(THREE, "b") == {1: "c", 4: "a", 7: "c"}
    # c leaves: 5 -> a (3 = 3, a < b), 2 -> b (3 < 4)
    assert heirs(THREE, "c") == {2: "b", 5: "a"}


def test_ties_go_to_the_smaller_id_by_bytes_not_by_locale() -> None:
    # strcmp: "B" (0x42) < "a" (0x61) < "b"; "é" is two bytes from 0xc3, after every ASCII id
    assignment = {"a": [0], "B": [1], "é": [2], "x": [3, 4]}
    assert heirs(assignment, "x") == {4: "B", 3: "a"}
    assert by_id(["b", "é", "a", "B"]) == ["B", "a", "b", "é"]


def test_survivors_keep_what_they_own_and_stay_balanced() -> None:
    rng = random.Random(7)
    for partitions in (8, 24, 25, 30):
        for size in range(2, 7):
            members = [f"m{rng.randrange(1000):03d}-{i}" for i in range(size)]
            assignment = round_robin(members, partitions)
            owner = rng.choice(members)
            after = {m: list(ps) for m, ps in assignment.items() if m != owner}
            for p, heir in heirs(assignment, owner).items():
                after[heir].append(p)
            assert balanced(after)
            assert sorted(p for ps in after.values() for p in ps) == list(range(partitions))


def test_a_non_member_or_the_last_member_has_no_heirs() -> None:
    assert heirs(THREE, "z") == {}
    assert heirs({"a": [0, 1]}, "a") == {}
    assert heirs({}, "a") == {}


def test_the_first_standby_is_the_heir() -> None:
    first = {p: chain[0] for p, chain in standbys(THREE, 1).items()}
    expected = {p: h for owner in THREE for p, h in heirs(THREE, owner).items()}
    assert first == expected


def test_a_later_standby_gets_the_partition_if_the_owner_and_the_earlier_standbys_go() -> None:
    chains = standbys(FOUR, 2)
    # a goes: 4 -> b, 0 -> c (all at 2, ids break the ties)
    # a and c go: b and d hold 2 each; 6 -> b, 4 -> d, 2 -> b, 0 -> d
    assert chains[0] == ["c", "d"]
    # a and b go: c and d hold 2 each; 5 -> c, 4 -> d, 1 -> c, 0 -> d
    assert chains[4] == ["b", "d"]
    for p, chain in chains.items():
        owner = next(m for m, ps in FOUR.items() if p in ps)
        assert len(set(chain)) == 2 and owner not in chain


def test_there_are_at_most_members_minus_one_standbys() -> None:
    for p, chain in standbys(THREE, 5).items():
        owner = next(m for m, ps in THREE.items() if p in ps)
        assert sorted(chain + [owner]) == ["a", "b", "c"]
    assert standbys({"a": [0, 1, 2]}, 1) == {0: [], 1: [], 2: []}
    assert standbys(THREE, 0) == {p: [] for p in range(8)}
    assert standbys({}, 1) == {}


def test_every_replica_computes_the_same_placement_from_the_same_snapshot() -> None:
    assignment = round_robin(["p-2-c1", "p-0-9f", "p-1-4a", "p-3-07"], 25)
    rng = random.Random(3)
    for _ in range(5):
        members = list(assignment)
        rng.shuffle(members)
        shuffled = {m: set(reversed(assignment[m])) for m in members}
        assert standbys(shuffled, 2) == standbys(assignment, 2)
        assert after_join(shuffled, "p-4-") == after_join(assignment, "p-4-")


def test_a_newcomer_takes_from_the_most_loaded_lowest_partition_first() -> None:
    # walk: b (3, the larger id of the two with 3) gives 1, a gives 0; then 2, 2, 2, 2
    assert after_join(THREE, "d") == {"a": [3, 6], "b": [4, 7], "c": [2, 5], "d": [0, 1]}
    # 8 each: the walk goes c, b, a (larger id first), lowest first, until the newcomer has 6
    after = after_join(round_robin(["a", "b", "c"], 24), "d")
    assert after["d"] == [0, 1, 2, 3, 4, 5]
    assert after["a"] == [6, 9, 12, 15, 18, 21]


def test_after_a_join_old_members_only_give_and_the_group_is_balanced() -> None:
    rng = random.Random(11)
    for partitions in (8, 24, 25, 30):
        for size in range(1, 6):
            assignment = round_robin(
                [f"m{rng.randrange(1000):03d}-{i}" for i in range(size)], partitions
            )
            after = after_join(assignment, "new")
            assert balanced(after)
            assert all(set(after[m]) <= set(ps) for m, ps in assignment.items())
            assert sorted(p for ps in after.values() for p in ps) == list(range(partitions))


def test_a_member_cannot_join_twice() -> None:
    with pytest.raises(ValueError, match="already a member"):
        after_join(THREE, "a")
    assert after_join({}, "a") == {"a": []}


def test_a_joining_static_member_sorts_where_its_member_id_will() -> None:
    stand_in = joining_id("processor-1")
    ids = [
        "processor-0-5d1c2b7e-8a4f-4e3a-9c1b-0e6f5a2d4c3b",
        "processor-2-0a9b8c7d-6e5f-4a3b-8c2d-1e0f9a8b7c6d",
        "processor-10-ffffffff-ffff-4fff-bfff-ffffffffffff",
    ]
    real = "processor-1-00000000-0000-4000-8000-000000000000"
    assert by_id([*ids, stand_in]).index(stand_in) == by_id([*ids, real]).index(real)
