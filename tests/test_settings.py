"""Settings travel to child processes as CFSTREAM_* variables and come back equal."""

from __future__ import annotations

import pytest

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
