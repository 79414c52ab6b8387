"""What happens to one key's state when a call, a timer tick or a cancel arrives.

A key (the task-scoped defer key, or the execution id of a call that is not deferred) holds a
:class:`Slot`: the pending call and when it is due, plus a marker of the call fired last, kept for
``retention_ms`` so a call redelivered after a crash is recognised instead of run twice.

- due = latest call's submit time + its delay, capped at the window's first call + max_wait
  (event time: a processor that lags does not stretch the quiet period);
- a newer call replaces the pending one, which becomes ``deferred`` to it; but when both are
  read late and the pending one was due before the newer one was made (:func:`due_before`),
  the reader fires it first;
- ``keep="first"``: a newer call leaves the pending one in place, pushes its due time back (as
  if it had replaced it) and is itself ``deferred`` to it (reason ``kept_first``);
- ``collect``: a newer call replaces the pending one (reason ``collected``) and the window's
  list of arguments grows by its argument; a window holding ``max_calls`` is due at once, and
  one the next argument would take over ``max_bytes`` fires first (early), the call opening the
  next window: no argument is dropped;
- ``leading``: the first call of a quiet key (nothing pending, no run due within the last
  ``delay``) is due at once; the calls after it collapse into one trailing run as above;
- an older call (out of order) is itself deferred to the pending or last fired one (calls of the
  same millisecond are ordered by id);
- a tick fires the pending call if it is due; a later tick forgets the marker;
- a replayed call or tick of a fired call sends its execution again (workers skip known ids);
- a retry (the same call, a later attempt, from a worker) of the call that fired last is taken
  in like a new call, due at its ``not_before_ms``; one older than the key's latest call is
  deferred to it, like any older call;
- ``if_running="after"``: a fired call leaves its key *running* until a worker reports the run
  finished (or retries it). Meanwhile the key's calls collapse as usual, but the pending one
  does not fire, even when due: it is held, and fires (at its due time, or at once if that has
  passed) only once the run has ended. So a key's runs never overlap.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from cfstream.scheduling.traces import WindowTrace
from cfstream.wire import Call, FiredCall, argument_bytes, event

# if_running="after": how often a running key's marker is looked at (it stays until the run ends).
RUNNING_RECHECK_MS = 60 * 1000


@dataclass(slots=True)  # immutable by convention; not frozen for speed, as wire.Call
class Slot:
    """One key's state. ``call`` is None once it has fired and only the marker is left."""

    call: Call | None
    first_ms: int
    due_ms: int
    fired_id: str | None = None  # the call that left last (fired or cancelled)
    fired_submitted_ms: int | None = None
    fired_attempt: int = 1
    # What firing it emitted, emitted again if the call or its tick is replayed: a replica killed
    # after writing its state may never have sent the execution (RocksDB is ahead of Kafka).
    execution: FiredCall | None = None
    # keep="first": the newest call collapsed into the pending (or fired) call, which is older.
    # A call not newer than it is out of order, or a replay: it must not start a new window.
    latest_ms: int | None = None
    latest_id: str | None = None
    collected_bytes: int = 0  # collect: the size of call.collected's arguments as JSON
    # if_running="after": the execution (and attempt) fired and not yet reported finished.
    running_id: str | None = None
    running_attempt: int = 1
    # Tracing only (kept by the processor when its tracing is on): see scheduling.traces.
    trace: WindowTrace | None = None

    @property
    def held(self) -> bool:
        """Whether the pending call must wait for the running execution to finish (it says so:
        ``if_running="after"``)."""
        return (self.running_id is not None and self.call is not None
                and self.call.modes.if_running == "after")

    @property
    def timer_id(self) -> str:
        """The id a tick must name to act on this slot."""
        if self.call is not None:
            return self.call.id
        assert self.fired_id is not None  # noqa: S101 - a slot is a call or a marker
        return self.fired_id


@dataclass(slots=True)
class Decision:
    """The new state of a key (None: delete it) and what to publish."""

    slot: Slot | None
    changed: bool
    executions: list[FiredCall] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)


