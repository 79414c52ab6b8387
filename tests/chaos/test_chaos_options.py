"""The chaos harness's options: a cluster run kills partition leaders and nothing else."""

from __future__ import annotations

import random

import pytest

from bench.chaos import leaders
from bench.chaos.__main__ import CLUSTER_LOAD_S, CLUSTER_RATE, parse
from bench.chaos.harness import Config, plan_chaos


def test_a_cluster_run_kills_one_leader_of_each_topic_and_no_process() -> None:
    config = parse(["--nodes", "3"])
    assert (config.rate, config.processor_kills, config.worker_kills) == (CLUSTER_RATE, 0, 0)
    assert config.calls == CLUSTER_RATE * CLUSTER_LOAD_S
    assert not config.broker_restart and not config.collect
    plan = plan_chaos(config, 60.0, random.Random(0))
    assert [action for _, action in plan] == [f"kill_leader:{t}" for t in leaders.TOPICS]
    assert [round(at) for at, _ in plan] == [5, 23, 42]
    baseline = parse(["--nodes", "3", "--no-leader-kills"])
    assert plan_chaos(baseline, 60.0, random.Random(0)) == []


def test_a_single_broker_run_keeps_its_defaults() -> None:
    config = parse([])
    assert (config.nodes, config.rate, config.processor_kills) == (1, Config().rate, 10)
    assert (config.keys, config.delay_share) == (Config().keys, Config().delay_share)
    assert config.broker_restart and config.collect


@pytest.mark.parametrize("flag", [["--processor-kills", "1"], ["--worker-kills", "1"],
                                  ["--broker-restart"]])
def test_a_cluster_run_refuses_process_kills(flag: list[str],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse(["--nodes", "3", *flag])
    assert "only partition leaders are killed" in capsys.readouterr().err
