"""A group member's session outlives the loss of a broker (cfstream.kafka.sessions)."""

from __future__ import annotations

from concurrent.futures import Future
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient

from cfstream.kafka.sessions import MARGIN_MS, broker_session_ms, member_session_ms
from cfstream.settings import Settings


class Admin:
    """Stands in for AdminClient: ``brokers`` nodes reporting ``session`` ms."""

    def __init__(self, brokers: int, session: str | None) -> None:
        self.brokers = {i + 1: object() for i in range(brokers)}
        self.session = session
        self.asked: list[Any] = []

    def list_topics(self, timeout: float) -> Any:
        return SimpleNamespace(brokers=self.brokers, topics={})

    def describe_configs(self, resources: list[Any], request_timeout: float) -> dict[Any, Future]:
        self.asked.extend(resources)
        future: Future = Future()
        configs = {} if self.session is None else {
            "broker.session.timeout.ms": SimpleNamespace(value=self.session)}
        future.set_result(configs)
        return {resources[0]: future}


@pytest.mark.parametrize(("brokers", "session", "expected"), [
    (3, "9000", 9000 + MARGIN_MS),  # Kafka's default broker session: members need longer
    (3, "3000", 6000),  # the dev cluster's: the default is long enough
    (1, "9000", 6000),  # one broker: nothing to outlive
    (3, None, 6000),  # not reported
])
def test_the_session_outlives_the_clusters_broker_session(brokers: int, session: str | None,
                                                          expected: int) -> None:
    admin = Admin(brokers, session)
    assert member_session_ms(Settings(), 6000, admin) == expected  # type: ignore[arg-type]


def test_a_configured_session_or_kip848_is_taken_as_it_is() -> None:
    admin = Admin(3, "9000")
    configured = Settings(kafka_config={"session.timeout.ms": 7000})
    assert member_session_ms(configured, 6000, admin) == 7000  # type: ignore[arg-type]
    kip848 = Settings(kafka_config={"group.protocol": "consumer"})
    assert member_session_ms(kip848, 6000, admin) == 6000  # type: ignore[arg-type]
    assert admin.asked == []


@pytest.mark.kafka
def test_the_single_test_broker_leaves_the_default(settings: Settings) -> None:
    from cfstream.kafka.config import admin_config

    assert broker_session_ms(AdminClient(admin_config(settings))) is None
    assert member_session_ms(settings, 6000) == 6000