def due_ms(call: Call, first_ms: int) -> int:
    due = call.submitted_ms + call.delay_ms
    if call.max_wait_ms is not None:
        due = min(due, first_ms + call.max_wait_ms)
    if call.not_before_ms is not None:
        due = max(due, call.not_before_ms)
    return due


def accept(slot: Slot | None, call: Call, now_ms: int, retention_ms: int,
           fire_due: bool = True) -> Decision:
    """Take in a new call for this key.

    A call already due fires at once, unless ``fire_due`` is False: then the caller fires it
    with :func:`fire_if_due` once it has read the calls that arrived with it, so that of a burst
    read late (a lagging or restarting replica) only the latest call runs, as event time says.
    """
    if slot is not None and _seen(slot, call):
        return _replayed(slot, call.id)  # redelivered: already here or already fired
    if slot is not None and slot.running_id == call.id and call.attempt > slot.running_attempt:
        released = finished(slot, call.id, call.attempt - 1, now_ms)  # its retry: the run ended
        decision = accept(released.slot, call, now_ms, retention_ms, fire_due)
        return Decision(decision.slot, changed=True, executions=decision.executions,
                        events=decision.events)

    pending = slot.call if slot is not None else None
    latest = (pending.id, pending.submitted_ms) if pending is not None else _fired_stub(slot)
    # Ties in the same millisecond go by id: otherwise a redelivered call that ran first could
    # overtake (and re-run after) a same-millisecond call that ran after it.
    if latest is not None and ((call.submitted_ms, call.id) < (latest[1], latest[0]) or (
            slot is not None and slot.latest_id is not None and _collapsed_already(slot, call))):
        return Decision(slot, changed=False, events=[
            event("deferred", call, now_ms, successor=latest[0], reason="out_of_order"),
        ])

    events: list[dict[str, Any]] = []
    if slot is not None and pending is not None:
        first = slot.first_ms
        if call.modes.keep == "first":
            return _push_back(slot, pending, call, now_ms, retention_ms, fire_due)
        if call.modes.collect is not None:
            return _collect(slot, pending, call, now_ms, retention_ms, fire_due)
        events.append(event("deferred", pending, now_ms, successor=call.id, reason="replaced"))
        due = due_ms(call, first)
    else:
        first = call.submitted_ms
        due = (call.submitted_ms if call.modes.leading and _quiet(slot, call)
               else due_ms(call, first))
    size = 0
    bounds = call.modes.collect
    if bounds is not None:  # opens a window's list
        size = argument_bytes(call.args[0])
        call = replace(call, collected=[call.args[0]])
        if bounds.max_calls <= 1:
            due = min(due, call.submitted_ms)
    new = Slot(
        call=call,
        first_ms=first,
        due_ms=due,
        fired_id=slot.fired_id if slot is not None else None,
        fired_submitted_ms=slot.fired_submitted_ms if slot is not None else None,
        fired_attempt=slot.fired_attempt if slot is not None else 1,
        execution=slot.execution if slot is not None else None,
        collected_bytes=size,
        running_id=slot.running_id if slot is not None else None,
        running_attempt=slot.running_attempt if slot is not None else 1,
    )
    events.append(_scheduled(new, call, now_ms))
    return _taken(new, events, now_ms, retention_ms, fire_due)


def _scheduled(slot: Slot, call: Call, now_ms: int) -> dict[str, Any]:
    """``call`` is in ``slot``'s window, which is due at ``slot.due_ms`` (and, when held, not
    before the execution named ``after`` finishes)."""
    if slot.held:
        return event("scheduled", call, now_ms, due_ms=slot.due_ms,
                     submitted_ms=call.submitted_ms, after=slot.running_id)
    return event("scheduled", call, now_ms, due_ms=slot.due_ms, submitted_ms=call.submitted_ms)


def _taken(new: Slot, events: list[dict[str, Any]], now_ms: int, retention_ms: int,
           fire_due: bool) -> Decision:
    """The slot a call made, fired at once if it is due and the caller fires what is due."""
    if fire_due and new.due_ms <= now_ms and not new.held:
        fired = tick(new, new.timer_id, now_ms, retention_ms)
        fired.events[:0] = events
        return fired
    return Decision(new, changed=True, events=events)


