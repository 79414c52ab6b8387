"""faust-streaming agents and cfstream (``pip install cfstream[faust]``).

Inside an agent, ``await my_task.submit(x)`` publishes the call without blocking the agent's
event loop and waits for the result there, raising the same errors as ``result()``
(``cf.ExecutionFailed``, ``cf.ExecutionCancelled``, ``cf.SubmitError``, ``TimeoutError``).
:func:`events_topic` reads cfstream's events topic as typed :class:`Event` records::

    @app.agent(events_topic(app))
    async def audit(stream):
        async for execution_id, event in stream.items():
            if event.type == "failed":
                ...

docs/integrations.md has a whole app; tests/integrations/faust_app.py runs one.
"""

from __future__ import annotations

from typing import Any

import faust

from cfstream.codec import from_json_value
from cfstream.settings import Settings, get_settings


class Event(faust.Record, serializer="json", include_metadata=False):
    """One record of ``<prefix>.events`` (docs/wire-format.md). Fields a type does not carry are
    None; fields this version does not know are kept as attributes, as the format asks."""

    type: str
    id: str | None  # None only on `invalid` events about a record without an id
    v: int = 1
    task: str | None = None
    defer_key: str | None = None
    ts_ms: int | None = None
    submitted_ms: int | None = None
    due_ms: int | None = None
    fired_ms: int | None = None
    successor: str | None = None
    worker: str | None = None
    result: Any = None
    error: dict[str, Any] | None = None
    reason: str | None = None

    def decoded_result(self) -> Any:
        """A ``succeeded`` event's result as the task returned it (datetimes, UUIDs, ... decoded
        as ``execution.result()`` does)."""
        return from_json_value(self.result)


def events_topic(app: Any, settings: Settings | None = None) -> Any:
    """``<prefix>.events`` as a faust topic of :class:`Event` values keyed by execution id.

    ``settings`` defaults to the process's (``CFSTREAM_*`` variables). An agent on it reads in
    the app's consumer group, from the earliest record on its first start (faust's default).
    """
    settings = settings or get_settings()
    return app.topic(settings.events_topic, key_type=str, key_serializer="raw",
                     value_type=Event, value_serializer="json")
