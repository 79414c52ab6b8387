"""Metrics, health endpoints and the dead-letter topic, checked after a known scenario."""

from __future__ import annotations

import time
import urllib.request
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from harness import PipelineFactory
from pipeline_tasks import notify_update
from prometheus_client.parser import text_string_to_metric_families

from cfstream.dev.procs import free_port

pytestmark = pytest.mark.kafka


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - loopback
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except OSError:  # not listening yet
        return 0, ""


def samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    _, text = get(url)
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def wait_until(check, timeout: float = 30):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def test_metrics_health_and_dead_letters_after_a_known_scenario(
        pipeline_factory: PipelineFactory) -> None:
    pipeline = pipeline_factory(start=False)
    p_port, w_port = free_port(), free_port()
    pipeline.services.processor("processor-0", CFSTREAM_HTTP_PORT=str(p_port))
    pipeline.services.worker("worker-0", CFSTREAM_HTTP_PORT=str(w_port))
    processor, worker = f"http://127.0.0.1:{p_port}", f"http://127.0.0.1:{w_port}"
    assert wait_until(lambda: get(f"{processor}/healthz")[0] == 200)
    # Probed from the very start (as Kubernetes does), the replica still becomes ready.
    assert wait_until(lambda: get(f"{processor}/readyz")[0] == 200, timeout=120)
    pipeline.wait_ready()
    assert get(f"{worker}/healthz")[0] == 200 and get(f"{worker}/readyz")[0] == 200

    user = uuid.uuid4().hex[:8]
    calls = [pipeline.submit(notify_update, user, 1, f"edit-{i}") for i in range(3)]
    settings = pipeline.settings
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers})
    producer.produce(settings.calls_topic, key=b"garbage", value=b"{not json")
    producer.flush(10)
    for call in calls:
        call.result(timeout=60)
    invalid = pipeline.events.wait_for(lambda e: e["type"] == "invalid")[0]
    assert invalid["reason"].startswith("not valid JSON")

    task = notify_update.name
    expected = {
        ("cfstream_calls_received_total", (("task", task),)): 3.0,
        ("cfstream_deferrals_total", (("task", task), ("where", "processor"))): 2.0,
        ("cfstream_dead_letters_total", (("reason", "not_json"),)): 1.0,
    }
    got = wait_until(lambda: (lambda m: m if all(m.get(k) == v for k, v in expected.items())
                              else None)(samples(f"{processor}/metrics")))
    assert got, samples(f"{processor}/metrics")
    fires = got[("cfstream_fires_total", ())]
    assert fires == 2.0  # the readiness probe and the surviving notification
    assert got[("cfstream_fire_lateness_seconds_count", ())] == fires

    worker_expected = {
        ("cfstream_executions_started_total", (("task", task),)): 1.0,
        ("cfstream_executions_succeeded_total", (("task", task),)): 1.0,
    }
    got = wait_until(lambda: (lambda m: m if all(m.get(k) == v for k, v in
                                                 worker_expected.items()) else None)(
        samples(f"{worker}/metrics")))
    assert got, samples(f"{worker}/metrics")

    consumer = Consumer({"bootstrap.servers": settings.bootstrap_servers, "group.id": "unused"})
    consumer.assign([TopicPartition(settings.dead_letter_topic, 0, 0)])
    parked = wait_until(lambda: consumer.consume(1, 1.0))
    consumer.close()
    assert parked and parked[0].value() == b"{not json"
    headers = dict(parked[0].headers() or [])
    assert headers["cfstream-reason"].startswith(b"not valid JSON")
    assert headers["cfstream-source"].startswith(settings.calls_topic.encode())
