"""What follows a failed attempt: the next attempt to put on the calls topic, or nothing.

A retry goes back through the processor as a delayed call (``not_before_ms``), so it survives
restarts like any other call, and a newer call with the same defer key replaces it.
"""

from __future__ import annotations

import dataclasses

from cfstream.retries import Retries
from cfstream.wire import NO_MODES, Call
from cfstream.worker.execute import Outcome


def next_attempt(call: Call, policy: Retries | None, outcome: Outcome,
                 now_ms: int) -> Call | None:
    """The retry of ``call`` after ``outcome`` (a failure), or None when ``policy`` allows none:
    no retries left, or an error the task does not retry on. A lost worker always retries;
    failures that raised nothing (an unregistered task, bad arguments) never do."""
    if policy is None or not policy.allows(call.attempt):
        return None
    if not (outcome.lost or (outcome.error is not None and policy.retries_on(outcome.error))):
        return None
    retry = dataclasses.replace(call, attempt=call.attempt + 1,
                                not_before_ms=now_ms + policy.delay_ms(call.attempt))
    if call.collected is None:
        return retry
    # A collected run is retried alone with its list, keyed by its id: the key's later calls
    # make windows of their own, and no argument is dropped or run twice.
    return dataclasses.replace(retry, args=[call.collected], kwargs={}, defer_key=None,
                               max_wait_ms=None, modes=NO_MODES, collected=None)
