"""Execution ids: UUIDv7, so an id alone says when its call was submitted (to the millisecond).

Ids from one process increase strictly with time, also within one millisecond (RFC 9562's
counter method):
the processor orders calls by (submitted_ms, id), so of several calls a process makes in the same
millisecond the last one made is the latest.
"""

from __future__ import annotations

import itertools
import os
import threading
import uuid

from cfstream import clock

_COUNTER_BITS = 42  # rand_a (12 bits) and the top 30 bits of rand_b
_RANDOM_BITS = 32  # the rest of rand_b
# Random words fetched from the OS per system call: one call per id cost a fifth of a submit.
_POOL_WORDS = 1024  # a power of two

# No lock per id: next() on an itertools.count is atomic, and the lock is taken only to start a
# new millisecond (a lock per id cost as much as the rest of the id).
_lock = threading.Lock()
_millisecond: tuple[int, str, itertools.count[int]] = (-1, "", itertools.count())  # text, counter
_middle = (-1, "")  # (counter >> 16, its text "7ccc-cccc-"): changes every 65536 ids
_pool = memoryview(os.urandom(4 * _POOL_WORDS)).cast("I")
_taken = itertools.count()  # the word of _pool an id takes; the one that takes word 0 refills


def new_execution_id(now_ms: int | None = None) -> str:
    """A fresh UUIDv7: 48-bit Unix milliseconds, a counter seeded at random each millisecond,
    then random bits."""
    ms = clock.now_ms() if now_ms is None else now_ms
    millisecond = _millisecond
    if millisecond[0] != ms:
        millisecond = _start_millisecond(ms)
    counter = next(millisecond[2])
    middle = _middle
    if middle[0] != counter >> 16:
        middle = _middle_text(counter >> 16)
    index = next(_taken) & (_POOL_WORDS - 1)
    if index == 0:
        _refill_pool()
    rand = _pool[index]
    return f"{millisecond[1]}{middle[1]}{(counter & 0xFFFF) << _RANDOM_BITS | rand:012x}"


def _start_millisecond(ms: int) -> tuple[int, str, itertools.count[int]]:
    global _millisecond
    with _lock:
        if _millisecond[0] != ms:
            # Seeded below half the range so a burst within one millisecond cannot overflow it.
            seed = int.from_bytes(os.urandom(6), "big") >> (48 - _COUNTER_BITS + 1)
            text = "%08x-%04x-" % ((ms >> 16) & 0xFFFFFFFF, ms & 0xFFFF)
            _millisecond = (ms, text, itertools.count(seed))
        return _millisecond


def _middle_text(high: int) -> tuple[int, str]:
    """Version 7 and the counter's top 12 bits (rand_a), then the RFC 4122 variant and the next
    14 bits of the counter."""
    global _middle
    _middle = (high, "%04x-%04x-" % (0x7000 | high >> 14, 0x8000 | high & 0x3FFF))
    return _middle


def _refill_pool() -> None:
    global _pool
    _pool = memoryview(os.urandom(4 * _POOL_WORDS)).cast("I")


def _forget_after_fork() -> None:
    """A forked child must not reuse its parent's random words or counter."""
    global _lock, _millisecond, _taken
    _lock = threading.Lock()
    _millisecond = (-1, "", itertools.count())
    _taken = itertools.count()


os.register_at_fork(after_in_child=_forget_after_fork)


def submitted_ms(execution_id: str) -> int | None:
    """The submit time carried by a UUIDv7 id, or None for any other kind of id."""
    try:
        value = uuid.UUID(execution_id)
    except ValueError:
        return None
    if value.version != 7:
        return None
    return value.int >> 80
