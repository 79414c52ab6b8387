"""The faust app of tests/integrations/test_faust.py, run as ``python faust_app.py worker``.

Its agents submit cfstream calls and await them (``requests`` -> ``replies``), and forward the
outcome events they read through ``events_topic(app)`` (-> ``seen``). The cfstream variables and
FAUST_* name the broker and topics.
"""

import os
import time
from typing import Any

import faust
import pipeline_tasks

import cfstream as cf
from cfstream.integrations.faust import Event, events_topic

# How often the timer ticks: counting ticks during an await shows the loop ran on meanwhile.
TICK_S = 0.1

app = faust.App(
    os.environ["FAUST_APP_ID"],
    broker=f"kafka://{os.environ['CFSTREAM_BOOTSTRAP_SERVERS']}",
    store="memory://",
    web_enabled=False,
    topic_partitions=1,
)
requests = app.topic(os.environ["FAUST_REQUESTS"], key_type=str, value_serializer="json")
replies = app.topic(os.environ["FAUST_REPLIES"], key_type=str, value_serializer="json")
seen = app.topic(os.environ["FAUST_SEEN"], key_type=str, value_serializer="json")
ticks = 0


@app.timer(TICK_S)
async def tick() -> None:
    global ticks
    ticks += 1


@app.agent(requests)
async def run_calls(stream: Any) -> None:
    """{"tag": ..., "fail": bool} -> submit, await, reply with the result or the error."""
    async for request in stream:
        if request["fail"]:
            execution = pipeline_tasks.explode.submit(request["tag"], 1)
        else:
            execution = pipeline_tasks.after_seconds.submit(request["tag"])
        reply: dict[str, Any] = {"tag": request["tag"], "id": execution.id}
        ticks_before, started = ticks, time.time()
        try:
            reply["result"] = await execution
        except cf.ExecutionFailed as exc:
            reply["error"] = {"class": type(exc).__name__, "type": exc.error_type,
                              "message": exc.message, "execution_id": exc.execution_id}
        reply["waited_s"] = time.time() - started
        reply["ticks_meanwhile"] = ticks - ticks_before
        reply["replied_ms"] = int(time.time() * 1000)
        await replies.send(key=execution.id, value=reply)


@app.agent(events_topic(app))
async def watch_events(stream: Any) -> None:
    """Outcome events, as the typed records the agent got them."""
    async for key, event in stream.items():
        if event.type not in ("succeeded", "failed"):
            continue
        await seen.send(key=key, value={
            "key": key, "is_event": isinstance(event, Event), "type": event.type,
            "id": event.id, "task": event.task, "worker": event.worker, "ts_ms": event.ts_ms,
            "result": event.decoded_result(),
            "error_type": (event.error or {}).get("type"),
        })


if __name__ == "__main__":
    app.main()
