"""Creating the topics (cfstream.kafka.topics and `cfstream topics create`), on the broker."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
import uuid

import pytest
from confluent_kafka.admin import AdminClient

from cfstream.errors import ConfigurationError, KafkaUnavailable
from cfstream.kafka import topics
from cfstream.kafka.topics import Notice, ensure_topics, topic_specs
from cfstream.settings import Settings


def test_a_wait_is_named_once_it_takes_more_than_a_moment(
        caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    notice = Notice("creating topics", clock=lambda: now[0])
    caplog.set_level(logging.INFO, logger=topics.__name__)
    said = []
    for t in (100.5, 101.9, 102.1, 104.0, 107.0, 107.2):
        now[0] = t
        notice(["b.calls", "a.events"])
        said.append(len(caplog.records))
    # Quiet for NOTICE_AFTER (2 s), then once every NOTICE_INTERVAL (5 s).
    assert said == [0, 0, 1, 1, 1, 2]
    assert caplog.records[0].getMessage().startswith("creating topics a.events, b.calls (2s so far")


def test_an_unreachable_broker_is_named_while_waiting(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{s.getsockname()[1]}"  # nothing listens once closed
    monkeypatch.setattr(topics, "ADMIN_TIMEOUT", 3.0)
    monkeypatch.setattr(topics, "NOTICE_AFTER", 0.5)
    caplog.set_level(logging.INFO, logger=topics.__name__)
    with pytest.raises(KafkaUnavailable, match="cannot reach Kafka"):
        ensure_topics(Settings(bootstrap_servers=address, topic_prefix="unreachable"))
    waits = [r.getMessage() for r in caplog.records if r.name == topics.__name__]
    assert waits and all(m.startswith(f"waiting for Kafka at {address} (") for m in waits)


def test_a_check_begun_early_and_failed_is_reported_once_by_the_next(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A replica begins its topics check in a thread at launch: its own check then raises that
    check's error, after one wait, not two."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.setattr(topics, "ADMIN_TIMEOUT", 2.0)
    settings = Settings(bootstrap_servers=address, topic_prefix="unreachable-early")
    began = time.monotonic()
    topics.ensure_topics_soon(settings)
    with pytest.raises(KafkaUnavailable, match="cannot reach Kafka"):
        ensure_topics(settings)
    assert time.monotonic() - began < 3.5  # one ADMIN_TIMEOUT (2 s), not two


@pytest.mark.kafka
def test_a_check_begun_early_gives_its_answer_to_the_next(kafka_bootstrap: str,
                                                          topic_prefix: str) -> None:
    settings = Settings(bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix)
    topics.ensure_topics_soon(settings)
    assert sorted(ensure_topics(settings)) == sorted(topic_specs(settings))  # what it created
    assert set(topics.shapes(settings, topic_specs(settings))) == set(topic_specs(settings))
    assert ensure_topics(settings) == []  # done once a process


@pytest.mark.kafka
def test_topics_create_prints_the_table_and_logs_what_it_created(kafka_bootstrap: str) -> None:
    # Short names: the table is not wrapped at 80 columns.
    prefix = f"tc-{uuid.uuid4().hex[:8]}"
    settings = Settings(bootstrap_servers=kafka_bootstrap, topic_prefix=prefix)
    env = {**os.environ, "CFSTREAM_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
           "CFSTREAM_TOPIC_PREFIX": settings.topic_prefix, "CFSTREAM_REPLICATION_FACTOR": "1",
           "CFSTREAM_LOG_FORMAT": "text", "CFSTREAM_LOG_LEVEL": "INFO"}

    def create() -> subprocess.CompletedProcess[str]:
        result = subprocess.run([sys.executable, "-m", "cfstream", "topics", "create"],
                                capture_output=True, text=True, timeout=120, env=env)
        assert result.returncode == 0, result.stderr
        return result

    names = list(topic_specs(settings))
    first = create()
    assert [line.split()[0] for line in first.stdout.splitlines()] == names
    assert all(line.split()[-1] == "created" for line in first.stdout.splitlines())
    # What each topic has on the cluster, and why (the replication on stderr, said once).
    assert all("RF 1  min ISR 1" in line for line in first.stdout.splitlines())
    assert first.stderr.count("replication factor 1 (CFSTREAM_REPLICATION_FACTOR), "
                              "min.insync.replicas 1 (auto: factor - 1)") == 1
    assert all(f"created topic {name}" in first.stderr for name in names)
    second = create()
    assert all(line.split()[-1] == "exists" for line in second.stdout.splitlines())
    assert "created topic" not in second.stderr and "replication factor" not in second.stderr


@pytest.mark.kafka
def test_topics_are_replicated_for_the_cluster_unless_set(
        kafka_bootstrap: str, topic_prefix: str) -> None:
    settings = Settings(bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix)
    brokers = len(AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics(
        timeout=10).brokers)
    assert ensure_topics(settings)
    created = topics.shapes(settings, topic_specs(settings))
    assert set(created) == set(topic_specs(settings))
    factor = min(3, brokers)
    assert all((s.replicas, s.min_insync) == (factor, max(1, factor - 1))
               for s in created.values()), created


@pytest.mark.kafka
def test_more_replicas_than_brokers_stops_before_creating(
        kafka_bootstrap: str, topic_prefix: str) -> None:
    settings = Settings(bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix,
                        replication_factor=1000)
    with pytest.raises(ConfigurationError, match="CFSTREAM_REPLICATION_FACTOR is 1000"):
        ensure_topics(settings)
    assert topics.shapes(settings, topic_specs(settings)) == {}
