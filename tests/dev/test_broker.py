"""The dev broker: config, jar cache, error messages, CLI and restarts."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient
from typer.testing import CliRunner

from cfstream.cli import app
from cfstream.dev import broker, jars, jvm, node, procs, properties
from cfstream.errors import ConfigurationError, KafkaUnavailable


def _script(directory: Path, name: str, body: str) -> Path:
    path = directory / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


@pytest.fixture
def fake_bin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty directory first on PATH for fake ``java``/``mvn`` scripts."""
    directory = tmp_path / "bin"
    directory.mkdir()
    monkeypatch.setenv("PATH", f"{directory}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("JAVA_HOME", raising=False)
    return directory


# ---- unit: config and parsing -------------------------------------------------------------


def test_server_properties(tmp_path: Path) -> None:
    text = properties.server_properties(19092, 19093, tmp_path)
    props = dict(line.split("=", 1) for line in text.splitlines() if line and line[0] != "#")
    assert props["process.roles"] == "broker,controller"
    assert props["node.id"] == "1"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert props["log.dirs"] == str(tmp_path / "logs")
    for key in ("offsets.topic.replication.factor", "transaction.state.log.replication.factor",
                "transaction.state.log.min.isr", "share.coordinator.state.topic.replication.factor",
                "share.coordinator.state.topic.min.isr"):
        assert props[key] == "1", key
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert props["auto.create.topics.enable"] == "true"


def _props(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line and line[0] != "#")


def test_server_properties_with_a_sasl_listener(tmp_path: Path) -> None:
    props = _props(properties.server_properties(
        19092, 19093, tmp_path, sasl_port=19094, sasl_users={"alice": "a-secret", "bob": "b!"}))
    assert props["listeners"] == ("PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093,"
                                  "SASL_PLAINTEXT://127.0.0.1:19094")
    assert props["advertised.listeners"] == ("PLAINTEXT://127.0.0.1:19092,"
                                             "SASL_PLAINTEXT://127.0.0.1:19094")
    assert props["listener.security.protocol.map"] == (
        "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT")
    # Brokers and the controller keep talking PLAINTEXT: only clients log in.
    assert props["inter.broker.listener.name"] == "PLAINTEXT"
    assert props["controller.listener.names"] == "CONTROLLER"
    assert props["sasl.enabled.mechanisms"] == "PLAIN"
    assert props["listener.name.sasl_plaintext.sasl.enabled.mechanisms"] == "PLAIN"
    assert props["listener.name.sasl_plaintext.plain.sasl.jaas.config"] == (
        'org.apache.kafka.common.security.plain.PlainLoginModule required '
        'user_alice="a-secret" user_bob="b!";')
    default = _props(properties.server_properties(19092, 19093, tmp_path, sasl_port=19094))
    assert 'user_cfstream="cfstream-secret";' in (
        default["listener.name.sasl_plaintext.plain.sasl.jaas.config"])
    plain = properties.server_properties(19092, 19093, tmp_path)
    assert "SASL" not in plain and "sasl" not in plain


def test_a_node_lists_every_voter_and_replicates_internal_topics(tmp_path: Path) -> None:
    props = _props(properties.server_properties(
        19093, 29002, tmp_path, node_id=2, controller_ports=[29001, 29002, 29003]))
    assert props["node.id"] == "2"
    assert props["controller.quorum.voters"] == (
        "1@127.0.0.1:29001,2@127.0.0.1:29002,3@127.0.0.1:29003")
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19093,CONTROLLER://127.0.0.1:29002"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19093"
    for key in ("default.replication.factor", "offsets.topic.replication.factor",
                "transaction.state.log.replication.factor",
                "share.coordinator.state.topic.replication.factor"):
        assert props[key] == "3", key
    for key in ("min.insync.replicas", "transaction.state.log.min.isr",
                "share.coordinator.state.topic.min.isr"):
        assert props[key] == "2", key
    # A killed node leaves the ISRs within seconds, not Kafka's 9 s session or 30 s lag.
    assert int(props["broker.session.timeout.ms"]) <= 6000
    assert int(props["replica.lag.time.max.ms"]) <= 10000
    alone = _props(properties.server_properties(19092, 29001, tmp_path))
    assert "broker.session.timeout.ms" not in alone
    with pytest.raises(ValueError, match="not the one its voters list gives it"):
        properties.server_properties(19093, 29009, tmp_path, node_id=2,
                                     controller_ports=[29001, 29002, 29003])


@pytest.mark.parametrize("users", [
    {}, {"a b": "x"}, {"al|ce": "x"}, {"alice": ""}, {"alice": 'say "hi"'},
    {"alice": "back\\slash"}, {"alice": "new\nline"}, {"alice": "pässword"},
])
def test_sasl_users_must_fit_the_jaas_config(users: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError):
        properties.check_sasl_users(users)
    with pytest.raises(ConfigurationError):  # before anything is started or written
        broker.start(None, tmp_path / "data", sasl_users=users)
    assert not (tmp_path / "data").exists()


def test_sasl_port_is_read_back_from_the_config(tmp_path: Path) -> None:
    assert properties.sasl_port_of(tmp_path) is None
    (tmp_path / "server.properties").write_text(
        properties.server_properties(1, 2, tmp_path, sasl_port=3))
    assert properties.sasl_port_of(tmp_path) == 3
    (tmp_path / "server.properties").write_text(properties.server_properties(1, 2, tmp_path))
    assert properties.sasl_port_of(tmp_path) is None


def test_cli_refuses_a_sasl_user_without_a_password(tmp_path: Path) -> None:
    done = CliRunner().invoke(app, ["kafka", "start", "--data-dir", str(tmp_path),
                                    "--sasl-user", "alice"])
    assert done.exit_code == 2 and "NAME=PASSWORD" in done.output


@pytest.mark.parametrize(("text", "version"), [
    ('openjdk version "17.0.15" 2025-04-15', 17),
    ('java version "1.8.0_392"', 8),
    ('openjdk version "21" 2023-09-19', 21),
    ("garbage", None),
])
def test_parse_java_version(text: str, version: int | None) -> None:
    assert jvm.parse_java_version(text) == version


def test_cluster_id_is_kafka_uuid_text() -> None:
    assert len(node.new_cluster_id()) == 22


def test_cluster_id_never_starts_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    """The storage tool reads "-AAAA..." as an option: such a draw is drawn again."""
    draws = iter([uuid.UUID(bytes=b"\xf8" + bytes(15)), uuid.UUID(bytes=bytes(16))])
    monkeypatch.setattr(node.uuid, "uuid4", lambda: next(draws))
    assert node.new_cluster_id() == "AAAAAAAAAAAAAAAAAAAAAA"


# ---- errors --------------------------------------------------------------------------------


def test_old_java_is_refused(fake_bin: Path, tmp_path: Path) -> None:
    _script(fake_bin, "java", 'echo \'openjdk version "11.0.2" 2019-01-15\' >&2\n')
    with pytest.raises(KafkaUnavailable, match="Java 11") as info:
        broker.start(None, tmp_path / "data")
    assert "Java 17+" in str(info.value)
    assert "CFSTREAM_BOOTSTRAP_SERVERS" in str(info.value)


def test_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(KafkaUnavailable, match=f"Port {port} .* already in use"):
            broker.start(port, tmp_path / "data")


def test_status_and_stop_ignore_a_foreign_pid(tmp_path: Path) -> None:
    # A stale pid file naming a live process that is not our broker (this test process).
    procs.write_pid(tmp_path, procs.PidRecord(os.getpid(), 1, 2))
    assert not broker.status(tmp_path).running
    assert broker.stop(tmp_path) is False
    assert not (tmp_path / procs.PID_FILE).exists()


def test_a_node_is_told_from_its_neighbour_by_its_config_path(tmp_path: Path) -> None:
    config = tmp_path / "node-10" / "server.properties"
    child = subprocess.Popen(  # noqa: S603 - fixed argv
        [sys.executable, "-c", "import time; time.sleep(60)", "kafka.Kafka", str(config)])
    try:  # asked at once, as a start that fails asks: the arguments may not be there yet
        assert procs.is_our_broker(child.pid, tmp_path / "node-10")
        assert not procs.is_our_broker(child.pid, tmp_path / "node-1")
        assert not procs.is_our_broker(child.pid, tmp_path / "node-10" / "logs")
    finally:
        child.kill()
        child.wait()


def test_cached_jars_never_run_maven(fake_bin: Path, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CFSTREAM_CACHE_DIR", str(tmp_path / "cache"))
    called = tmp_path / "mvn-called"
    _script(fake_bin, "mvn", f"touch {called}\nexit 1\n")
    home = jars.kafka_home()
    (home / "lib").mkdir(parents=True)
    (home / jars.MARKER).write_text("done\n")
    assert jars.ensure_jars() == home / "lib"
    assert not called.exists()


def test_unreachable_maven_says_what_was_tried(fake_bin: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CFSTREAM_CACHE_DIR", str(tmp_path / "cache"))
    _script(fake_bin, "mvn", "echo '[ERROR] Could not transfer artifact: Network is unreachable'\n"
                             "exit 1\n")
    with pytest.raises(KafkaUnavailable) as info:
        jars.ensure_jars()
    message = str(info.value)
    assert "mvn -q -B" in message and "dependency:copy-dependencies" in message
    assert "Maven Central" in message and jars.MAVEN_CENTRAL in message
    assert "Network is unreachable" in message
    assert "CFSTREAM_BOOTSTRAP_SERVERS" in message
    assert not jars.jars_ready()


def test_missing_maven_says_what_to_install(fake_bin: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CFSTREAM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(fake_bin))
    with pytest.raises(KafkaUnavailable, match="`mvn`\\) is not on PATH") as info:
        jars.ensure_jars()
    assert "CFSTREAM_BOOTSTRAP_SERVERS" in str(info.value)


def test_half_download_is_redone(fake_bin: Path, tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CFSTREAM_CACHE_DIR", str(tmp_path / "cache"))
    home = jars.kafka_home()
    (home / "lib").mkdir(parents=True)
    (home / "lib" / "partial.jar").write_text("")  # no marker: an interrupted copy
    _script(fake_bin, "mvn", 'for a in "$@"; do case "$a" in -DoutputDirectory=*) '
                             'touch "${a#-DoutputDirectory=}/kafka_2.13-x.jar";; esac; done\n')
    lib = jars.ensure_jars()
    assert sorted(p.name for p in lib.iterdir()) == ["kafka_2.13-x.jar"]
    assert jars.jars_ready()


@pytest.mark.kafka
def test_broker_exiting_during_start_shows_its_log(tmp_path: Path) -> None:
    # Storage claiming another node id: formatting is skipped and the broker refuses to run.
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "meta.properties").write_text(
        f"version=1\ncluster.id={node.new_cluster_id()}\nnode.id=7\n"
        f"directory.id={node.new_cluster_id()}\n")
    with pytest.raises(KafkaUnavailable, match="exited during start") as info:
        broker.start(None, tmp_path)
    assert "Last lines of" in str(info.value)
    assert not broker.status(tmp_path).running
    assert not (tmp_path / procs.PID_FILE).exists()


# ---- the real thing: CLI and restart ------------------------------------------------------


def _produce(bootstrap: str, topic: str, value: bytes) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random",
                         "enable.idempotence": True})
    producer.produce(topic, key=b"k", value=value)
    assert producer.flush(30) == 0


def _consume_one(bootstrap: str, topic: str) -> bytes | None:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex,
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    try:
        for _ in range(30):
            msg = consumer.poll(1.0)
            if msg is not None and msg.error() is None:
                return bytes(msg.value())
        return None
    finally:
        consumer.close()


@pytest.mark.kafka
def test_cli_start_status_stop_beside_the_session_broker(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    runner = CliRunner()
    data_dir = str(tmp_path / "second")
    port = procs.free_port()
    started = runner.invoke(app, ["kafka", "start", "--port", str(port), "--data-dir", data_dir])
    try:
        assert started.exit_code == 0, started.output
        assert started.stdout.strip() == f"127.0.0.1:{port}"
        shown = runner.invoke(app, ["kafka", "status", "--data-dir", data_dir])
        assert shown.exit_code == 0
        assert f"127.0.0.1:{port}" in shown.stdout and "running" in shown.stdout
        again = runner.invoke(app, ["kafka", "start", "--port", str(port), "--data-dir", data_dir])
        assert again.exit_code == 0 and "Already running" in again.output
        # Both brokers answer at once.
        for bootstrap in (kafka_bootstrap, f"127.0.0.1:{port}"):
            assert AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).brokers
        taken = runner.invoke(app, ["kafka", "start", "--port", str(port), "--data-dir",
                                    str(tmp_path / "third")])
        assert taken.exit_code == 1 and f"Port {port}" in taken.output
    finally:
        stopped = runner.invoke(app, ["kafka", "stop", "--data-dir", data_dir])
    assert stopped.exit_code == 0 and "stopped" in stopped.stdout
    after = runner.invoke(app, ["kafka", "status", "--data-dir", data_dir])
    assert after.exit_code == 3 and "not running" in after.stdout


@pytest.mark.kafka
def test_restart_keeps_storage_and_data(tmp_path: Path) -> None:
    topic = f"restart-{uuid.uuid4().hex[:8]}"
    with broker.LocalBroker(data_dir=tmp_path) as first:
        _produce(first.bootstrap_servers, topic, b"before restart")  # auto-created topic
    meta = (tmp_path / "logs" / "meta.properties").read_text()
    assert not (tmp_path / procs.PID_FILE).exists()
    with broker.LocalBroker(data_dir=tmp_path) as second:
        assert _consume_one(second.bootstrap_servers, topic) == b"before restart"
    assert (tmp_path / "logs" / "meta.properties").read_text() == meta  # not reformatted


@pytest.mark.kafka
def test_cli_start_with_sasl(tmp_path: Path) -> None:
    runner = CliRunner()
    data_dir = str(tmp_path / "sasl")
    port, sasl_port = procs.free_port(), procs.free_port()
    started = runner.invoke(app, ["kafka", "start", "--port", str(port), "--data-dir", data_dir,
                                  "--sasl-port", str(sasl_port), "--sasl-user", "bob=bob-pw"])
    try:
        assert started.exit_code == 0, started.output
        assert started.stdout.strip() == f"127.0.0.1:{port}"  # stdout: PLAINTEXT only
        assert f"SASL_PLAINTEXT (PLAIN) listener on 127.0.0.1:{sasl_port} for bob" in (
            started.output)
        shown = runner.invoke(app, ["kafka", "status", "--data-dir", data_dir])
        assert f"SASL_PLAINTEXT 127.0.0.1:{sasl_port}" in shown.stdout
        login = {"bootstrap.servers": f"127.0.0.1:{sasl_port}",
                 "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
                 "sasl.username": "bob", "sasl.password": "bob-pw"}
        assert AdminClient(login).list_topics(timeout=10).brokers
        # Asking for SASL from a broker already running with it is fine; a port change is not.
        again = runner.invoke(app, ["kafka", "start", "--port", str(port), "--data-dir",
                                    data_dir, "--sasl"])
        assert again.exit_code == 0 and "Already running" in again.output
        moved = runner.invoke(app, ["kafka", "start", "--port", str(port), "--data-dir",
                                    data_dir, "--sasl-port", str(procs.free_port())])
        assert moved.exit_code == 1 and "SASL listener on port" in moved.output
    finally:
        runner.invoke(app, ["kafka", "stop", "--data-dir", data_dir])
    # Started again without --sasl, the same data dir has no SASL listener.
    with broker.LocalBroker(data_dir=data_dir) as plain:
        assert plain.status is not None and plain.status.sasl_port is None
        with pytest.raises(KafkaUnavailable, match="no SASL listener"):
            broker.start(None, data_dir, sasl=True)
