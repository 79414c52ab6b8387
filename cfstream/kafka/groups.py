"""Describing a consumer group from a child process.

librdkafka (2.16.0 and, as of 2026-12, every release) aborts the whole process when an admin
request to a group coordinator loses its connection midway: ``rd_kafka_enq_once_del_source_return:
Assertion `eonce->refcnt > 0' failed`` (librdkafka#4605, fix proposed in #5397). A coordinator's
broker dying is exactly when a replica wants to know its group, and it did abort a processor in
the cluster chaos test. So ``describe_consumer_groups`` runs in a long-lived child process
(:mod:`cfstream.kafka.group_reader`, run as a script: it imports nothing of cfstream, so it is up
in a fraction of a replica's own start-up): an abort there costs a restart of the child, and the
caller sees a failed read.

The child reads one JSON request per line on stdin (the first line: librdkafka options) and
answers each with one JSON line: the group's state and its members' assignments, or an error.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import IO, Any

from cfstream.kafka import group_reader
from cfstream.kafka.config import admin_config
from cfstream.settings import Settings

logger = logging.getLogger(__name__)

# How long the child waits for a description asked for at start (Groups.asking), and how long
# that answer is taken for the group as it is (later, it is asked again).
ASK_TIMEOUT = 10.0
ASKED_FRESH_S = 2.0


@dataclass(frozen=True)
class Member:
    member_id: str
    instance_id: str | None
    partitions: tuple[tuple[str, int], ...]  # (topic, partition)


@dataclass(frozen=True)
class Group:
    state: str  # ConsumerGroupState's name: STABLE, EMPTY, DEAD, PREPARING_REBALANCING, ...
    members: tuple[Member, ...]


class GroupReadError(Exception):
    """The group could not be read: ``code`` is the KafkaError code, or None if the child
    process died."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class Groups:
    """Asks a child process to describe groups; one request at a time, in order."""

    def __init__(self, settings: Settings) -> None:
        # The librdkafka options that cross a pipe (not the parent's logging callbacks).
        self.config = {k: v for k, v in admin_config(settings).items()
                       if isinstance(v, (str, int, float, bool))}
        self._lock = threading.Lock()
        self._child: subprocess.Popen[str] | None = None
        self._pending: list[Future[Group]] = []
        self._asked: dict[str, tuple[Future[Group], float]] = {}  # asked at start: (answer, when)

    @classmethod
    def asking(cls, settings: Settings, group: str, timeout: float = ASK_TIMEOUT) -> Groups:
        """A reader whose child process starts now, asked for ``group`` at once: the child takes
        about as long as a replica's own imports, and the replica's warm-up waits for that
        answer. The first :meth:`describe` of ``group`` takes it."""
        groups = cls(settings)
        groups._asked[group] = (groups.describe(group, timeout), time.monotonic())
        return groups

    def describe(self, group: str, timeout: float) -> Future[Group]:
        """The group's description, later; a failure is a :class:`GroupReadError`."""
        asked, when = self._asked.pop(group, (None, 0.0))
        if asked is not None and time.monotonic() - when <= ASKED_FRESH_S:
            return asked
        future: Future[Group] = Future()
        with self._lock:
            try:
                child = self._running()
                assert child.stdin is not None  # noqa: S101 - started with a pipe
                self._pending.append(future)
                child.stdin.write(json.dumps({"group": group, "timeout": timeout}) + "\n")
                child.stdin.flush()
            except OSError as exc:  # the child died: the next call starts another
                if future in self._pending:
                    self._pending.remove(future)
                future.set_exception(GroupReadError(f"describing {group}: {exc}"))
        return future

    def close(self) -> None:
        with self._lock:
            child, self._child = self._child, None
        if child is not None and child.stdin is not None:
            child.stdin.close()
            try:
                child.wait(5)
            except subprocess.TimeoutExpired:
                child.kill()

    def _running(self) -> subprocess.Popen[str]:
        child = self._child
        if child is not None and child.poll() is None:
            return child
        if child is not None:  # 0: it left after a failed read (see main)
            log = logger.debug if child.returncode == 0 else logger.warning
            log("the group reader exited with %s; starting another", child.returncode)
        child = subprocess.Popen(  # noqa: S603 - our own script, this interpreter
            [sys.executable, "-P", group_reader.__file__], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True, bufsize=1)
        assert child.stdin is not None and child.stdout is not None  # noqa: S101 - pipes
        child.stdin.write(json.dumps(self.config) + "\n")
        child.stdin.flush()
        self._child, self._pending = child, []  # a dead child's reader fails its own list
        threading.Thread(target=self._answers, args=(child, child.stdout, self._pending),
                         name="cfstream-group-reader", daemon=True).start()
        return child

    def _answers(self, child: subprocess.Popen[str], stdout: IO[str],
                 pending: list[Future[Group]]) -> None:
        """Settle ``child``'s requests in order; when it exits, fail the ones left."""
        for line in stdout:
            with self._lock:
                future = pending.pop(0) if pending else None
            if future is not None:
                _settle(future, json.loads(line))
        child.wait()
        with self._lock:
            failed = pending[:]
            pending.clear()
        for future in failed:
            future.set_exception(GroupReadError(
                f"the group reader exited with {child.returncode}"))


def _settle(future: Future[Group], answer: dict[str, Any]) -> None:
    if "error" in answer:
        future.set_exception(GroupReadError(answer["error"], answer.get("code")))
        return
    future.set_result(Group(answer["state"], tuple(
        Member(m["member_id"], m["instance_id"], tuple((t, p) for t, p in m["partitions"]))
        for m in answer["members"])))
