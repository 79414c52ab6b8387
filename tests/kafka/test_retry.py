"""Reading a topic's partitions while the cluster settles: a broker that has not yet heard of a
new topic answers with no partitions, which must be retried, not read as the truth."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from confluent_kafka import KafkaError
from confluent_kafka.admin import AdminClient

from cfstream.errors import KafkaUnavailable
from cfstream.kafka.config import admin_config
from cfstream.kafka.retry import partitions
from cfstream.kafka.topics import ensure_topics
from cfstream.settings import Settings


@dataclass
class Topic:
    partitions: dict[int, Any]
    error: KafkaError | None = None


@dataclass
class Metadata:
    topics: dict[str, Topic]


@dataclass
class Answers:
    """A client whose list_topics gives these answers in turn, then the last one again."""

    answers: list[Metadata]
    asked: int = 0
    timeouts: list[float] = field(default_factory=list)

    def list_topics(self, topic: str, timeout: float) -> Metadata:
        self.timeouts.append(timeout)
        answer = self.answers[min(self.asked, len(self.answers) - 1)]
        self.asked += 1
        return answer


UNKNOWN = Metadata({"t": Topic({}, KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART))})
EMPTY = Metadata({"t": Topic({})})
MISSING = Metadata({})
KNOWN = Metadata({"t": Topic({2: None, 0: None, 1: None})})


def test_an_unknown_or_empty_topic_is_asked_again_until_it_has_partitions() -> None:
    client = Answers([UNKNOWN, MISSING, EMPTY, KNOWN])
    assert partitions(client, "t", timeout=5) == [0, 1, 2]
    assert client.asked == 4


def test_a_topic_that_never_appears_says_what_to_do() -> None:
    client = Answers([UNKNOWN])
    with pytest.raises(KafkaUnavailable, match="no partitions.*cfstream topics create"):
        partitions(client, "t", timeout=1)
    assert client.asked > 1


def test_the_partitions_of_a_real_topic(settings: Settings) -> None:
    ensure_topics(settings)
    admin = AdminClient(admin_config(settings))
    topic = settings.events_topic
    assert partitions(admin, topic) == list(range(settings.partitions))
