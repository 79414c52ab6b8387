"""The processor's RocksDB layout (cfstream.processor.state)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from cfstream.processor.state import (
    DUE_PREFIX,
    SLOT_PREFIX,
    decode_slot,
    due_key,
    encode_slot,
    parse_due_key,
    slot_key,
    slot_timer,
)
from cfstream.scheduling.rules import Slot
from cfstream.scheduling.traces import Absorbed, WindowTrace
from cfstream.wire import NO_MODES, Call, Collect, Modes

DUES = st.integers(0, 2**63)
KEYS = st.binary(max_size=40)


def test_due_keys_sort_by_due_time_as_bytes() -> None:
    # Byte order is what a RocksDB iterator walks: an earlier due time must come first however
    # the numbers or keys compare as text.
    keys = [due_key(9, b"z"), due_key(10, b"a"), due_key(255, b"a"), due_key(256, b""),
            due_key(1_700_000_000_000, b"a"), due_key(1_700_000_000_001, b"")]
    assert sorted(keys) == keys


@given(st.lists(st.tuples(DUES, KEYS), max_size=30))
def test_due_keys_sort_like_due_then_key(entries: list[tuple[int, bytes]]) -> None:
    by_bytes = sorted(due_key(due, key) for due, key in entries)
    assert by_bytes == [due_key(due, key) for due, key in sorted(entries)]


@given(DUES, KEYS)
def test_due_key_round_trips(due: int, key: bytes) -> None:
    raw = due_key(due, key)
    assert raw.startswith(DUE_PREFIX)
    assert parse_due_key(raw) == (due, key)


def test_negative_due_time_sorts_first() -> None:
    assert parse_due_key(due_key(-5, b"k")) == (0, b"k")
    assert due_key(-5, b"k") < due_key(1, b"a")


def test_due_keys_and_slot_keys_do_not_mix() -> None:
    # A seek from DUE_PREFIX must meet every due key before any slot key.
    assert slot_key(b"k") == SLOT_PREFIX + b"k"
    assert max(due_key(2**64 - 1, b"\xff" * 8), due_key(0, b"")) < slot_key(b"")
    assert not slot_key(b"k").startswith(DUE_PREFIX)


def make_call(**changes: object) -> Call:
    fields: dict[str, object] = {
        "id": "0190a5b2-0000-7000-8000-000000000001", "task": "app:notify",
        "args": [1, {"$date": "2026-01-01"}], "kwargs": {"update": "é"},
        "submitted_ms": 1_700_000_000_000, "delay_ms": 60_000, "defer_key": "#1:#2",
        "max_wait_ms": 600_000,
    }
    fields.update(changes)
    return Call(**fields)  # type: ignore[arg-type]


def test_pending_slot_round_trips() -> None:
    slot = Slot(call=make_call(), first_ms=1_699_999_999_000, due_ms=1_700_000_060_000)
    assert decode_slot(encode_slot(slot)) == slot


def test_pending_slot_with_a_marker_round_trips() -> None:
    slot = Slot(call=make_call(max_wait_ms=None, delay_ms=0), first_ms=5, due_ms=5,
                fired_id="0190a5b2-0000-7000-8000-000000000000", fired_submitted_ms=1)
    assert decode_slot(encode_slot(slot)) == slot


def test_pending_slot_of_a_call_that_is_not_deferred_round_trips() -> None:
    slot = Slot(call=make_call(defer_key=None, max_wait_ms=None), first_ms=5, due_ms=10)
    back = decode_slot(encode_slot(slot))
    assert back == slot
    assert back is not None and back.call is not None
    assert back.call.key == slot.call.id  # type: ignore[union-attr]


def test_marker_slot_round_trips() -> None:
    slot = Slot(call=None, first_ms=0, due_ms=86_400_000, fired_id="e1", fired_submitted_ms=0)
    back = decode_slot(encode_slot(slot))
    assert back == slot
    assert back is not None and back.timer_id == "e1"


def test_missing_slot_decodes_to_none() -> None:
    assert decode_slot(None) is None


def test_slot_timer_reads_what_the_decoded_slot_says() -> None:
    call = Call(id="c1", task="t:f", args=[1], kwargs={}, submitted_ms=5, delay_ms=10,
                defer_key="k", max_wait_ms=None)
    pending = Slot(call=call, first_ms=5, due_ms=15)
    marker = Slot(call=None, first_ms=5, due_ms=900, fired_id="c0", fired_submitted_ms=1)
    for slot in (pending, marker):
        assert slot_timer(encode_slot(slot)) == (slot.due_ms, slot.timer_id)


def test_slots_of_deferring_modes_round_trip() -> None:
    pending = Slot(call=make_call(modes=Modes(leading=True, keep="first")), first_ms=5, due_ms=9,
                   latest_ms=7, latest_id="0190a5b2-0000-7000-8000-000000000009")
    marker = Slot(call=None, first_ms=5, due_ms=900, fired_id="c0", fired_submitted_ms=1,
                  latest_ms=7, latest_id="c2")
    collecting = Slot(call=make_call(args=[3], kwargs={}, modes=Modes(collect=Collect(10, 999)),
                                     collected=[1, {"$date": "2026-01-01"}, 3]),
                      first_ms=5, due_ms=9, collected_bytes=27)
    held = Slot(call=make_call(modes=Modes(if_running="after")), first_ms=5, due_ms=9,
                running_id="c0", running_attempt=2)
    running = Slot(call=None, first_ms=5, due_ms=900, fired_id="c0", fired_submitted_ms=1,
                   running_id="c0")
    for slot in (pending, marker, collecting, held, running):
        assert decode_slot(encode_slot(slot)) == slot


def test_a_slot_written_before_the_modes_still_decodes() -> None:
    # As a processor before leading/keep wrote it: no mode fields in the call, no latest_*.
    raw = (b'{"first_ms":5,"due_ms":9,"call":{"v":1,"kind":"call","id":"c1","task":"t:f",'
           b'"args":[1],"kwargs":{},"submitted_ms":5,"delay_ms":4,"defer_key":"k",'
           b'"max_wait_ms":null}}')
    slot = decode_slot(raw)
    assert slot == Slot(call=Call(id="c1", task="t:f", args=[1], kwargs={}, submitted_ms=5,
                                  delay_ms=4, defer_key="k"), first_ms=5, due_ms=9)
    assert slot.call is not None and slot.call.modes is NO_MODES


# Slots with deferring modes as the processor wrote them at cf81cee, before the modes became one
# value on the call: a state dir written then must restore the same, and write the same bytes.
WRITTEN_WITH_MODES = [
    b'{"first_ms":100,"due_ms":700,"call":{"v":2,"kind":"call","id":"c1","task":"app:digest",'
    b'"args":[{"n":1}],"kwargs":{},"submitted_ms":100,"delay_ms":500,"defer_key":"u1",'
    b'"max_wait_ms":9000,"leading":true,"keep":"first"},"latest_ms":200,"latest_id":"c2"}',
    b'{"first_ms":100,"due_ms":700,"call":{"v":2,"kind":"call","id":"c2","task":"app:digest",'
    b'"args":[{"n":2}],"kwargs":{},"submitted_ms":200,"delay_ms":500,"defer_key":"u1",'
    b'"max_wait_ms":9000,"collect":{"max_calls":3,"max_bytes":99},'
    b'"collected":[{"n":1},{"n":2}]},"collected_bytes":14}',
    b'{"first_ms":100,"due_ms":60300,"fired_id":"c3","fired_submitted_ms":300,"execution":{"v":2,'
    b'"kind":"execution","id":"c3","task":"app:digest","args":[{"n":3}],"kwargs":{},'
    b'"submitted_ms":300,"delay_ms":500,"defer_key":"u1","max_wait_ms":9000,'
    b'"collect":{"max_calls":3,"max_bytes":99},"collected":[{"n":1},{"n":2},{"n":3}],'
    b'"due_ms":300,"fired_ms":300}}',
    b'{"first_ms":800,"due_ms":1300,"call":{"v":2,"kind":"call","id":"c2","task":"app:digest",'
    b'"args":[{"n":2}],"kwargs":{},"submitted_ms":800,"delay_ms":500,"defer_key":"u1",'
    b'"max_wait_ms":9000,"if_running":"after"},"fired_id":"c1","fired_submitted_ms":100,'
    b'"execution":{"v":2,"kind":"execution","id":"c1","task":"app:digest","args":[{"n":1}],'
    b'"kwargs":{},"submitted_ms":100,"delay_ms":500,"defer_key":"u1","max_wait_ms":9000,'
    b'"if_running":"after","due_ms":600,"fired_ms":700},"running_id":"c1"}',
]


def test_slots_written_with_modes_before_restore_to_the_same_bytes() -> None:
    for raw in WRITTEN_WITH_MODES:
        slot = decode_slot(raw)
        assert slot is not None and encode_slot(slot) == raw


# Slots of traced calls (a call's traceparent; a window's trace, kept while the replica traces):
# a state dir written now must restore the same, and write the same bytes.
TP1 = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
TP2 = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
WRITTEN_TRACED = [
    b'{"first_ms":100,"due_ms":700,"call":{"v":1,"kind":"call","id":"c2","task":"app:digest",'
    b'"args":[1],"kwargs":{},"submitted_ms":200,"delay_ms":500,"defer_key":"u1",'
    b'"max_wait_ms":null,"traceparent":"' + TP2.encode() + b'"},"trace":{"scheduled_ms":204,'
    b'"absorbed":[["c1","' + TP1.encode() + b'",103,204,"replaced","c2"]]}}',
    b'{"first_ms":100,"due_ms":60300,"fired_id":"c2","fired_submitted_ms":200,"execution":{'
    b'"v":1,"kind":"execution","id":"c2","task":"app:digest","args":[1],"kwargs":{},'
    b'"submitted_ms":200,"delay_ms":500,"defer_key":"u1","max_wait_ms":null,'
    b'"traceparent":"' + TP1.encode() + b'","due_ms":700,"fired_ms":702}}',
]


def test_slots_of_traced_calls_restore_to_the_same_bytes() -> None:
    for raw in WRITTEN_TRACED:
        slot = decode_slot(raw)
        assert slot is not None and encode_slot(slot) == raw
    pending = decode_slot(WRITTEN_TRACED[0])
    assert pending is not None and pending.call is not None
    assert pending.call.traceparent == TP2
    assert pending.trace == WindowTrace(204, (Absorbed("c1", TP1, 103, 204, "replaced", "c2"),))


def test_a_traced_slot_round_trips() -> None:
    slot = Slot(call=make_call(traceparent=TP1), first_ms=5, due_ms=9,
                trace=WindowTrace(7, tuple(Absorbed(f"c{i}", TP2, i, i + 1, "replaced", "x")
                                           for i in range(3))))
    assert decode_slot(encode_slot(slot)) == slot
