"""The processor's loop (cfstream.processor.loop) in this process, on the real broker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

import cfstream as cf
from cfstream.kafka.config import consumer_config
from cfstream.kafka.topics import ensure_topics
from cfstream.processor.loop import Processor
from cfstream.processor.partition import PartitionTask

pytestmark = pytest.mark.kafka


@pytest.mark.timeout(120)
def test_a_failed_turn_commits_nothing(settings: cf.Settings, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A turn that could not persist its batch stops the replica with its input uncommitted,
    so the next owner reads it again (committing on the way out would lose it)."""
    settings = settings.model_copy(update={"state_dir": tmp_path, "partitions": 1})
    ensure_topics(settings)
    client = cf.Client(settings)
    cf.submit("tests:notify", [1], {}, client=client)
    assert client.flush(30) == 0
    client.close()

    def fail(task: PartitionTask, changelog_offset: Any) -> None:
        if task.position > 0:  # the turn that read the call
            raise OSError("No space left on device")

    monkeypatch.setattr(PartitionTask, "write", fail)
    with pytest.raises(OSError, match="No space"):
        Processor(settings).run()

    consumer = Consumer(consumer_config(settings, settings.processor_group))
    try:
        (committed,) = consumer.committed([TopicPartition(settings.calls_topic, 0)], timeout=30)
    finally:
        consumer.close()
    assert committed.offset < 1
