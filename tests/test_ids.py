"""Execution ids are UUIDv7 (cfstream.ids)."""

from __future__ import annotations

import os
import time
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cfstream.ids import new_execution_id, submitted_ms

MAX_MS = (1 << 48) - 1


def test_id_is_a_version_7_rfc_uuid() -> None:
    execution_id = new_execution_id()
    value = uuid.UUID(execution_id)
    assert value.version == 7
    assert value.variant == uuid.RFC_4122
    assert execution_id == str(value)  # canonical lower-case text, 36 characters


@given(st.integers(0, MAX_MS))
def test_submit_time_round_trips(ms: int) -> None:
    execution_id = new_execution_id(now_ms=ms)
    value = uuid.UUID(execution_id)
    assert value.version == 7
    assert value.variant == uuid.RFC_4122
    assert submitted_ms(execution_id) == ms


def test_default_time_is_now() -> None:
    before = int(time.time() * 1000)
    ms = submitted_ms(new_execution_id())
    after = int(time.time() * 1000)
    assert ms is not None and before <= ms <= after


def test_ids_are_unique_within_a_millisecond() -> None:
    ids = {new_execution_id(now_ms=1_700_000_000_000) for _ in range(1_000)}
    assert len(ids) == 1_000


@given(st.lists(st.integers(0, MAX_MS), min_size=2, max_size=20, unique=True))
def test_ids_sort_by_submit_time(times: list[int]) -> None:
    ids = [new_execution_id(now_ms=ms) for ms in times]
    assert [submitted_ms(i) for i in sorted(ids)] == sorted(times)


@pytest.mark.parametrize("other", [
    "3cf0f577-9ea8-4884-9210-9427cd82c5d2",  # uuid4
    "68df57de-f13d-11f1-85a0-02fc00000001",  # uuid1 (a time, but not milliseconds in front)
    "not-a-uuid", "", "00000000-0000-0000-0000-000000000000",
])
def test_other_ids_carry_no_submit_time(other: str) -> None:
    assert submitted_ms(other) is None


def test_ids_made_in_one_millisecond_increase_in_the_order_made() -> None:
    ids = [new_execution_id(1_000) for _ in range(5_000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_does_not_repeat_its_parents_ids() -> None:
    new_execution_id(2_000)  # parent and child go on in the same millisecond
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, ",".join(new_execution_id(2_000) for _ in range(3)).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 1_000).decode().split(",")
    os.close(read)
    parent = [new_execution_id(2_000) for _ in range(3)]
    assert len(child) == 3
    assert not set(child) & set(parent)
