"""Execution ids: UUIDv7, so an id alone says when its call was submitted (to the millisecond).

Ids from one process increase strictly with time, also within one millisecond (RFC 9562's
counter method):
the processor orders calls by (submitted_ms, id), so of several calls a process makes in the same
millisecond the last one made is the latest.
"""

from __future__ import annotations

import os
import threading
import time
import uuid

_COUNTER_BITS = 42  # rand_a (12 bits) and the top 30 bits of rand_b
_RANDOM_BITS = 32  # the rest of rand_b
_lock = threading.Lock()
_last = (-1, 0)  # (ms, counter)


def new_execution_id(now_ms: int | None = None) -> str:
    """A fresh UUIDv7: 48-bit Unix milliseconds, a counter seeded at random each millisecond,
    then random bits."""
    global _last
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    with _lock:
        last_ms, last_counter = _last
        if ms == last_ms:
            counter = last_counter + 1
        else:
            # Seeded below half the range so a burst within one millisecond cannot overflow it.
            counter = int.from_bytes(os.urandom(6), "big") >> (48 - _COUNTER_BITS + 1)
        _last = (ms, counter)
    rand = int.from_bytes(os.urandom(4), "big")
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76  # version 7
    value |= (counter >> 30) << 64  # rand_a: the counter's top 12 bits
    value |= 0b10 << 62  # RFC 4122 variant
    value |= (counter & ((1 << 30) - 1)) << _RANDOM_BITS
    value |= rand
    return str(uuid.UUID(int=value))


def submitted_ms(execution_id: str) -> int | None:
    """The submit time carried by a UUIDv7 id, or None for any other kind of id."""
    try:
        value = uuid.UUID(execution_id)
    except ValueError:
        return None
    if value.version != 7:
        return None
    return value.int >> 80
