"""The chaos harness on a 3-node Kafka cluster, short (issue #19's multi-broker check in make
test): load for 60 s while the node leading a calls, a changelog and an executions partition is
kill -9'd, one after another, and each is started again. Nothing may be lost or run twice, and
no cfstream process may restart (the two crashes this found are fixed: a processor aborted by
librdkafka#4605 while describing its group, and one that did not retry NOT_COORDINATOR).

Lateness is bounded at 60 s, not issue #19's 15 s: beside the rest of the suite on this 2-core
box the worst after a kill measured 25-35 s at 200 calls/s (43 s at 500/s), because three JVMs,
the services and the suite share two cores. The bound catches a partition left silent for good
(as one was before the dev cluster's 3 s broker session and the clients' 5 s metadata refresh);
`make chaos-cluster` measures the target alone (bench/README.md).

Runs ``python -m bench.chaos --nodes 3`` as a subprocess (:mod:`chaos_run`).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from chaos_run import GRACE_S, run_harness

pytestmark = [pytest.mark.kafka, pytest.mark.long]

# A cap, not a pace: the harness keeps 210 s of it for draining and teardown, so 420 leaves the
# 60 s of load room after a start-up of up to 150 s (a loaded box took 37 s; with 300 the load
# was cut short at 54 s in a run beside three test processes).
DURATION_LIMIT = 420
# The load: 60 s at 150 calls/s over 100 defer keys, 4 % of them delay-only, so ~6
# executions/s. On this 2-core box beside three JVMs the calls are late without any kill from
# about 1000 calls/s (bench/README.md), and beside the rest of the suite at 500 calls/s one kill
# left calls 43 s late: a light load keeps this a check of what a kill costs, not of the box.
# 60 s at least: each kill waits for the previous node to be back in sync (up to 36 s here under
# load), and the harness keeps the load on until 10 s after the last kill (a fresh-clone run had
# its last kill after a 60 s load had ended).
RATE = 150
CALLS = 60 * RATE
MAX_EXTRA_DELAY_S = 60.0
ARGS = ["--nodes", "3", "--calls", str(CALLS), "--rate", str(RATE), "--keys", "100",
        "--delay-share", "0.04", "--max-extra-delay", str(MAX_EXTRA_DELAY_S)]
TOPICS = ("calls", "changelog", "executions")


@pytest.mark.timeout(DURATION_LIMIT + GRACE_S + 30)
def test_leader_kills_on_a_cluster_lose_nothing_and_restart_nothing(tmp_path: Path) -> None:
    summary, report, code = run_harness(tmp_path, ARGS, DURATION_LIMIT)

    # The load goes on past CALLS until 10 s after the last kill action ended (it waits for its
    # node to be back and every replica in sync).
    assert summary["submitted"] >= CALLS, report
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
