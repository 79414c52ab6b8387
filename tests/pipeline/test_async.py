"""The asyncio API on a running pipeline: ``await task.submit()``, ``result_async``,
``status_async``, cancellation, and a FastAPI app driven through an ASGI client."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import replace

import httpx
import pipeline_tasks
import pytest
from harness import Pipeline, PipelineFactory

import cfstream as cf
from cfstream.examples import web
from cfstream.ids import submitted_ms

pytestmark = pytest.mark.kafka

RESULT_TIMEOUT = 60


@pytest.fixture(scope="module")
def pipeline(pipeline_factory: PipelineFactory) -> Pipeline:
    return pipeline_factory(modules=("pipeline_tasks", "cfstream.examples.web"))


def test_await_a_submit_a_chain_and_a_failure(pipeline: Pipeline) -> None:
    user = uuid.uuid4().hex

    async def main() -> list[cf.Execution]:
        assert await pipeline_tasks.async_echo.submit({"a": [1]}) == {"a": [1]}
        # Three debounced calls: every waiter gets the one run's result, with the last
        # arguments, after a quiet break of the delay since the last call.
        calls = [pipeline_tasks.notify_update.submit(user, 3, f"edit-{i}") for i in range(3)]
        results = await asyncio.wait_for(asyncio.gather(*calls), RESULT_TIMEOUT)
        assert results == [f"{user}:3:edit-2"] * 3
        assert [await call.status_async() for call in calls] == ["deferred", "deferred",
                                                                "succeeded"]
        with pytest.raises(cf.ExecutionFailed) as failed:
            await pipeline_tasks.explode.submit(user, 1).result_async(timeout=RESULT_TIMEOUT)
        assert failed.value.error_type == "ValueError"
        with pytest.raises(TimeoutError):
            await pipeline_tasks.after_seconds.submit("late").result_async(timeout=0.1)
        return calls

    calls = asyncio.run(main())
    started = pipeline.events.one(calls[-1].id, "started")
    quiet_since = submitted_ms(calls[-1].id)
    assert quiet_since is not None
    assert started["ts_ms"] >= quiet_since + pipeline_tasks.D * 1000


def test_a_thousand_async_executions_at_once(pipeline: Pipeline) -> None:
    """The worker's slots run async executions one after another, each slot in one asyncio
    task: a thousand submitted at once, some failing and some never waiting, each run once
    with its own arguments, waited on in submit order."""
    calls = [pipeline.submit(pipeline_tasks.async_mixed, n) for n in range(1000)]
    for n, call in enumerate(calls):
        if n % 7 == 0:
            with pytest.raises(cf.ExecutionFailed) as failed:
                call.result(timeout=RESULT_TIMEOUT)
            assert failed.value.message == f"no {n}"
        else:
            assert call.result(timeout=RESULT_TIMEOUT) == n
    ids = {call.id for call in calls}
    ended = pipeline.events.wait_for(
        lambda e: e.get("id") in ids and e["type"] in ("succeeded", "failed"), count=1000)
    assert len(ended) == 1000 and {e["id"] for e in ended} == ids
    started = [e for e in pipeline.events.wait_for(
        lambda e: e.get("id") in ids and e["type"] == "started", count=1000)]
    assert len(started) == 1000 and {e["id"] for e in started} == ids


def test_a_cancelled_await_lets_go(pipeline: Pipeline) -> None:
    waiters = pipeline.client.waiters()

    async def main() -> None:
        waiting = asyncio.ensure_future(pipeline_tasks.after_seconds.submit("x").result_async())
        deadline = time.monotonic() + 30
        while sum(waiters.waiting().values()) < 1:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting

    asyncio.run(main())
    deadline = time.monotonic() + 10
    while sum(waiters.waiting().values()) > 0:
        assert time.monotonic() < deadline, waiters.waiting()
        time.sleep(0.02)


def test_submit_does_not_block_the_loop_when_the_local_queue_is_full(
        pipeline: Pipeline) -> None:
    """A producer queue of 5 records: inside an event loop the sixth call on does not wait
    for deliveries (each wait would be 50 ms); they still reach Kafka, in order."""
    settings = replace(pipeline.settings, kafka_config={"queue.buffering.max.messages": 5})
    client = cf.Client(settings)
    client.producer()  # created outside the loop: topics checked, like a warmed-up service
    key = uuid.uuid4().hex

    async def main() -> list[int]:
        began = time.monotonic()
        calls = [pipeline_tasks.latest.submit_to(client, key, n) for n in range(200)]
        assert time.monotonic() - began < 1.0  # blocking would take 40 waits of 50 ms
        results = await asyncio.wait_for(
            asyncio.gather(*(call.result_async() for call in calls)), RESULT_TIMEOUT)
        return list(results)

    try:
        results = asyncio.run(main())
    finally:
        client.close()
    # One defer key, no delay: merged calls all get the result of a later call, never an
    # earlier one, and the last call's own result is its argument.
    assert results[-1] == 199
    assert all(result >= n for n, result in enumerate(results))


def test_a_fastapi_app_through_an_asgi_client(pipeline: Pipeline) -> None:
    async def main() -> None:
        transport = httpx.ASGITransport(app=web.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
            words = await http.post("/word-count", params={"text": "one two three"})
            assert words.status_code == 200 and words.json() == {"words": 3}
            empty = await http.post("/word-count", params={"text": ""})
            assert empty.status_code == 422 and "ValueError" in empty.json()["detail"]
            document = uuid.uuid4().int % 10**9
            ids = []
            for _ in range(3):
                accepted = await http.post(f"/documents/{document}/edits")
                assert accepted.status_code == 202
                ids.append(accepted.json()["execution_id"])
            first = await http.get(f"/executions/{ids[0]}", params={"wait": RESULT_TIMEOUT})
            assert first.json() == {"status": "succeeded",
                                    "result": f"preview of document {document}"}
            states = [(await http.get(f"/executions/{i}")).json()["status"] for i in ids]
            assert states == ["deferred", "deferred", "succeeded"]

    asyncio.run(main())
