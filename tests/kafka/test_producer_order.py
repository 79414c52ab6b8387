"""cfstream's producers keep one request in flight and are not librdkafka's idempotent producer,
which busy-polls a core while its broker is slow to answer (cfstream.kafka.config)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from cfstream.client import Client
from cfstream.dev.broker import LocalBroker
from cfstream.ids import new_execution_id
from cfstream.kafka.config import producer_config
from cfstream.settings import Settings
from cfstream.wire import Call

RATE = 2_000  # calls/s, as a busy web service submits them
STALL_S = 1.5
# Measured: 3-12 % of a core while the broker is stopped, 104-106 % with the idempotent producer.
MAX_CPU_SHARE = 0.4


def test_producers_keep_one_request_in_flight_without_idempotence() -> None:
    config = producer_config(Settings(bootstrap_servers="127.0.0.1:1"))
    assert config["max.in.flight.requests.per.connection"] == 1
    assert config["enable.idempotence"] is False
    assert config["acks"] == "all"


def test_kafka_config_still_decides() -> None:
    settings = Settings(bootstrap_servers="127.0.0.1:1",
                        kafka_config={"max.in.flight.requests.per.connection": 5})
    assert producer_config(settings)["max.in.flight.requests.per.connection"] == 5


def _submit_for(client: Client, seconds: float, start: int) -> int:
    """Calls at RATE/s for ``seconds``, as ``task.submit()`` publishes them; returns the count."""
    began, sent = time.monotonic(), 0
    while (elapsed := time.monotonic() - began) < seconds:
        while sent < elapsed * RATE:
            now = int(time.time() * 1000)
            client.publish(Call(id=new_execution_id(now), task="tests.kafka:noop",
                                args=[start + sent], kwargs={}, submitted_ms=now,
                                delay_ms=3_600_000))
            sent += 1
        time.sleep(0.001)
    return sent


@pytest.mark.kafka
def test_a_client_waits_for_a_stalled_broker_without_spinning(tmp_path: Path) -> None:
    """The broker stops answering (SIGSTOP, as a long GC pause or a starved host would) while a
    service keeps submitting: the client's process stays near idle, and every call is delivered
    once the broker is back. One partition: the idempotent producer spins there at any rate."""
    # A broker of its own: the session's is shared with other test processes.
    with LocalBroker(port=None, data_dir=tmp_path / "kafka") as kafka:
        assert kafka.status is not None and kafka.status.pid is not None
        settings = Settings(bootstrap_servers=kafka.bootstrap_servers, topic_prefix="stall",
                            partitions=1)
        client = Client(settings)
        try:
            sent = _submit_for(client, 1.0, 0)  # connected, topics made, batches flowing
            os.kill(kafka.status.pid, signal.SIGSTOP)
            try:
                cpu_before, wall_before = time.process_time(), time.monotonic()
                sent += _submit_for(client, STALL_S, sent)
                share = (time.process_time() - cpu_before) / (time.monotonic() - wall_before)
            finally:
                os.kill(kafka.status.pid, signal.SIGCONT)
            assert client.flush(30) == 0, "calls still queued 30 s after the broker came back"
        finally:
            client.close()
        consumer = Consumer({"bootstrap.servers": kafka.bootstrap_servers, "group.id": "check"})
        try:
            _, end = consumer.get_watermark_offsets(TopicPartition(settings.calls_topic, 0),
                                                    timeout=10)
        finally:
            consumer.close()
        assert end >= sent, f"{sent} calls sent, {end} on the topic"  # a retry may write twice
        assert share < MAX_CPU_SHARE, (
            f"the client's process took {share:.0%} of a core while the broker was stopped "
            f"({sent} calls sent): its producer spins (librdkafka#3692)")
