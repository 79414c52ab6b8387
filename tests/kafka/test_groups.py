"""Describing a consumer group from a child process (cfstream.kafka.groups), on the broker."""

from __future__ import annotations

import os
import signal
from dataclasses import replace
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException

from cfstream.kafka import groups as groups_module
from cfstream.kafka.config import consumer_config
from cfstream.kafka.groups import GroupReadError, Groups
from cfstream.kafka.topics import ensure_topics
from cfstream.settings import Settings

pytestmark = pytest.mark.kafka


def test_a_group_is_described_and_a_dead_reader_is_replaced(settings: Settings) -> None:
    ensure_topics(settings)
    group = f"{settings.topic_prefix}.g"
    consumer = Consumer(consumer_config(settings, group, **{"client.id": "one"}))
    consumer.subscribe([settings.calls_topic])
    groups = Groups(settings)
    try:
        while not consumer.assignment():
            consumer.poll(0.1)
        described = groups.describe(group, 10).result(30)
        assert described.state == "STABLE"
        (member,) = described.members
        assert member.member_id == consumer.memberid()
        assert {p for _, p in member.partitions} == set(range(settings.partitions))

        # The child aborts with a request in flight (as librdkafka#4605 makes it do): that
        # request fails, and the next one goes to a new child.
        child = groups._child  # noqa: SLF001 - the test stops and kills our own child
        assert child is not None
        os.kill(child.pid, signal.SIGSTOP)  # so it cannot answer first
        asked = groups.describe(group, 10)
        os.kill(child.pid, signal.SIGKILL)
        with pytest.raises(GroupReadError, match="exited"):
            asked.result(30)
        assert groups.describe(group, 10).result(30).state == "STABLE"
        assert groups._child is not None and groups._child.pid != child.pid  # noqa: SLF001

        unknown = groups.describe(f"{settings.topic_prefix}.nobody", 10).result(30)
        assert unknown.state in ("DEAD", "EMPTY") and unknown.members == ()
    finally:
        groups.close()
        consumer.close()


def test_an_error_carries_its_kafka_code(settings: Settings) -> None:
    groups = Groups(replace(settings, bootstrap_servers="127.0.0.1:1"))
    try:
        with pytest.raises(GroupReadError) as raised:
            groups.describe("g", 1).result(30)
        assert raised.value.code in (KafkaError._TIMED_OUT, KafkaError._TRANSPORT,
                                     KafkaError._ALL_BROKERS_DOWN)
    finally:
        groups.close()


def test_the_reader_exits_when_its_parent_is_killed(settings: Settings, tmp_path: Any) -> None:
    """A replica killed with -9 leaves no reader behind."""
    import subprocess
    import sys
    import time

    script = ("import sys, time\n"
              "from cfstream.kafka.groups import Groups\n"
              "from cfstream.settings import Settings\n"
              f"groups = Groups(Settings(bootstrap_servers={settings.bootstrap_servers!r}))\n"
              "groups.describe('g', 5).result(30)\n"
              "print(groups._child.pid, flush=True)\n"
              "time.sleep(60)\n")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    parent.kill()
    parent.wait(10)
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{child}") and "zombie" not in open(
            f"/proc/{child}/status").read().lower():
        assert time.monotonic() < deadline, "the reader outlived its parent"
        time.sleep(0.1)


class _Description:
    state = type("State", (), {"name": "STABLE"})()
    members: list[Any] = []


class _Admin:
    """A stand-in admin client: fails its describes with ``error``, or answers STABLE."""

    def __init__(self, error: KafkaError | None) -> None:
        self.error = error

    def describe_consumer_groups(self, groups: list[str], request_timeout: float) -> Any:
        from concurrent.futures import Future

        future: Future[Any] = Future()
        if self.error is None:
            future.set_result(_Description())
        else:
            future.set_exception(KafkaException(self.error))
        return {groups[0]: future}


def test_after_a_failed_read_the_reader_exits_and_the_next_request_starts_another(
        settings: Settings) -> None:
    """A long-lived client timed out on every describe after a broker restart (the chaos run);
    a new one answered at once. The reader stops at a failed read (its process exits without
    tearing the client down), and the next request goes to a new reader."""
    import io
    import json

    from cfstream.kafka.group_reader import main

    requests = [json.dumps({"bootstrap.servers": "x"})] + [
        json.dumps({"group": "g", "timeout": 1})] * 3
    out = io.StringIO()
    main(io.StringIO("\n".join(requests) + "\n"), out,
         lambda config: _Admin(KafkaError(KafkaError._TIMED_OUT)))
    assert [json.loads(line).get("code") for line in out.getvalue().splitlines()] == [
        KafkaError._TIMED_OUT]  # and no more: it returned
    out = io.StringIO()
    main(io.StringIO("\n".join(requests) + "\n"), out, lambda config: _Admin(None))
    assert [json.loads(line) for line in out.getvalue().splitlines()] == [
        {"state": "STABLE", "members": []}] * 3

    groups = Groups(replace(settings, bootstrap_servers="127.0.0.1:1"))
    try:
        with pytest.raises(GroupReadError):
            groups.describe("g", 1).result(30)
        first = groups._child  # noqa: SLF001 - our own child
        assert first is not None and first.wait(10) == 0
        with pytest.raises(GroupReadError):
            groups.describe("g", 1).result(30)
        assert groups._child is not None and groups._child.pid != first.pid  # noqa: SLF001
    finally:
        groups.close()


def test_a_group_asked_for_at_start_is_answered_once_while_fresh(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """A replica asks for its group as it starts (Groups.asking); its warm-up takes that answer,
    and a later read asks again."""
    ensure_topics(settings)
    group = f"{settings.topic_prefix}.asked"
    groups = Groups.asking(settings, group)
    try:
        early, _ = groups._asked[group]  # noqa: SLF001 - our own reader's early answer
        first = groups.describe(group, 10)
        assert first is early and first.result(30).members == ()
        again = groups.describe(group, 10)
        assert again is not first  # taken once
        again.result(30)
        monkeypatch.setattr(groups_module, "ASKED_FRESH_S", 0.0)
        stale = Groups.asking(settings, group)
        try:
            asked, _ = stale._asked[group]  # noqa: SLF001 - our own reader's early answer
            later = stale.describe(group, 10)
            assert later is not asked and later.result(30).members == ()  # asked again
        finally:
            stale.close()
    finally:
        groups.close()
