"""Settings travel to child processes as CFSTREAM_* variables and come back equal."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from cfstream.errors import ConfigurationError
from cfstream.settings import Settings


def test_to_env_round_trips_through_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(bootstrap_servers="broker:9093", topic_prefix="p", partitions=3,
                        security_protocol="SASL_SSL", sasl_mechanism="PLAIN",
                        sasl_username="u", sasl_password="secret",  # noqa: S106 - a test value
                        kafka_config={"linger.ms": 7})
    for name, value in settings.to_env().items():
        monkeypatch.setenv(name, value)
    assert Settings() == settings
    assert settings.to_env()["CFSTREAM_SASL_PASSWORD"] == "secret"  # noqa: S105
    assert "CFSTREAM_SSL_CA_LOCATION" not in settings.to_env()  # unset stays unset


@pytest.mark.parametrize("value", ["auto", "AUTO", " ", ""])
def test_replication_is_auto_unless_set(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CFSTREAM_REPLICATION_FACTOR", value)
    monkeypatch.setenv("CFSTREAM_MIN_INSYNC_REPLICAS", value)
    settings = Settings()
    assert settings.replication_factor is None and settings.min_insync_replicas is None
    # Unset travels as unset, so a child process chooses for the cluster the same way.
    assert "CFSTREAM_REPLICATION_FACTOR" not in settings.to_env()


def test_variables_are_read_in_any_case(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("cfstream_partitions", "6")
    monkeypatch.setenv("Cfstream_Topic_Prefix", "mixed")
    assert (Settings().partitions, Settings().topic_prefix) == (6, "mixed")
    monkeypatch.setenv("CFSTREAM_PARTITIONS", "9")  # the upper-case one wins
    assert Settings().partitions == 9
    monkeypatch.setenv("cfstream_shutdown_timeout", "soon")  # an error names it as it was set
    with pytest.raises(ConfigurationError, match=r"^cfstream_shutdown_timeout \(shutdown_timeout\)"):
        Settings()


def test_explicit_replication_round_trips(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(replication_factor=3, min_insync_replicas=2)
    for name, value in settings.to_env().items():
        monkeypatch.setenv(name, value)
    assert (Settings().replication_factor, Settings().min_insync_replicas) == (3, 2)
    with pytest.raises(ConfigurationError, match="min_insync_replicas"):
        Settings(min_insync_replicas=0)


def test_instance_id_is_unset_unless_given(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().instance_id is None
    monkeypatch.setenv("CFSTREAM_INSTANCE_ID", "")  # a chart value left empty
    assert Settings().instance_id is None
    monkeypatch.setenv("CFSTREAM_INSTANCE_ID", "cfstream-processor-1")
    monkeypatch.setenv("CFSTREAM_LEAVE_ON_STOP", "false")
    settings = Settings()
    assert (settings.instance_id, settings.leave_on_stop) == ("cfstream-processor-1", False)
    # Each replica has its own: it never travels to the processes a replica starts.
    assert "CFSTREAM_INSTANCE_ID" not in settings.to_env()


@pytest.mark.parametrize(("name", "value", "says"), [
    ("CFSTREAM_PARTITIONS", "eight", "CFSTREAM_PARTITIONS (partitions) cannot be 'eight': expected a whole"),
    ("CFSTREAM_STANDBY_DELAY", "soon", "expected a number (seconds)"),
    ("CFSTREAM_PARTITIONS", "0", "at least 1"),
    ("CFSTREAM_HTTP_PORT", "70000", "at most 65535"),
    ("CFSTREAM_SHUTDOWN_TIMEOUT", "0", "more than 0"),
    ("CFSTREAM_LEAVE_ON_STOP", "maybe", "expected one of"),
    ("CFSTREAM_LOG_FORMAT", "xml", "expected one of text, json"),
    ("CFSTREAM_KAFKA_CONFIG", "[1]", "a JSON object of librdkafka options"),
    ("CFSTREAM_KAFKA_CONFIG", "{linger.ms: 5}", "CFSTREAM_KAFKA_CONFIG"),
])
def test_a_bad_variable_is_named_with_what_it_takes(name: str, value: str, says: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError, match=re.escape(says)):
        Settings()


def test_text_is_parsed_whether_read_or_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CFSTREAM_LEAVE_ON_STOP", "off")
    monkeypatch.setenv("CFSTREAM_STANDBY_DELAY", "2")
    monkeypatch.setenv("CFSTREAM_STATE_DIR", "/var/lib/cfstream")
    settings = Settings(partitions="3", kafka_config='{"linger.ms": 5}')  # type: ignore[arg-type]
    assert (settings.leave_on_stop, settings.standby_delay, settings.state_dir) == (
        False, 2.0, Path("/var/lib/cfstream"))
    assert (settings.partitions, settings.kafka_config) == (3, {"linger.ms": 5})
    assert replace(settings, partitions=5).partitions == 5
    with pytest.raises(ConfigurationError, match="partitions"):
        replace(settings, partitions=0)


def test_the_password_stays_out_of_reprs() -> None:
    settings = Settings(sasl_password="hunter2")  # noqa: S106 - a test value
    assert "hunter2" not in repr(settings)
    assert settings.librdkafka_config()["sasl.password"] == "hunter2"  # noqa: S105


@pytest.mark.parametrize(("given", "says"), [
    ({"partitions": 8.5}, "expected a whole number"), ({"partitions": True}, "a whole number"),
    ({"http_port": "x"}, "a whole number"), ({"leave_on_stop": 1}, "true or false"),
    ({"standby_delay": "soon"}, "(seconds)"), ({"kafka_config": None}, "a JSON object"),
])
def test_a_value_given_in_code_is_checked_like_text(given: dict[str, object], says: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(says)):
        Settings(**given)  # type: ignore[arg-type]
    assert Settings(http_port=None, replication_factor=None).http_port is None
    assert Settings(standby_delay=2).standby_delay == 2.0
