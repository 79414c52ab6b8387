"""What every benchmark needs: a broker, topic prefixes, cfstream processes, raw Kafka clients,
offsets, disk readings, percentiles.

Nothing here changes cfstream: the processor and worker run as the real ``python -m cfstream``
subprocesses (:mod:`cfstream.dev.services`), configured only through ``CFSTREAM_*`` variables,
the way a deployment runs them.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

from cfstream.dev.services import Services, pythonpath
from cfstream.kafka.config import admin_config, consumer_config, producer_config
from cfstream.kafka.retry import partitions, watermarks
from cfstream.kafka.topics import ensure_topics
from cfstream.settings import Settings

REPO = Path(__file__).resolve().parent.parent
TASKS_MODULE = "bench.bench_tasks"
# Partitions of the calls/executions topics in every benchmark: the pipeline tests' count. Four
# RocksDB stores are what a 2-core box handles without the benchmark measuring store juggling.
PARTITIONS = 4
# A phase longer than this says how far it got, this often, so a long run is seen to move.
PROGRESS_INTERVAL = 5.0


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Progress:
    """``progress(done)`` logs ``what: done of total (share), elapsed, rate`` every
    PROGRESS_INTERVAL seconds; ``progress.finish()`` a last line if any was logged."""

    def __init__(self, what: str, total: int, unit: str = "records") -> None:
        self.what, self.total, self.unit = what, total, unit
        self.started = self.last = time.monotonic()
        self.done = 0
        self.said = False

    def __call__(self, done: int) -> None:
        self.done = done
        now = time.monotonic()
        if now - self.last >= PROGRESS_INTERVAL:
            self.last = now
            self.said = True
            log(self.line(now))

    def finish(self) -> None:
        if self.said:
            log(self.line(time.monotonic()))

    def line(self, now: float) -> str:
        elapsed = now - self.started
        share = f" ({self.done / self.total:.0%})" if self.total else ""
        return (f"{self.what}: {self.done:,} of {self.total:,} {self.unit}{share}, "
                f"{elapsed:.0f}s, {self.done / max(elapsed, 1e-9):,.0f}/s")


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100), nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return float(ordered[rank])


def summary(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50": percentile(values, 50), "p99": percentile(values, 99),
            "max": max(values) if values else float("nan")}


def dir_bytes(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += (Path(root) / name).stat().st_size
    return total


# -- the broker and one prefix per benchmark ------------------------------------------------------

@contextlib.contextmanager
def kafka() -> Iterator[str]:
    """``$CFSTREAM_BOOTSTRAP_SERVERS`` if set, else a LocalBroker of our own on a free port."""
    external = os.environ.get("CFSTREAM_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    from cfstream.dev.broker import LocalBroker

    with tempfile.TemporaryDirectory(prefix="cfstream-bench-kafka-") as tmp:
        started = time.monotonic()
        with LocalBroker(port=None, data_dir=Path(tmp)) as broker:
            log(f"broker {broker.bootstrap_servers} up in {time.monotonic() - started:.1f}s")
            yield broker.bootstrap_servers


# (bootstrap, prefix) of each new_settings(), until delete_created_topics() deletes its topics.
_CREATED: list[tuple[str, str]] = []


def new_settings(bootstrap: str, name: str, partitions: int = PARTITIONS) -> Settings:
    prefix = f"bench-{name}-{uuid.uuid4().hex[:6]}"
    settings = Settings(bootstrap_servers=bootstrap, topic_prefix=prefix, partitions=partitions,
                        http_port=0)
    _CREATED.append((bootstrap, prefix))
    ensure_topics(settings)
    return settings


def create_topic(settings: Settings, name: str, partitions: int = PARTITIONS) -> str:
    admin = AdminClient(admin_config(settings))
    for future in admin.create_topics([NewTopic(name, num_partitions=partitions,
                                                replication_factor=1)]).values():
        future.result(timeout=30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        topic = admin.list_topics(name, timeout=10).topics.get(name)
        if topic and topic.partitions and all(p.leader >= 0 for p in topic.partitions.values()):
            break
        time.sleep(0.05)
    return name


def delete_topics(settings: Settings) -> None:
    """Delete every topic of ``settings``' prefix (a round's, once measured), so that later rounds
    share the broker with no more partitions than the first did (session 17: ten mixed rounds
    that left theirs behind grew the lateness p50 from 21 to 61 ms)."""
    _delete_prefixed(settings.bootstrap_servers, [settings.topic_prefix])


def delete_created_topics() -> None:
    """Delete the topics of every prefix :func:`new_settings` handed out so far: a benchmark's,
    once it is done, so that the next shares the broker with none of them (the 10M pending keys'
    changelog, say)."""
    by_broker: dict[str, list[str]] = {}
    for bootstrap, prefix in _CREATED:
        by_broker.setdefault(bootstrap, []).append(prefix)
    _CREATED.clear()
    for bootstrap, prefixes in by_broker.items():
        _delete_prefixed(bootstrap, prefixes)


def _delete_prefixed(bootstrap: str, prefixes: list[str]) -> None:
    admin = AdminClient(admin_config(Settings(bootstrap_servers=bootstrap)))
    names = [name for name in admin.list_topics(timeout=30).topics
             if name.startswith(tuple(f"{prefix}." for prefix in prefixes))]
    if names:
        for future in admin.delete_topics(names, operation_timeout=30).values():
            try:
                future.result(timeout=60)
            except KafkaException as exc:  # gone already: what was wanted
                if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                    raise


# -- offsets ----------------------------------------------------------------------------------------

def end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    consumer = Consumer(consumer_config(settings, None))
    try:
        return {p: watermarks(consumer, topic, p)[1] for p in partitions(consumer, topic)}
    finally:
        consumer.close()


class GroupOffsets:
    """Committed offsets of a consumer group on one topic, polled through the admin API."""

    def __init__(self, settings: Settings, group: str, topic: str, partitions: list[int]) -> None:
        self.admin = AdminClient(admin_config(settings))
        self.group, self.topic, self.partitions = group, topic, partitions

    def committed(self) -> dict[int, int]:
        request = ConsumerGroupTopicPartitions(
            self.group, [TopicPartition(self.topic, p) for p in self.partitions])
        try:
            result = self.admin.list_consumer_group_offsets([request])[self.group].result(10)
        except Exception:  # group not known yet
            return {}
        return {tp.partition: tp.offset for tp in result.topic_partitions if tp.offset >= 0}

    def total(self) -> int:
        return sum(self.committed().values())


# -- cfstream processes -----------------------------------------------------------------------------

def services(settings: Settings, workdir: Path) -> Services:
    """cfstream processes for one benchmark: the bench package importable, and each serving
    /readyz and /metrics on a port of its own."""
    return Services(settings, workdir, import_paths=[REPO], worker_modules=[TASKS_MODULE],
                    serve_http=True, notify=log)


def child(settings: Settings) -> dict[str, Any]:
    """How a ``python -m bench.*`` child runs (subprocess keyword arguments): this environment,
    the settings and the bench package, from the repository, in a session of its own as the
    services are (:meth:`cfstream.dev.services.Service.start`), so that a raw baseline gets the
    CPU share a cfstream process gets."""
    env = {**os.environ, **settings.to_env(), "PYTHONPATH": pythonpath(REPO)}
    return {"env": env, "cwd": REPO, "start_new_session": True}


# -- raw Kafka --------------------------------------------------------------------------------------

def raw_producer(settings: Settings, warm_topic: str | None = None,
                 overrides: dict[str, Any] | None = None) -> Producer:
    """The producer cfstream's client uses (murmur2_random, one request in flight, same linger).

    With ``warm_topic``, one record goes there first and is waited for: a new producer's first
    records otherwise wait for its connection and metadata, which are no part of a latency."""
    producer = Producer(producer_config(settings, **(overrides or {})))
    if warm_topic is not None:
        producer.produce(warm_topic, key=b"bench-warm-up", value=b"")
        producer.flush(30)
    return producer


def produce(producer: Producer, topic: str, key: bytes, value: bytes) -> None:
    """``produce()``, waiting for room in a full local queue; then serves delivery reports."""
    while True:
        try:
            producer.produce(topic, key=key, value=value)
            break
        except BufferError:
            producer.poll(0.001)
    producer.poll(0)


def raw_consumer(settings: Settings, topic: str, **overrides: Any) -> Consumer:
    """A consumer assigned to every partition of ``topic`` from the beginning."""
    consumer = Consumer(consumer_config(settings, f"bench-raw-{uuid.uuid4().hex[:6]}",
                                        **overrides))
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions(consumer, topic)])
    return consumer


class LatencyReader:
    """Reads a topic in a thread from its current end; stamps each record with the time read.

    The thread keeps each record's bytes and decodes nothing: decoded values kept in a growing
    list made the reading process's garbage collector walk them all, and at 10k records/s its
    full collections (111 and 182 ms in a 5 s timers round at 10k/s) showed up as the records
    being read that much later. :attr:`records` decodes them when asked."""

    def __init__(self, settings: Settings, topic: str, *,
                 decode: Callable[[bytes], Any] = json.loads,
                 overrides: dict[str, Any] | None = None) -> None:
        """``overrides``: consumer settings over a 10 ms fetch wait (read times count)."""
        self._read: list[tuple[float, int, bytes]] = []  # (read at ms, record timestamp, bytes)
        self._decoded: list[tuple[float, int, Any]] = []
        self._stop = threading.Event()
        self._consumer = Consumer(consumer_config(settings, f"bench-lat-{uuid.uuid4().hex[:6]}",
                                                  **{"fetch.wait.max.ms": 10, **(overrides or {})}))
        parts = self._consumer.list_topics(topic, timeout=30).topics[topic].partitions
        ends = end_offsets(settings, topic)
        self._consumer.assign([TopicPartition(topic, p, ends[p]) for p in parts])
        self._decode = decode
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(30)

    @property
    def records(self) -> Sequence[tuple[float, int, Any]]:
        """(read at ms, record timestamp, decoded value) of every record read so far, decoded
        here (from one thread at a time; a record that does not decode raises)."""
        decoded, read = self._decoded, self._read
        for read_ms, ts, raw in read[len(decoded):]:
            decoded.append((read_ms, ts, self._decode(raw)))
        return decoded

    def _run(self) -> None:
        first = True
        while not self._stop.is_set():
            # poll() returns at the first record; consume(n, timeout) would wait out its timeout
            # for n records and add that wait to every latency.
            message = self._consumer.poll(0.05)
            if first:
                self._ready.set()
                first = False
            if message is None:
                continue
            read_ms = time.time() * 1000
            batch = [message, *self._consumer.consume(1000, 0)]
            for message in batch:
                if message.error() is not None:
                    continue
                _kind, ts = message.timestamp()
                self._read.append((read_ms, ts, message.value() or b""))

    def wait_count(self, count: int, timeout: float,
                   predicate: Callable[[Any], bool] | None = None, what: str = "") -> int:
        """Wait until ``count`` records (those ``predicate`` takes, if given) were read. With a
        predicate the records are decoded as they come, in the caller's thread."""
        deadline = time.monotonic() + timeout
        progress = Progress(what or "reading", count)
        while True:
            found = (len(self._read) if predicate is None
                     else sum(1 for record in self.records if predicate(record[2])))
            progress(found)
            if found >= count:
                progress.finish()
                return found
            if time.monotonic() >= deadline:
                return found
            time.sleep(0.1)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._consumer.close()


def paced(total: int, rate: float, send: Callable[[int], None], what: str = "sending") -> float:
    """Call ``send(i)`` for i in range(total) at ``rate`` per second; returns the seconds taken."""
    started = time.monotonic()
    progress = Progress(what, total)
    i = 0
    while i < total:
        due = min(total, int((time.monotonic() - started) * rate) + 1)
        while i < due:
            send(i)
            i += 1
        progress(i)
        time.sleep(0.001)
    progress.finish()
    return time.monotonic() - started


@dataclass
class Result:
    """One benchmark's outcome: table rows plus whatever detail is worth keeping in the JSON."""

    name: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def row(self, metric: str, cfstream: float | None, raw: float | None, unit: str,
            target: str = "", higher_is_better: bool = True) -> None:
        ratio = (cfstream / raw) if cfstream is not None and raw else None
        self.rows.append({"metric": metric, "cfstream": cfstream, "raw": raw, "unit": unit,
                          "ratio": ratio, "target": target,
                          "higher_is_better": higher_is_better})
