"""Execution ids: UUIDv7, so an id alone says when its call was submitted (to the millisecond)."""

from __future__ import annotations

import os
import time
import uuid


def new_execution_id(now_ms: int | None = None) -> str:
    """A fresh UUIDv7 (RFC 9562): 48-bit Unix milliseconds, then random bits."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76  # version 7
    value |= ((rand >> 68) & 0xFFF) << 64  # rand_a, 12 bits
    value |= 0b10 << 62  # RFC 4122 variant
    value |= rand & ((1 << 62) - 1)  # rand_b, 62 bits
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
