"""Warm replicas (CFSTREAM_STANDBY_REPLICAS) with real processes on the real broker.

Two static replicas keep standby copies of each other's partitions. When one goes (killed, or
stopped and handing over), the other takes its partitions over from those copies: it replays
only what a copy had yet to read, and the calls pending there fire once, on time.
"""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Callable

import pytest
from confluent_kafka.admin import AdminClient
from harness import LATE_MS, GroupSnapshot, Pipeline, PipelineFactory
from test_static_membership import (
    NAMES,
    assert_on_time,
    fired_once,
    pending_calls,
    static_processor,
    two_static_replicas,
)

from cfstream.clock import now_ms
from cfstream.dev.services import Service
from cfstream.processor.membership import SESSION_TIMEOUT_MS

pytestmark = pytest.mark.kafka

TAKEN_OVER = re.compile(r"\[(\d+)\]: running from offset \d+ \((\d+) changelog records restored, "
                        r"([^)]+)\)")
COPYING = re.compile(r"\[(\d+)\]: standby copy from offset")
# Copies start at once here (30 s by default, so a rolling restart does not copy for nothing).
ENV = {"CFSTREAM_STANDBY_DELAY": "0"}


def wait_log(service: Service, done: Callable[[str], bool], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while not done(log := service.log()):
        assert time.monotonic() < deadline, service.tail(30)
        time.sleep(0.1)
    return log


def copies_everything_of_the_other(pipeline: Pipeline, before: GroupSnapshot) -> None:
    """Wait until each replica copies every partition the other owns."""
    for name, other in (NAMES, NAMES[::-1]):
        service = pipeline.services.started[name]
        wanted = {str(p) for p in before.held[other]}
        wait_log(service, lambda log, wanted=wanted: wanted <= set(COPYING.findall(log)),
                 timeout=60)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["killed", "stopped"])
def test_a_takeover_starts_from_the_standby_copy(pipeline_factory: PipelineFactory,
                                                 admin: AdminClient, sig: signal.Signals) -> None:
    with two_static_replicas(pipeline_factory, admin, **ENV) as (pipeline, watch, before):
        copies_everything_of_the_other(pipeline, before)
        calls = pending_calls(pipeline, delay=4)
        survivor = pipeline.services.started["processor-0"]
        seen = len(survivor.log())
        gone = set(before.held["processor-1"])
        stopped_at = now_ms()
        pipeline.services.stop("processor-1", sig=sig)
        log = wait_log(
            survivor, lambda log: gone <= {int(p) for p, _, _ in TAKEN_OVER.findall(log[seen:])},
            timeout=SESSION_TIMEOUT_MS / 1000 + 30)
        took = {int(p): (int(n), source) for p, n, source in TAKEN_OVER.findall(log[seen:])}
        assert {p: s for p, (_, s) in took.items()} == dict.fromkeys(gone, "from a standby")
        # A copy is at most a tail behind: at most the calls of this test, 2 records each.
        assert all(n <= 2 * len(calls) for n, _ in took.values()), took
        starts = fired_once(pipeline, calls)
        # Killed: nothing moves until the session runs out. Stopped: it hands over at once.
        away_ms = SESSION_TIMEOUT_MS if sig == signal.SIGKILL else 0
        assert_on_time(starts, stopped_at + away_ms + LATE_MS)


def test_a_replica_back_from_a_stop_warms_up_before_it_joins(
        pipeline_factory: PipelineFactory, admin: AdminClient) -> None:
    """A rolling restart: processor-1 stops (handing over), and starts again. It copies what it
    will be given before it joins, so it takes nothing cold."""
    with two_static_replicas(pipeline_factory, admin, **ENV) as (pipeline, watch, before):
        copies_everything_of_the_other(pipeline, before)
        pipeline.services.stop("processor-1", sig=signal.SIGTERM)
        watch.wait_for(lambda s: set(s.held) == {"processor-0"} and s.state == "STABLE",
                       timeout=30)
        calls = pending_calls(pipeline, delay=6)
        seen = len(pipeline.services.log("processor-1"))
        restarted_at = now_ms()
        back = static_processor(pipeline, "processor-1", **ENV)
        after = watch.wait_for(lambda s: s.state == "STABLE" and all(
            s.held.get(name) for name in NAMES), timeout=60, since_ms=restarted_at)
        log = wait_log(back, lambda log: len(TAKEN_OVER.findall(log[seen:])) >= len(
            after.held["processor-1"]), timeout=30)[seen:]
        assert "warming up" in log and "warmed up in" in log, back.tail(30)
        sources = {int(p): s for p, _, s in TAKEN_OVER.findall(log)}
        assert sources == dict.fromkeys(after.held["processor-1"], "from a standby")
        starts = fired_once(pipeline, calls)
        assert_on_time(starts, restarted_at)