def _push_back(slot: Slot, pending: Call, call: Call, now_ms: int, retention_ms: int,
               fire_due: bool) -> Decision:
    """keep="first": ``call`` joins the pending call's window, which now ends a quiet period
    after ``call`` (capped by max_wait); the pending call and its arguments stay."""
    new = replace(slot, due_ms=max(slot.due_ms, due_ms(call, slot.first_ms)),
                  latest_ms=call.submitted_ms, latest_id=call.id)
    events = [_scheduled(new, call, now_ms),
              event("deferred", call, now_ms, successor=pending.id, reason="kept_first")]
    return _taken(new, events, now_ms, retention_ms, fire_due)


def _collect(slot: Slot, pending: Call, call: Call, now_ms: int, retention_ms: int,
             fire_due: bool) -> Decision:
    """collect: ``call`` replaces the pending call with the window's list plus its argument;
    a full window is due at once, one the argument would overflow fires first."""
    bounds = call.modes.collect
    assert bounds is not None  # noqa: S101 - the caller checked
    collected = pending.collected if pending.collected is not None else []
    item = call.args[0]
    size = argument_bytes(item)
    if collected and (slot.collected_bytes + size > bounds.max_bytes
                      or len(collected) >= bounds.max_calls):
        early = replace(slot, due_ms=min(slot.due_ms, call.submitted_ms, now_ms))
        fired = tick(early, pending.id, now_ms, retention_ms)
        rest = accept(fired.slot, call, now_ms, retention_ms, fire_due)
        return Decision(rest.slot, changed=True, executions=fired.executions + rest.executions,
                        events=fired.events + rest.events)
    new_call = replace(call, collected=[*collected, item])
    due = due_ms(call, slot.first_ms)
    if len(collected) + 1 >= bounds.max_calls:
        due = min(due, call.submitted_ms)
    new = replace(slot, call=new_call, due_ms=due, collected_bytes=slot.collected_bytes + size)
    events = [event("deferred", pending, now_ms, successor=call.id, reason="collected"),
              _scheduled(new, call, now_ms)]
    return _taken(new, events, now_ms, retention_ms, fire_due)


def _collapsed_already(slot: Slot | None, call: Call) -> bool:
    """keep="first": ``call`` is not newer than the newest call the window took in (a retry of
    the call that ran is not: it is that call again)."""
    if (slot is None or slot.latest_id is None or slot.latest_ms is None
            or call.id == slot.fired_id):
        return False
    return (call.submitted_ms, call.id) <= (slot.latest_ms, slot.latest_id)


def _quiet(slot: Slot | None, call: Call) -> bool:
    """No run of this key was due within ``call``'s delay before it (nothing is pending)."""
    last = slot.execution if slot is not None else None
    return last is None or call.submitted_ms >= last.due_ms + call.delay_ms


def tick(slot: Slot | None, timer_id: str, now_ms: int, retention_ms: int) -> Decision:
    """The timer says ``timer_id`` may be due: fire the pending call, or forget the marker."""
    if slot is None or slot.timer_id != timer_id or slot.due_ms > now_ms:
        if slot is not None and slot.call is not None and slot.call.id == timer_id:
            return Decision(slot, changed=False)  # early: nothing of this call was sent yet
        return _replayed(slot, timer_id)  # stale, or the tick that fired it read again
    if slot.call is None:
        if slot.running_id is not None:  # still running: remember that, and look again later
            return Decision(replace(slot, due_ms=now_ms + max(retention_ms, RUNNING_RECHECK_MS)),
                            changed=True)
        return Decision(None, changed=True)
    if slot.held:
        return Decision(slot, changed=False)  # due, but waits for the running one to finish
    call = slot.call
    execution = FiredCall(call=call, due_ms=slot.due_ms, fired_ms=now_ms)
    if call.modes.leading and retention_ms > 0:  # the marker tells the next call: not quiet
        retention_ms = max(retention_ms, call.delay_ms)
    marker = _marker(slot, call, now_ms, retention_ms, execution)
    return Decision(marker, changed=True, executions=[execution])


