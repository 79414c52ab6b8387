"""The one wall clock: milliseconds since the epoch, as records and UUIDv7 ids carry them."""

from __future__ import annotations

import time

# How far the clocks of the hosts involved (submitters, processors, workers, readers) may be
# apart: a read of the events of a call starts this far before its submit (or fire) time, since
# processors and workers stamp them by their own clocks. NTP keeps hosts within milliseconds;
# each second of margin costs a second of a partition's traffic read again.
CLOCK_MARGIN_MS = 10_000


def now_ms() -> int:
    return int(time.time() * 1000)
