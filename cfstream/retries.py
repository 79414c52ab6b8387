"""``cf.Retries``: how often a failed execution runs again, after how long, and on which errors.

    @cf.task(retries=2)                                        # twice more, at once
    @cf.task(retries=cf.Retries(limit=5, delay_min=300, delay_max=600))

The wait before retry *n* grows in a straight line from ``delay_min`` (the first retry) to
``delay_max`` (the last); with ``limit=None`` (no limit) it doubles from ``delay_min`` until it
reaches ``delay_max``. A retry goes back through the processor as a delayed call, so it survives
restarts like any other, and a newer call with the same defer key replaces it.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field

from cfstream.errors import ConfigurationError
from cfstream.wire import MAX_DELAY_MS


@dataclass(frozen=True)
class Retries:
    """``limit``: retries after the first attempt (None: no limit). ``on``: the exception
    types that retry (their subclasses too); other errors fail at once. A worker lost while
    the task ran counts as a failed attempt."""

    limit: int | None = 3
    delay_min: dt.timedelta | float = 0
    delay_max: dt.timedelta | float | None = None  # None: delay_min
    on: tuple[type[BaseException], ...] = field(default=(Exception,))

    def __post_init__(self) -> None:
        if self.limit is not None and (isinstance(self.limit, bool)
                                       or not isinstance(self.limit, int) or self.limit < 0):
            raise ConfigurationError(f"Retries(limit=...) must be 0 or more, or None for no "
                                     f"limit; got {self.limit!r}")
        low = _ms(self.delay_min, "delay_min")
        high = low if self.delay_max is None else _ms(self.delay_max, "delay_max")
        if high < low:
            raise ConfigurationError(f"Retries: delay_max ({high / 1000:g} s) must not be "
                                     f"below delay_min ({low / 1000:g} s)")
        on = self.on if isinstance(self.on, tuple) else (self.on,)
        if not on or not all(isinstance(kind, type) and issubclass(kind, BaseException)
                             for kind in on):
            raise ConfigurationError(f"Retries(on=...) must be exception types, got {self.on!r}")
        object.__setattr__(self, "on", on)

    @property
    def min_ms(self) -> int:
        return _ms(self.delay_min, "delay_min")

    @property
    def max_ms(self) -> int:
        return self.min_ms if self.delay_max is None else _ms(self.delay_max, "delay_max")

    def allows(self, retry: int) -> bool:
        """Whether retry number ``retry`` (1: the second attempt) may run."""
        return self.limit is None or retry <= self.limit

    def retries_on(self, error: BaseException | None) -> bool:
        """Whether ``error`` retries (None: the worker was lost, which always does)."""
        return error is None or isinstance(error, self.on)

    def delay_ms(self, retry: int) -> int:
        """The wait before retry number ``retry`` (1-based), in milliseconds."""
        low, high = self.min_ms, self.max_ms
        if self.limit is None:
            if low == 0:
                return 0
            return min(high, low * 2 ** min(retry - 1, 62))
        if self.limit <= 1:
            return low
        return low + (high - low) * (min(retry, self.limit) - 1) // (self.limit - 1)


def retries_option(value: int | Retries | None) -> Retries | None:
    """``@cf.task(retries=...)`` as a Retries (None: no retries)."""
    if value is None or isinstance(value, Retries):
        return value if value is None or value.limit != 0 else None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigurationError(
            f"retries must be a number of retries or cf.Retries(...), got {value!r}")
    return Retries(limit=value) if value else None


def _ms(value: dt.timedelta | float, what: str) -> int:
    seconds = value.total_seconds() if isinstance(value, dt.timedelta) else value
    if (isinstance(seconds, bool) or not isinstance(seconds, (int, float))
            or math.isnan(seconds) or seconds < 0 or seconds * 1000 > MAX_DELAY_MS):
        raise ConfigurationError(
            f"Retries: {what} must be a timedelta or seconds between 0 and 10 years, "
            f"got {value!r}")
    return round(seconds * 1000)
