"""Starting a partition's fetch at once, after a pause or a restore.

librdkafka wakes a consumer's fetcher when a partition's fetch starts (an assignment, a seek),
not when the partition is resumed: a resumed partition waits for the fetcher's next wake-up, up
to ~1 s. Measured: the first call made after a processor replica started was read ~1 s late in
3 of 4 runs while its partition was sought before its resume, 7 ms late once sought after it
(tests/processor/test_loop.py). So a partition is resumed, then sought.
"""

from __future__ import annotations

from collections.abc import Sequence

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

# Seek errors that mean another operation on the partition came first (see fetch_from).
OVERTAKEN = (KafkaError._STATE, KafkaError._OUTDATED)


def resume(consumer: Consumer, partitions: Sequence[TopicPartition]) -> None:
    """Resume ``partitions`` and fetch them now: each from its ``offset`` if it has one, else
    from where the consumer stands (one never fetched yet starts on its own)."""
    if not partitions:
        return
    consumer.resume(list(partitions))
    given = [tp for tp in partitions if tp.offset >= 0]
    rest = [tp for tp in partitions if tp.offset < 0]
    standing = consumer.position(rest) if rest else []
    for tp in [*given, *(tp for tp in standing if tp.offset >= 0)]:
        fetch_from(consumer, tp)


def fetch_from(consumer: Consumer, tp: TopicPartition) -> None:
    """Fetch ``tp`` from ``tp.offset`` now: left alone after an assignment, the consumer looks
    its start up again first (~35 ms at start-up).

    Offset 0 is sought as the partition's beginning, the same place (a partition whose log no
    longer starts at 0 would be reset to its start anyway): a fetcher already at 0 takes a seek
    to 0 for no new start and is not woken (0.55 s in tests/kafka/test_fetching.py), while the
    beginning is looked up first and then starts the fetch.

    A seek can be overtaken: a partition whose fetcher has not started yet (its own lookup waits
    behind a commit in flight) refuses with _STATE, and starts at its committed offset, the same
    place; one that librdkafka paused or resumed meanwhile (a rebalance beginning) answers
    _OUTDATED, and the newer operation decides where it fetches."""
    if tp.offset == 0:
        tp = TopicPartition(tp.topic, tp.partition, OFFSET_BEGINNING)
    try:
        consumer.seek(tp)
    except KafkaException as exc:
        error = exc.args[0] if exc.args else None
        if not isinstance(error, KafkaError) or error.code() not in OVERTAKEN:
            raise
