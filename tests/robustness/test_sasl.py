"""SASL_PLAINTEXT (PLAIN): processor, worker and client configured only through the
CFSTREAM_SECURITY_PROTOCOL / CFSTREAM_SASL_* settings, against a second broker whose SASL listener
is the only address they are given; and what a wrong password does."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pipeline_tasks
import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from harness import EventLog, Services

import cfstream as cf
from cfstream.dev import broker as dev_broker
from cfstream.dev.broker import LocalBroker
from cfstream.errors import KafkaUnavailable
from cfstream.kafka.topics import ensure_topics

pytestmark = pytest.mark.kafka

USER, PASSWORD, WRONG_PASSWORD = "alice", "alice-secret", "wrong-secret"
READY_TIMEOUT = 120
# cfstream.kafka.topics.ADMIN_TIMEOUT (30 s) bounds how long a bad login takes to surface.
FAIL_TIMEOUT = 90


def sasl_env(password: str) -> dict[str, str]:
    return {"CFSTREAM_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "CFSTREAM_SASL_MECHANISM": "PLAIN",
            "CFSTREAM_SASL_USERNAME": USER, "CFSTREAM_SASL_PASSWORD": password}


def sasl_settings(bootstrap: str, prefix: str, password: str = PASSWORD) -> cf.Settings:
    return cf.Settings(bootstrap_servers=bootstrap, topic_prefix=prefix, partitions=2,
                       security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN",
                       sasl_username=USER, sasl_password=password)


@pytest.fixture(scope="module")
def sasl_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    """A broker of its own with a SASL_PLAINTEXT listener, beside the session's broker."""
    broker = LocalBroker(port=None, data_dir=tmp_path_factory.mktemp("kafka-sasl"),
                         sasl_users={USER: PASSWORD, "bob": "bob-secret"})
    try:
        broker.start()
    except KafkaUnavailable as exc:
        if os.environ.get("CFSTREAM_BOOTSTRAP_SERVERS"):
            pytest.skip(f"no local broker for the SASL tests: {exc}")
        pytest.fail(f"could not start the SASL broker: {exc}", pytrace=False)
    try:
        yield broker
    finally:
        broker.stop()


def test_the_sasl_listener_is_reported_and_needs_a_login(sasl_broker: LocalBroker) -> None:
    status = dev_broker.status(sasl_broker.data_dir)
    assert status.sasl_bootstrap_servers == sasl_broker.sasl_bootstrap_servers
    assert status.sasl_port != status.port
    # PLAINTEXT still answers on its own port...
    assert AdminClient({"bootstrap.servers": sasl_broker.bootstrap_servers}).list_topics(
        timeout=10).brokers
    # ...and a client without SASL gets nothing from the SASL port.
    plain = AdminClient({"bootstrap.servers": sasl_broker.sasl_bootstrap_servers,
                         "log_level": 0})
    with pytest.raises(KafkaException):
        plain.list_topics(timeout=3)


def test_a_delayed_deferred_call_runs_end_to_end_over_sasl(
        sasl_broker: LocalBroker, tmp_path: Path) -> None:
    settings = sasl_settings(sasl_broker.sasl_bootstrap_servers, f"sasl-{uuid.uuid4().hex[:8]}")
    ensure_topics(settings)
    services = Services(settings, tmp_path)
    client = cf.Client(settings)
    events = EventLog(settings)
    try:
        services.processor("processor", **sasl_env(PASSWORD))
        services.worker("worker", **sasl_env(PASSWORD))
        pipeline_tasks.slow.submit_to(client, 0).result(timeout=READY_TIMEOUT)

        user = uuid.uuid4().hex[:8]
        first = pipeline_tasks.notify.submit_to(client, user, 7)
        time.sleep(0.3)
        second = pipeline_tasks.notify.submit_to(client, user, 7)
        started = time.time()
        # Whoever waits on the replaced call gets the replacing call's result.
        assert first.result(timeout=60) == f"{user}:7"
        assert second.result(timeout=10) == f"{user}:7"
        ran = events.one(second.id, "succeeded")
        scheduled = events.one(second.id, "scheduled")
        assert events.one(first.id, "deferred")["successor"] == second.id
        assert not events.of(first.id, "started")
        assert scheduled["due_ms"] == scheduled["submitted_ms"] + int(pipeline_tasks.D * 1000)
        assert ran["ts_ms"] >= scheduled["due_ms"]
        assert time.time() - started < 30
        for name in ("processor", "worker"):
            assert services.started[name].running, services.log(name)[-3000:]
    finally:
        events.close()
        client.close()
        services.close()


@dataclass
class BadLogin:
    error: BaseException | None
    seconds: float
    services: Services
    codes: dict[str, int | None]


@pytest.fixture(scope="module")
def bad_login(sasl_broker: LocalBroker,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[BadLogin]:
    """A processor, a worker and a client with a wrong password, all started at once."""
    settings = sasl_settings(sasl_broker.sasl_bootstrap_servers,
                             f"sasl-bad-{uuid.uuid4().hex[:8]}", password=WRONG_PASSWORD)
    services = Services(settings, tmp_path_factory.mktemp("sasl-bad"))
    services.processor("processor", **sasl_env(WRONG_PASSWORD))
    services.worker("worker", **sasl_env(WRONG_PASSWORD))
    client = cf.Client(settings)
    began = time.monotonic()
    error: BaseException | None = None
    try:
        cf.submit("pipeline_tasks:slow", [0], client=client)
    except Exception as exc:  # what it is, is what the tests check
        error = exc.with_traceback(None)  # its frames hold the client's Kafka handles
    seconds = time.monotonic() - began
    codes: dict[str, int | None] = {}
    for name, service in services.started.items():
        codes[name] = service.wait(max(1.0, FAIL_TIMEOUT - (time.monotonic() - began)))
    try:
        yield BadLogin(error, seconds, services, codes)
    finally:
        services.close()


def test_a_wrong_password_fails_instead_of_hanging(bad_login: BadLogin) -> None:
    """Client, processor and worker give up with KafkaUnavailable naming the address."""
    bootstrap = bad_login.services.settings.bootstrap_servers
    assert isinstance(bad_login.error, KafkaUnavailable), bad_login.error
    assert bootstrap in str(bad_login.error)
    assert bad_login.seconds < FAIL_TIMEOUT
    for name in ("processor", "worker"):
        log = bad_login.services.log(name)
        assert bad_login.codes[name] not in (None, 0), f"{name} still runs or exited 0:\n{log}"
        assert bootstrap in log, log[-3000:]


def test_a_wrong_password_is_reported_as_such_and_at_once(bad_login: BadLogin) -> None:
    assert "authentication" in str(bad_login.error).lower()
    assert bad_login.seconds < 10
    for name in ("processor", "worker"):
        assert "authentication" in bad_login.services.log(name).lower()
