"""The chaos harness, short: 3000 calls over 300 keys in ~100 s while 3 processor replicas are
SIGKILLed, a worker is SIGKILLed and the broker restarts. Nothing may be lost or run twice.

Runs ``python -m bench.chaos`` as a subprocess (it starts its own broker, processes and
producer), with a time limit the harness enforces itself; the summary comes back as JSON.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from chaos_run import GRACE_S, run_harness

from cfstream.worker.starting import MOST_AHEAD_PER_THREAD

pytestmark = [pytest.mark.kafka, pytest.mark.long]

# The harness stops itself within this; the test allows a little more for the subprocess.
DURATION_LIMIT = 480
# Executions a worker holds begun or announced: its threads (8 by default) and as many as it
# announces ahead of them (cfstream.worker.starting).
HELD = 8 * (1 + MOST_AHEAD_PER_THREAD)
ARGS = ["--calls", "3000", "--keys", "300", "--rate", "30", "--processor-kills", "3",
        "--worker-kills", "1", "--broker-restart"]


@pytest.mark.timeout(DURATION_LIMIT + GRACE_S + 30)
def test_short_chaos_run_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    summary, report, code = run_harness(tmp_path, ARGS, DURATION_LIMIT)

    assert summary["submitted"] == 3000, report
    assert summary["undelivered"] == 0, report
    assert summary["actions"].get("kill_processor") == 3, report
    assert summary["actions"].get("kill_worker") == 1, report
    assert summary["actions"].get("restart_broker") == 1, report
    assert summary["lost"] == 0, report
    # A run a killed worker began, or announced (its started event out) and had yet to begin, is
    # reported failed (WorkerLost), not run again: at most what a worker holds so, per kill.
    assert summary["cut_short"] <= HELD * summary["actions"]["kill_worker"], report
    assert summary["duplicated"] == 0, report
    assert summary["superseded_ran"] == 0, report
    # Every result, collected one by one after the load: all there, in well under a second
    # each (before issue #17, 3,096 of 3,400 such waits timed out).
    # A call whose run a killed worker began or announced and never reported ends as failed
    # (WorkerLost): these tasks have no retries, and it is not run twice.
    collected = summary["collect"]
    lost_with_worker = collected.get("failed: WorkerLost", 0)
    assert collected.get("returned", 0) + lost_with_worker == 3000, report
    assert lost_with_worker <= HELD * summary["actions"]["kill_worker"], report
    assert collected["seconds"] < 30, report
    assert code == 0, report
