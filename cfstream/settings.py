"""The one settings object: read from ``CFSTREAM_*`` environment variables, passed down explicitly."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

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
# Long enough for a task or two to finish and offsets to commit; Kubernetes' default grace is 30 s.
DEFAULT_SHUTDOWN_TIMEOUT = 25.0


class Settings(BaseSettings):
    """cfstream's configuration. Every field reads ``CFSTREAM_<FIELD>`` from the environment."""

    model_config = SettingsConfigDict(env_prefix="CFSTREAM_", extra="ignore")

    bootstrap_servers: str = DEFAULT_BOOTSTRAP_SERVERS
    topic_prefix: str = DEFAULT_TOPIC_PREFIX
    partitions: int = Field(DEFAULT_PARTITIONS, ge=1)
    # Replicas of the topics cfstream creates, and how many must have a write (acks=all) before
    # it counts. Unset or "auto": min(3, brokers) and one fewer (kafka/replication.py).
    replication_factor: int | None = Field(None, ge=1)
    min_insync_replicas: int | None = Field(None, ge=1)

    # Security settings for every client (producer, consumer, admin).
    security_protocol: str = "PLAINTEXT"  # PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL
    sasl_mechanism: str | None = None  # PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: str | None = None
    ssl_certificate_location: str | None = None
    ssl_key_location: str | None = None
    # Any librdkafka option, as a JSON object; explicit settings above win over it.
    kafka_config: dict[str, Any] = Field(default_factory=dict)

    max_payload_bytes: int = Field(DEFAULT_MAX_PAYLOAD_BYTES, ge=1024)

    # Processor: RocksDB state lives here; one replica per directory.
    state_dir: Path = Path(".cfstream/state")
    # Processor: its group.instance.id (static membership), the same across its restarts (Helm:
    # the pod name). Back within the session timeout, it keeps its partitions. Unset: dynamic.
    instance_id: str | None = None
    # Processor with an instance id: SIGTERM hands its partitions over at once (true), or keeps
    # them for a restart back within the session timeout (false).
    leave_on_stop: bool = True
    # Processor: how many other replicas keep a warm copy of each partition (standby replicas,
    # tailing its changelog), so a takeover replays only the copy's lag. At most replicas - 1.
    standby_replicas: int = Field(1, ge=0)
    # Processor: seconds a partition must stay wanted as a standby before a copy with nothing on
    # disk starts from scratch (a rolling restart moves partitions for a few seconds only).
    standby_delay: float = Field(30.0, ge=0)
    # Processor joining a group that runs without it: up to this many seconds warming the
    # partitions it will be given (and its standbys) before it joins; 0 joins at once.
    warmup_timeout: float = Field(300.0, ge=0)

    # Worker: tasks run at once per worker process.
    worker_concurrency: int = Field(8, ge=1)

    # Both services: /metrics, /healthz and /readyz on this port (0 turns the server off);
    # unset, each kind of service takes its own (PROCESSOR_HTTP_PORT, WORKER_HTTP_PORT).
    http_port: int | None = Field(None, ge=0, le=65535)
    # `cfstream console`: the web page's port (on 127.0.0.1 unless --host says otherwise).
    console_port: int = Field(CONSOLE_PORT, ge=0, le=65535)
    log_format: Literal["text", "json"] = "text"
    log_level: str = "INFO"
    # Kubernetes' terminationGracePeriodSeconds must exceed this.
    shutdown_timeout: float = Field(DEFAULT_SHUTDOWN_TIMEOUT, gt=0)

    @field_validator("replication_factor", "min_insync_replicas", mode="before")
    @classmethod
    def _parse_auto(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in ("", AUTO):
            return None
        return value

    @field_validator("instance_id", mode="before")
    @classmethod
    def _parse_instance_id(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("kafka_config", mode="before")
    @classmethod
    def _parse_kafka_config(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                value = json.loads(value) if value.strip() else {}
            except json.JSONDecodeError as exc:
                raise ValueError(
                    f"CFSTREAM_KAFKA_CONFIG must be a JSON object of librdkafka options: {exc}"
                ) from exc
        return value

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
            "sasl_password": self.sasl_password.get_secret_value() if self.sasl_password else None,
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
            "sasl.password": self.sasl_password.get_secret_value() if self.sasl_password else None,
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
