"""Calls as the code builds them: the client's encoding of every flavour of call, read back.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import uuid

from schema_checks import ID, NOW

from cfstream.arguments import Defer
from cfstream.calls import submit
from cfstream.client import Client
from cfstream.codec import dumps
from cfstream.settings import Settings
from cfstream.task import Task
from cfstream.wire import (
    MAX_DELAY_MS,
    Call,
    Collect,
    Modes,
    call_from_dict,
)


class CapturingClient(Client):
    """The real task and client encoding, with producing replaced by keeping the
    record (read back as a Call)."""

    def __init__(self) -> None:
        super().__init__(Settings())
        self.calls: list[Call] = []

    def send(self, task: str, key: bytes, value: bytes) -> None:
        call = call_from_dict(json.loads(value))
        # The record is the one encoding of the call, under the call's key.
        assert value == dumps(call.to_dict())
        assert key == call.key.encode()
        assert call.task == task
        self.calls.append(call)


def notify(user_id: int, when: dt.datetime, *, amount: decimal.Decimal = decimal.Decimal("1.50"),
           tags: tuple[str, ...] = ()) -> None:
    """A task signature for building calls."""


def collected(items: list[tuple[int, dt.date]]) -> None:
    """A collect task's signature."""


ODD_ARGS = (7, dt.datetime(2026, 11, 24, 3, 43, 14, 123456, tzinfo=dt.timezone.utc))
ODD_KWARGS = {"amount": decimal.Decimal("12.50"), "tags": ("a", "b")}


def built_calls() -> list[Call]:
    client = CapturingClient()
    name = "tests.schemas:notify"
    tasks = [
        Task(fn=notify, name=name),
        Task(fn=notify, name=name, delay_ms=60_000),
        Task(fn=notify, name=name, delay_ms=60_000, defer=True, max_wait_ms=600_000),
        Task(fn=notify, name=name, defer=Defer(params=["user_id"])),
        Task(fn=notify, name=name, defer=lambda user_id, *_a, **_k: f"user:{user_id}"),
        Task(fn=notify, name=name, delay_ms=60_000, defer=True, modes=Modes(leading=True)),
        Task(fn=notify, name=name, defer=Defer(params=["user_id"]), modes=Modes(keep="first")),
        Task(fn=notify, name=name, delay_ms=1, defer=True, max_wait_ms=9,
             modes=Modes(leading=True, keep="first")),
        Task(fn=notify, name=name, delay_ms=60_000, defer=True,
             modes=Modes(if_running="after")),
    ]
    for task in tasks:
        task.submit_to(client, *ODD_ARGS, **ODD_KWARGS)
    for collector in (Task(fn=collected, name="tests.schemas:collected", delay_ms=5, defer=True,
                           modes=Modes(collect=Collect())),
                      Task(fn=collected, name="tests.schemas:collected", delay_ms=5,
                           defer=lambda item: str(item[0]),
                           modes=Modes(leading=True, collect=Collect(max_calls=2,
                                                                     max_bytes=99)))):
        collector.submit_to(client, (7, dt.date(2026, 1, 1)))
    long_key = Task(fn=notify, name=name, defer=True)  # a key over 128 chars becomes sha256:...
    long_key.submit_to(client, 1, dt.datetime(2026, 1, 1), tags=("x" * 200,))
    submit("billing.tasks:charge", [1, dt.date(2026, 1, 2), uuid.UUID(int=5)],
           {"blob": b"\x00\xff", "ref": {"$ref": "#/x"}, "nested": [{"a": None}]},
           delay=1.5, defer_key="customer:1", max_wait=dt.timedelta(minutes=5), client=client)
    submit("billing.tasks:charge", client=client)
    submit("billing.tasks:charge", defer_key="", client=client)
    submit("billing.tasks:charge", [2], delay=3, defer_key="customer:2", leading=True,
           keep="first", client=client)
    submit("billing.tasks:charge", [3], defer_key="customer:3", keep="last", client=client)
    submit("billing.tasks:charge", [{"n": 4}], defer_key="customer:4", collect=True, client=client)
    submit("billing.tasks:charge", [5], delay=3, defer_key="customer:5", keep="first",
           if_running="after", client=client)
    made = list(client.calls)
    made.append(Call(id=ID, task="app.tasks:plain", args=[], kwargs={}, submitted_ms=NOW))
    made.append(Call(id=ID, task="app.tasks:full", args=[1, [2, 3]], kwargs={"x": {"y": 1.5}},
                     submitted_ms=NOW, delay_ms=MAX_DELAY_MS, defer_key="k",
                     max_wait_ms=MAX_DELAY_MS))
    return made


CALLS = built_calls()
