"""docker-compose.yml, Dockerfile and .dockerignore: schema-valid and wired the way cfstream reads
its settings. No Docker engine is needed (or used)."""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import re
from dataclasses import fields
from importlib.metadata import distribution
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from ruamel.yaml import YAML

from cfstream.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
ALLOWED_ENV = {f"CFSTREAM_{spec.name.upper()}" for spec in fields(Settings)}
ENV_NAME = re.compile(r"\bCFSTREAM_[A-Z0-9_]+\b")
LONG_RUNNING = ("processor-1", "processor-2", "worker")


def compose_schema() -> dict[str, Any]:
    """The Compose specification's schema as vendored by the check-jsonschema package.

    Read from the installed files rather than by importing check_jsonschema's CLI.
    """
    dist = distribution("check-jsonschema")
    path = Path(str(dist.locate_file(
        "check_jsonschema/builtin_schemas/vendor/compose-spec.json")))
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    # The safe loader resolves the x-* anchors and `<<:` merges as Compose does.
    return YAML(typ="safe").load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def validator() -> Any:
    schema = compose_schema()
    # The file names draft-07 by a URL jsonschema does not recognise (https, no '#').
    assert "draft-07" in schema["$schema"]
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)", duration)
    assert match, f"unexpected duration {duration!r}"
    return float(match[1]) * {"ms": 0.001, "s": 1, "m": 60}[match[2]]


def test_matches_the_compose_schema(compose: dict[str, Any], validator: Any) -> None:
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
              for e in validator.iter_errors(compose)]
    assert not errors, errors


def test_schema_check_catches_mistakes(compose: dict[str, Any], validator: Any) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["worker"]["restart_policy"] = "always"  # not a service key
    broken["services"]["kafka"]["ports"] = 9092  # must be a list
    assert len(list(validator.iter_errors(broken))) >= 2


def test_names_only_settings_fields() -> None:
    for path in (COMPOSE_FILE, DOCKERFILE):
        used = set(ENV_NAME.findall(path.read_text()))
        assert used, f"{path.name} sets no CFSTREAM_* variable"
        assert used <= ALLOWED_ENV, f"{path.name}: not Settings fields {sorted(used - ALLOWED_ENV)}"


def test_shared_env_parses_as_settings(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = compose["x-cfstream-env"]
    for name in [n for n in os.environ if n.startswith("CFSTREAM_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, str(value))
    settings = Settings()
    assert settings.bootstrap_servers == "kafka:19092"
    assert settings.log_format == "json"
    for name in ("processor-1", "processor-2", "worker", "topics", "demo"):
        assert compose["services"][name]["environment"] == env, name


def test_kafka_is_a_single_kraft_node(compose: dict[str, Any]) -> None:
    kafka = compose["services"]["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = {k: str(v) for k, v in kafka["environment"].items()}
    node_id = env["KAFKA_NODE_ID"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    listeners = dict(
        item.split("://", 1) for item in env["KAFKA_LISTENERS"].split(",")
    )
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    voter_id, voter_address = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split("@")
    assert voter_id == node_id
    assert voter_address.endswith(listeners[controller])
    protocols = dict(p.split(":") for p in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(listeners) <= set(protocols)
    for name in ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
                 "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
                 "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"):
        assert env[name] == "1", name
    assert env["CLUSTER_ID"]
    # The containers' bootstrap address is one of the advertised listeners.
    advertised = [a.split("://", 1)[1] for a in env["KAFKA_ADVERTISED_LISTENERS"].split(",")]
    assert compose["x-cfstream-env"]["CFSTREAM_BOOTSTRAP_SERVERS"] in advertised
    assert "test" in kafka["healthcheck"]
    assert any(v.split(":")[0] == "kafka-data" for v in kafka["volumes"])


def test_topics_then_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    topics = services["topics"]
    assert topics["command"] == ["topics", "create"]
    assert topics["depends_on"]["kafka"]["condition"] == "service_healthy"
    for name in LONG_RUNNING:
        depends = services[name]["depends_on"]
        assert depends["topics"]["condition"] == "service_completed_successfully", name
    assert services["worker"]["command"] == ["worker", "cfstream.examples.notifications"]
    assert importlib.util.find_spec("cfstream.examples.notifications") is not None
    assert services["demo"]["command"] == ["demo", "--producer-only"]
    assert services["demo"]["restart"] == "no"


def test_each_processor_has_its_own_state_volume(compose: dict[str, Any]) -> None:
    state_dir = compose["x-cfstream-env"]["CFSTREAM_STATE_DIR"]
    volumes = []
    for name in ("processor-1", "processor-2"):
        service = compose["services"][name]
        assert service["command"] == ["processor"]
        mounts = dict(v.rsplit(":", 1)[::-1] for v in service["volumes"])
        assert state_dir in mounts, f"{name} has no volume at {state_dir}"
        volumes.append(mounts[state_dir])
    assert len(set(volumes)) == 2, "processor replicas must not share a state volume"
    assert set(volumes) <= set(compose["volumes"]), "state volumes must be named volumes"


def test_healthchecks_and_grace_period(compose: dict[str, Any]) -> None:
    env = compose["x-cfstream-env"]
    port = env["CFSTREAM_HTTP_PORT"]
    shutdown = float(env["CFSTREAM_SHUTDOWN_TIMEOUT"])
    for name in LONG_RUNNING:
        service = compose["services"][name]
        probe = " ".join(service["healthcheck"]["test"])
        assert f"127.0.0.1:{port}/healthz" in probe, name
        assert seconds(service["stop_grace_period"]) > shutdown, name
    ports = [p for name in LONG_RUNNING for p in compose["services"][name].get("ports", [])]
    assert all(p.startswith("127.0.0.1:") for p in ports), "publish on the host's loopback only"


def test_dockerfile_runs_cfstream_as_a_non_root_user() -> None:
    text = DOCKERFILE.read_text()
    stages = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert stages and all(s.startswith("python:${PYTHON_VERSION}-slim") for s in stages)
    assert re.search(r"^ARG PYTHON_VERSION=3\.11$", text, re.M)
    assert re.search(r"pip install '\.\[otel\]'$", text, re.M)  # the package, traces included
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert re.search(r"^ENTRYPOINT \[\"cfstream\"\]$", text, re.M)
    assert re.search(r"^CMD \[\"--help\"\]$", text, re.M)
    assert "CFSTREAM_STATE_DIR=/var/lib/cfstream" in text
    assert re.search(r"install -d -o cfstream -g cfstream .*/var/lib/cfstream", text)


def test_dockerignore_lets_the_build_inputs_through() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    assert "**" in lines
    for needed in ("!pyproject.toml", "!README.md", "!cfstream/"):
        assert needed in lines