def finished(slot: Slot | None, call_id: str, attempt: int, now_ms: int) -> Decision:
    """A worker says attempt ``attempt`` of execution ``call_id`` ended (if_running="after"):
    the key is no longer running, and a held call fires at its due time, or at once (the next
    millisecond, through the timer) if that has passed."""
    if slot is None or slot.running_id != call_id or attempt < slot.running_attempt:
        return Decision(slot, changed=False)  # not the running one (a replay, or stale)
    due = slot.due_ms
    if slot.call is not None and due <= now_ms:
        due = now_ms + 1  # a new timer entry: the timer passed the old one over
    return Decision(replace(slot, due_ms=due, running_id=None, running_attempt=1), changed=True)


def due_before(slot: Slot | None, call: Call, now_ms: int) -> bool:
    """Whether the pending call was due (by ``now_ms``) before ``call`` was made: in event time
    it ran before ``call`` existed, so ``call`` must not replace it."""
    return (slot is not None and slot.call is not None and slot.call.id != call.id
            and not slot.held and slot.due_ms <= min(call.submitted_ms, now_ms))


def fires_when_read(slot: Slot | None) -> bool:
    """Whether a due call may fire as soon as it is read: only when it had no quiet period to
    wait (no delay, or max_wait already passed when it was made). One whose quiet period passed
    while it waited unread fires through a tick instead, which the calls topic orders after
    every call already in it: a newer call made before its due time then replaces it."""
    return (slot is not None and slot.call is not None and not slot.held
            and slot.due_ms <= slot.call.submitted_ms)


def fire_if_due(slot: Slot | None, now_ms: int, retention_ms: int) -> Decision:
    """Fire the pending call if it is due by ``now_ms``; change nothing otherwise."""
    if slot is None or slot.call is None or slot.due_ms > now_ms:
        return Decision(slot, changed=False)
    return tick(slot, slot.call.id, now_ms, retention_ms)


def _seen(slot: Slot, call: Call) -> bool:
    """Whether ``call`` (this attempt of it, or a later one) is pending or has left already."""
    if slot.call is not None and slot.call.id == call.id:
        return call.attempt <= slot.call.attempt
    return slot.fired_id == call.id and call.attempt <= slot.fired_attempt


def _replayed(slot: Slot | None, call_id: str) -> Decision:
    """A call or tick read again after a crash: send its execution again if it fired (workers
    drop an execution id they have seen), change nothing."""
    again = slot.execution if slot is not None else None
    if again is not None and again.call.id == call_id:
        return Decision(slot, changed=False, executions=[again])
    return Decision(slot, changed=False)


def cancel(slot: Slot | None, call_id: str, now_ms: int, retention_ms: int,
           reason: str = "") -> Decision:
    """Drop the pending call ``call_id`` before it fires; its waiters see ``cancelled``."""
    if slot is None or slot.call is None or slot.call.id != call_id:
        return Decision(slot, changed=False)
    call = slot.call
    return Decision(_marker(slot, call, now_ms, retention_ms), changed=True,
                    events=[event("cancelled", call, now_ms, reason=reason or "cancelled")])


def _marker(slot: Slot, call: Call, now_ms: int, retention_ms: int,
            execution: FiredCall | None = None) -> Slot | None:
    """What a key keeps once ``call`` left it: fired (``execution``) or cancelled. A fired
    if_running="after" call leaves the key running; a cancelled one leaves it as it was."""
    running_id, running_attempt = slot.running_id, slot.running_attempt
    if execution is not None and call.modes.if_running == "after":
        running_id, running_attempt = call.id, call.attempt
    if running_id is not None:
        retention_ms = max(retention_ms, RUNNING_RECHECK_MS)
    elif retention_ms <= 0:
        return None
    return Slot(call=None, first_ms=slot.first_ms, due_ms=now_ms + retention_ms,
                fired_id=call.id, fired_submitted_ms=call.submitted_ms,
                fired_attempt=call.attempt, execution=execution,
                latest_ms=slot.latest_ms, latest_id=slot.latest_id,
                running_id=running_id, running_attempt=running_attempt)


def _fired_stub(slot: Slot | None) -> tuple[str, int] | None:
    if slot is None or slot.fired_id is None or slot.fired_submitted_ms is None:
        return None
    return slot.fired_id, slot.fired_submitted_ms
