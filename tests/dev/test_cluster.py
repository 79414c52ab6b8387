"""The local multi-node cluster: its layout and config, its CLI, and a node killed and back."""

from __future__ import annotations

import json
import socket
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from typer.testing import CliRunner

from cfstream.cli import app
from cfstream.dev import cluster_layout, node, procs, properties
from cfstream.dev.cluster import LocalCluster
from cfstream.errors import KafkaUnavailable
from cfstream.kafka import topics
from cfstream.kafka.config import admin_config
from cfstream.kafka.sessions import broker_session_ms, member_session_ms
from cfstream.kafka.topics import ensure_topics, topic_specs
from cfstream.processor.membership import SESSION_TIMEOUT_MS
from cfstream.settings import Settings

# ---- unit: layout and CLI ----------------------------------------------------------------


def test_ports_follow_the_port_asked_for_or_stay_what_they_were(tmp_path: Path) -> None:
    base = procs.free_port()
    ports = cluster_layout.draw_ports(tmp_path, 3, base)
    assert [ports[i].port for i in (1, 2, 3)] == [base, base + 1, base + 2]
    assert len({p for ps in ports.values() for p in (ps.port, ps.controller_port)}) == 6
    cluster_layout.write_configs(tmp_path, ports)
    # Without a port, a cluster started again comes back where it was (its ports are free).
    assert cluster_layout.draw_ports(tmp_path, 3, None) == ports
    assert cluster_layout.recorded_ports(tmp_path, 2) == ports[2]


def test_a_node_cannot_come_back_on_a_taken_port(tmp_path: Path) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        ports = cluster_layout.draw_ports(tmp_path, 2, None)
        ports[2] = node.Ports(port, ports[2].controller_port)
        cluster_layout.write_configs(tmp_path, ports)
        with pytest.raises(KafkaUnavailable, match=f"Node 2 must come back on port {port}"):
            cluster_layout.recorded_ports(tmp_path, 2)
        with pytest.raises(KafkaUnavailable, match=f"Port {port} .* already in use"):
            cluster_layout.draw_ports(tmp_path, 1, port)


def test_a_data_dir_holds_one_kind_of_kafka(tmp_path: Path) -> None:
    single = tmp_path / "single"
    (single / "logs").mkdir(parents=True)
    with pytest.raises(KafkaUnavailable, match="holds a single Kafka broker, not a cluster"):
        cluster_layout.claim(single, 3)
    record = cluster_layout.claim(tmp_path / "three", 3)
    assert json.loads((tmp_path / "three" / "cluster.json").read_text())["nodes"] == 3
    assert cluster_layout.claim(tmp_path / "three", 3) == record  # one cluster id, kept
    with pytest.raises(KafkaUnavailable, match="start it with --nodes 3"):
        cluster_layout.claim(tmp_path / "three", 5)
    done = CliRunner().invoke(app, ["kafka", "start", "--data-dir", str(tmp_path / "three")])
    assert done.exit_code == 1 and "start it with --nodes 3" in done.output


def test_cli_refuses_sasl_on_a_cluster(tmp_path: Path) -> None:
    done = CliRunner().invoke(app, ["kafka", "start", "--nodes", "3", "--sasl",
                                    "--data-dir", str(tmp_path)])
    assert done.exit_code == 2 and "single broker only" in done.output
    assert not (tmp_path / "cluster.json").exists()


def test_status_names_each_node_of_a_stopped_cluster(tmp_path: Path) -> None:
    cluster_layout.claim(tmp_path, 3)
    ports = cluster_layout.draw_ports(tmp_path, 3, None)
    cluster_layout.write_configs(tmp_path, ports)
    shown = CliRunner().invoke(app, ["kafka", "status", "--data-dir", str(tmp_path)])
    assert shown.exit_code == 3
    assert shown.stdout.splitlines() == [
        f"not running (cluster of 3 nodes, data dir {tmp_path.resolve()})",
        *(f"  node {i}: not running (port {ports[i].port})" for i in (1, 2, 3))]


# ---- the real thing: three JVMs, one killed -----------------------------------------------


