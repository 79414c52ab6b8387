"""The one wall clock: milliseconds since the epoch, as records and UUIDv7 ids carry them."""

from __future__ import annotations

import time


def now_ms() -> int:
    return int(time.time() * 1000)
