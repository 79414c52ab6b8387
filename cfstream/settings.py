"""The one settings object: read from ``CFSTREAM_*`` environment variables, passed down explicitly.

A plain dataclass: with pydantic-settings (and pydantic through it) ``import cfstream`` took
0.26 s and a processor's imports 0.40 s; without, 0.14 and 0.31 s (issue #20's start-up).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from cfstream.errors import ConfigurationError

# A broker on this machine is what a newcomer has after `cfstream kafka start`.
DEFAULT_BOOTSTRAP_SERVERS = "localhost:9092"
# Every topic name starts with this, so several deployments can share one cluster.
DEFAULT_TOPIC_PREFIX = "cfstream"
# Calls and executions share this count: keys are placed by murmur2 over it. 8 lets up to 8
# processor replicas split the work without making a 2-core dev box juggle many RocksDB stores.
DEFAULT_PARTITIONS = 8
# CFSTREAM_REPLICATION_FACTOR / CFSTREAM_MIN_INSYNC_REPLICAS spelling "choose for the cluster";
# the field holds None then.
AUTO = "auto"
# Kafka's default max.message.bytes is 1 MiB; stay under it with headroom for the envelope.
DEFAULT_MAX_PAYLOAD_BYTES = 900_000
# Prometheus' registry lists 9400-9499 for exporters. One port per kind of service, so a
# processor and a worker run side by side on one host with their defaults.
PROCESSOR_HTTP_PORT = 9464
WORKER_HTTP_PORT = 9465
# The console (a web page for people, not an exporter) sits next to them so all three run on one
# host with their defaults.
CONSOLE_PORT = 9466
DEFAULT_WORKER_CONCURRENCY = 8
# Long enough for a task or two to finish and offsets to commit; Kubernetes' default grace is 30 s.
DEFAULT_SHUTDOWN_TIMEOUT = 25.0


ENV_PREFIX = "CFSTREAM_"
TRUE = frozenset({"1", "true", "yes", "on"})
FALSE = frozenset({"0", "false", "no", "off"})


def _boolean(text: str) -> bool:
    value = text.strip().lower()
    if value not in TRUE | FALSE:
        raise ValueError(f"expected one of {', '.join(sorted(TRUE | FALSE))}")
    return value in TRUE


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError("expected a whole number") from None


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError("expected a number (seconds)") from None


def _auto(text: str) -> int | None:
    """An integer, or unset ("", or "auto": cfstream chooses for the cluster)."""
    return None if text.strip().lower() in ("", AUTO) else _integer(text)


def _optional(text: str) -> str | None:
    """A name, or unset when empty (a chart value left empty)."""
    return text if text.strip() else None


def _json_object(text: str) -> dict[str, Any]:
    value = json.loads(text) if text.strip() else {}
    if not isinstance(value, dict):
        raise ValueError("expected a JSON object of librdkafka options")
    return value


def _one_of(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return text
    return parse


def _env(name: str, default: Any, parse: Callable[[str], Any] = str, *, least: float | None = None,
         most: float | None = None, above: float | None = None, repr: bool = True) -> Any:
    """A field read from ``CFSTREAM_<NAME>`` when not given; text (from the environment or the
    caller) goes through ``parse``; numbers are checked against the bounds."""
    return field(default_factory=lambda: _UNREAD, repr=repr,
                 metadata={"default": default, "parse": parse, "least": least, "most": most,
                           "above": above})


_UNREAD = object()  # a field not given: Settings.__post_init__ reads it from the environment


def _variables() -> dict[str, tuple[str, str]]:
    """The ``CFSTREAM_*`` variables, upper-case name -> (name as set, value). Read in any case,
    as pydantic-settings read them for cfstream before; one spelled in upper case wins."""
    found: dict[str, tuple[str, str]] = {}
    for name, value in os.environ.items():
        upper = name.upper()
        if upper.startswith(ENV_PREFIX) and (name == upper or upper not in found):
            found[upper] = (name, value)
    return found


@dataclass(frozen=True)
class Settings:
    """cfstream's configuration. Every field reads ``CFSTREAM_<FIELD>`` from the environment
    unless given; ``dataclasses.replace(settings, field=...)`` makes a changed copy."""

    bootstrap_servers: str = _env("bootstrap_servers", DEFAULT_BOOTSTRAP_SERVERS)
    topic_prefix: str = _env("topic_prefix", DEFAULT_TOPIC_PREFIX)
    partitions: int = _env("partitions", DEFAULT_PARTITIONS, _integer, least=1)
    # Replicas of the topics cfstream creates, and how many must have a write (acks=all) before
    # it counts. Unset or "auto": min(3, brokers) and one fewer (kafka/replication.py).
    replication_factor: int | None = _env("replication_factor", None, _auto, least=1)
    min_insync_replicas: int | None = _env("min_insync_replicas", None, _auto, least=1)

    # Security settings for every client (producer, consumer, admin).
    security_protocol: str = _env("security_protocol", "PLAINTEXT")  # PLAINTEXT | SSL | SASL_...
    sasl_mechanism: str | None = _env("sasl_mechanism", None)  # PLAIN | SCRAM-SHA-256 | -512
    sasl_username: str | None = _env("sasl_username", None)
    sasl_password: str | None = _env("sasl_password", None, repr=False)  # never in a log line
    ssl_ca_location: str | None = _env("ssl_ca_location", None)
    ssl_certificate_location: str | None = _env("ssl_certificate_location", None)
    ssl_key_location: str | None = _env("ssl_key_location", None)
    # Any librdkafka option, as a JSON object; explicit settings above win over it.
    kafka_config: dict[str, Any] = _env("kafka_config", "", _json_object)

    max_payload_bytes: int = _env("max_payload_bytes", DEFAULT_MAX_PAYLOAD_BYTES, _integer, least=1024)

    # Processor: RocksDB state lives here; one replica per directory.
    state_dir: Path = _env("state_dir", Path(".cfstream/state"), Path)
    # Processor: its group.instance.id (static membership), the same across its restarts (Helm:
    # the pod name). Back within the session timeout, it keeps its partitions. Unset: dynamic.
    instance_id: str | None = _env("instance_id", None, _optional)
    # Processor with an instance id: SIGTERM hands its partitions over at once (true), or keeps
    # them for a restart back within the session timeout (false).
    leave_on_stop: bool = _env("leave_on_stop", True, _boolean)
    # Processor: how many other replicas keep a warm copy of each partition (standby replicas,
    # tailing its changelog), so a takeover replays only the copy's lag. At most replicas - 1.
    standby_replicas: int = _env("standby_replicas", 1, _integer, least=0)
    # Processor: seconds a partition must stay wanted as a standby before a copy with nothing on
    # disk starts from scratch (a rolling restart moves partitions for a few seconds only).
    standby_delay: float = _env("standby_delay", 30.0, _number, least=0)
    # Processor joining a group that runs without it: up to this many seconds warming the
    # partitions it will be given (and its standbys) before it joins; 0 joins at once.
    warmup_timeout: float = _env("warmup_timeout", 300.0, _number, least=0)

    # Worker: tasks run at once per worker process.
    worker_concurrency: int = _env("worker_concurrency", DEFAULT_WORKER_CONCURRENCY, _integer, least=1)

    # Both services: /metrics, /healthz and /readyz on this port (0 turns the server off);
    # unset, each kind of service takes its own (PROCESSOR_HTTP_PORT, WORKER_HTTP_PORT).
    http_port: int | None = _env("http_port", None, _auto, least=0, most=65535)
    # `cfstream console`: the web page's port (on 127.0.0.1 unless --host says otherwise).
    console_port: int = _env("console_port", CONSOLE_PORT, _integer, least=0, most=65535)
    log_format: Literal["text", "json"] = _env("log_format", "text", _one_of("text", "json"))
    log_level: str = _env("log_level", "INFO")
    # Kubernetes' terminationGracePeriodSeconds must exceed this.
    shutdown_timeout: float = _env("shutdown_timeout", DEFAULT_SHUTDOWN_TIMEOUT, _number, above=0)

    def __post_init__(self) -> None:
        """Parse text (from the environment, or given) and check bounds: a bad value is a
        :class:`ConfigurationError` naming the variable and what it takes."""
        variables: dict[str, tuple[str, str]] | None = None
        for spec in fields(self):
            value = getattr(self, spec.name)
            variable = ENV_PREFIX + spec.name.upper()
            if value is _UNREAD:
                variables = _variables() if variables is None else variables
                variable, value = variables.get(variable, (variable, spec.metadata["default"]))
            parse = spec.metadata["parse"]
            given = value
            try:
                if isinstance(value, str) and parse is not str:
                    value = parse(value)
                value = _of_its_kind(value, parse)
                _check(value, spec.metadata)
            except (ValueError, TypeError) as exc:
                raise ConfigurationError(
                    f"{variable} ({spec.name}) cannot be {given!r}: {exc}") from None
            object.__setattr__(self, spec.name, value)

    def http_port_or(self, default: int) -> int:
        """CFSTREAM_HTTP_PORT if set, else the service's own ``default``."""
        return default if self.http_port is None else self.http_port

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}.{name}"

    @property
    def calls_topic(self) -> str:
        return self.topic("calls")

    @property
    def executions_topic(self) -> str:
        return self.topic("executions")

    @property
    def events_topic(self) -> str:
        return self.topic("events")

    @property
    def dead_letter_topic(self) -> str:
        return self.topic("dead-letter")

    @property
    def processor_group(self) -> str:
        """The processors' consumer group."""
        return f"{self.topic_prefix}.processor"

    @property
    def changelog_topic(self) -> str:
        """The compacted changelog of the processors' pending-calls table, co-partitioned with
        calls. It keeps the name faust gave it, so state and committed offsets carry over from
        processors that ran on faust."""
        return f"{self.processor_group}-pending-changelog"

    def to_env(self) -> dict[str, str]:
        """The connection settings as ``CFSTREAM_*`` variables, for child processes (a processor
        or worker started by the demo, the tests or the benchmarks) to read the same way."""
        values: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers, "topic_prefix": self.topic_prefix,
            "partitions": self.partitions, "replication_factor": self.replication_factor,
            "min_insync_replicas": self.min_insync_replicas,
            "security_protocol": self.security_protocol, "sasl_mechanism": self.sasl_mechanism,
            "sasl_username": self.sasl_username,
            "sasl_password": self.sasl_password,
            "ssl_ca_location": self.ssl_ca_location,
            "ssl_certificate_location": self.ssl_certificate_location,
            "ssl_key_location": self.ssl_key_location,
            "kafka_config": json.dumps(self.kafka_config) if self.kafka_config else None,
        }
        return {f"CFSTREAM_{name.upper()}": str(value) for name, value in values.items()
                if value is not None}

    def librdkafka_config(self) -> dict[str, Any]:
        """Connection options for confluent-kafka clients: pass-through first, explicit settings win."""
        config: dict[str, Any] = dict(self.kafka_config)
        config["bootstrap.servers"] = self.bootstrap_servers
        config["security.protocol"] = self.security_protocol
        explicit = {
            "sasl.mechanism": self.sasl_mechanism,
            "sasl.username": self.sasl_username,
            "sasl.password": self.sasl_password,
            "ssl.ca.location": self.ssl_ca_location,
            "ssl.certificate.location": self.ssl_certificate_location,
            "ssl.key.location": self.ssl_key_location,
        }
        config.update({k: v for k, v in explicit.items() if v is not None})
        return config


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()


def _of_its_kind(value: Any, parse: Callable[[str], Any]) -> Any:
    """A value given in code (not text) as its field takes it, or a ValueError."""
    whole = isinstance(value, int) and not isinstance(value, bool)
    if parse in (_integer, _auto) and not whole and not (parse is _auto and value is None):
        raise ValueError("expected a whole number")
    if parse is _number:
        if not (whole or isinstance(value, float)):
            raise ValueError("expected a number (seconds)")
        return float(value)
    if parse is _boolean and not isinstance(value, bool):
        raise ValueError("expected true or false")
    if parse is _json_object and not isinstance(value, dict):
        raise ValueError("expected a JSON object of librdkafka options")
    return value


def _check(value: Any, bounds: Any) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return
    least, most, above = bounds["least"], bounds["most"], bounds["above"]
    if least is not None and value < least:
        raise ValueError(f"it must be at least {least}")
    if most is not None and value > most:
        raise ValueError(f"it must be at most {most}")
    if above is not None and value <= above:
        raise ValueError(f"it must be more than {above}")