def _produce_all(bootstrap: str, topic: str, count: int, timeout: float) -> float:
    """Seconds until ``count`` records to partition 0 are acknowledged by all in-sync replicas."""
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all",
                         "enable.idempotence": True, "partitioner": "murmur2_random",
                         "log_level": 0})
    errors: list[object] = []
    began = time.monotonic()
    for i in range(count):
        producer.produce(topic, key=b"k", value=str(i).encode(), partition=0,
                         on_delivery=lambda err, _msg: errors.append(err) if err else None)
    assert producer.flush(timeout) == 0, "records not acknowledged in time"
    assert not errors, errors
    return time.monotonic() - began


def _wait_for_isr(bootstrap: str, topic: str, size: int, timeout: float) -> list[int]:
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    deadline = time.monotonic() + timeout
    while True:
        isr = sorted(admin.list_topics(topic, timeout=5).topics[topic].partitions[0].isrs)
        if len(isr) >= size or time.monotonic() > deadline:
            return isr
        time.sleep(0.2)


@pytest.mark.kafka
def test_a_killed_leader_costs_seconds_and_rejoins(tmp_path: Path) -> None:
    runner = CliRunner()
    data_dir = str(tmp_path / "cluster")
    started = runner.invoke(app, ["kafka", "start", "--nodes", "3", "--port", "0",
                                  "--data-dir", data_dir])
    try:
        assert started.exit_code == 0, started.output
        bootstrap = started.stdout.strip()
        assert len(bootstrap.split(",")) == 3
        shown = runner.invoke(app, ["kafka", "status", "--data-dir", data_dir])
        assert shown.exit_code == 0 and shown.stdout.startswith(f"running: bootstrap {bootstrap}")
        assert len([line for line in shown.stdout.splitlines() if ": running, pid" in line]) == 3
        again = runner.invoke(app, ["kafka", "start", "--nodes", "3", "--port", "0",
                                    "--data-dir", data_dir])
        assert again.exit_code == 0 and "Already running (3 nodes" in again.output
        assert again.stdout.strip() == bootstrap
        cluster = LocalCluster(nodes=3, data_dir=data_dir).start()  # the one running
        assert cluster.bootstrap_servers == bootstrap

        settings = Settings(bootstrap_servers=bootstrap, topic_prefix=f"c-{uuid.uuid4().hex[:8]}",
                            partitions=2)
        ensure_topics(settings)
        # Created through one node: the others learn of the topics from the controller shortly
        # after, and the admin client below may ask any of them.
        names = topic_specs(settings)
        deadline = time.monotonic() + 30
        while len(shapes := topics.shapes(settings, names)) < len(names):
            assert time.monotonic() < deadline, f"topics not visible on every node: {shapes}"
            time.sleep(0.1)
        assert {(s.replicas, s.min_insync) for s in shapes.values()} == {(3, 2)}, shapes
        # The dev cluster fences a lost node after 3 s: the services' own sessions outlive it.
        assert broker_session_ms(AdminClient(admin_config(settings))) == properties.SESSION_MS
        assert member_session_ms(settings, SESSION_TIMEOUT_MS) == SESSION_TIMEOUT_MS
        topic = settings.calls_topic
        _produce_all(bootstrap, topic, 10, timeout=30)

        leader = cluster.leader(topic)
        storage = (leader.data_dir / "logs" / "meta.properties").read_text()
        leader.kill()
        assert not leader.running
        degraded = runner.invoke(app, ["kafka", "status", "--data-dir", data_dir])
        assert degraded.exit_code == 1 and "degraded, 2 of 3 nodes running" in degraded.stdout
        # Two replicas of three are still in sync: acks=all goes on once the dead one is out.
        stalled = _produce_all(bootstrap, topic, 10, timeout=30)
        assert stalled < properties.SESSION_MS / 1000 + 10
        assert cluster.leader(topic).node_id != leader.node_id

        leader.start()  # the same storage, KRaft metadata log included
        assert leader.running
        assert (leader.data_dir / "logs" / "meta.properties").read_text() == storage
        assert _wait_for_isr(bootstrap, topic, 3, timeout=30) == [1, 2, 3]
        assert _produce_all(bootstrap, topic, 10, timeout=30) < 10
    finally:
        stopped = runner.invoke(app, ["kafka", "stop", "--data-dir", data_dir])
    assert stopped.exit_code == 0 and "stopped" in stopped.stdout
    after = runner.invoke(app, ["kafka", "status", "--data-dir", data_dir])
    assert after.exit_code == 3 and "not running (cluster of 3 nodes" in after.stdout
