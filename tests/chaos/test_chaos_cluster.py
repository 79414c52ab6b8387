"""The chaos harness on a 3-node Kafka cluster, short (issue #19's multi-broker check): load for
45 s while the node leading a calls, a changelog and an executions partition is kill -9'd, one
after another, and each is started again. Nothing may be lost or run twice, no cfstream process
may restart, and no call may be more than 30 s late after a kill.

Issue #19's target is 15 s; on this 2-core box beside three JVMs the worst measured was
16-20 s (bench/README.md), so this bound guards against a regression rather than proving the
target. Before the dev cluster's 3 s broker session and the clients' 5 s metadata refresh, one
run here left a processor's partitions silent for good and the others were 33-64 s late.

Runs ``python -m bench.chaos --nodes 3`` as a subprocess (:mod:`chaos_run`).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from chaos_run import GRACE_S, run_harness

pytestmark = [pytest.mark.kafka, pytest.mark.long]

DURATION_LIMIT = 300
# The load: 45 s at 200 calls/s over 100 defer keys, 4 % of them delay-only, so ~8
# executions/s. On this 2-core box beside three JVMs the calls are late without any kill from
# about 1000 calls/s (bench/README.md), and beside the rest of the suite at 500 calls/s one kill
# left calls 43 s late: a light load keeps this a check of what a kill costs, not of the box.
RATE = 200
CALLS = 45 * RATE
MAX_EXTRA_DELAY_S = 30.0
ARGS = ["--nodes", "3", "--calls", str(CALLS), "--rate", str(RATE), "--keys", "100",
        "--delay-share", "0.04", "--max-extra-delay", str(MAX_EXTRA_DELAY_S)]
TOPICS = ("calls", "changelog", "executions")


@pytest.mark.timeout(DURATION_LIMIT + GRACE_S + 30)
def test_leader_kills_on_a_cluster_lose_nothing_and_restart_nothing(tmp_path: Path) -> None:
    summary, report, code = run_harness(tmp_path, ARGS, DURATION_LIMIT)

    assert summary["submitted"] == CALLS, report
    assert summary["undelivered"] == 0, report
    assert summary["chaos_errors"] == [], report
    assert summary["actions"] == {f"kill_leader:{t}": 1 for t in TOPICS}, report
    assert summary["lost"] == 0, report
    assert summary["duplicated"] == 0, report
    assert summary["superseded_ran"] == 0, report
    assert summary["crashes"] == [], report
    # Every kill's window held calls, and none of them was late by more than the target.
    windows = {w["kind"]: w for w in summary["windows"]}
    for topic in TOPICS:
        window = windows[f"leader:{topic}"]
        assert window["calls"] > 100, report
        assert window["worst_extra_delay_s"] <= MAX_EXTRA_DELAY_S, report
    assert code == 0, report
