"""Settings -> faust.App options (aiokafka underneath, so security settings are translated)."""

from __future__ import annotations

import ssl
from typing import Any

import faust

from cfstream.errors import ConfigurationError
from cfstream.processor import restore
from cfstream.processor.state import app_id
from cfstream.settings import Settings

# RocksDB per table partition: faust's defaults (2 GiB block cache, 64 MiB x 3 write buffers)
# multiply by the partition count; these keep a replica with 8 partitions well under 1 GiB.
ROCKSDB_OPTIONS = {
    "block_cache_size": 32 * 1024 * 1024,
    "write_buffer_size": 16 * 1024 * 1024,
    "max_write_buffer_number": 2,
    "max_open_files": 256,
}


def credentials(settings: Settings) -> Any:
    protocol = settings.security_protocol.upper()
    if protocol == "PLAINTEXT":
        return None
    context = None
    if protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(cafile=settings.ssl_ca_location)
        if settings.ssl_certificate_location:
            context.load_cert_chain(settings.ssl_certificate_location, settings.ssl_key_location)
    if protocol == "SSL":
        return context
    if protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        if not settings.sasl_username or settings.sasl_password is None:
            raise ConfigurationError(
                f"{protocol} needs CFSTREAM_SASL_USERNAME and CFSTREAM_SASL_PASSWORD"
            )
        return faust.SASLCredentials(
            username=settings.sasl_username,
            password=settings.sasl_password.get_secret_value(),
            mechanism=settings.sasl_mechanism or "PLAIN",
            ssl_context=context,
        )
    raise ConfigurationError(
        f"CFSTREAM_SECURITY_PROTOCOL={settings.security_protocol!r} is not one of PLAINTEXT, "
        "SSL, SASL_PLAINTEXT, SASL_SSL"
    )


def app_options(settings: Settings, partitions: int) -> dict[str, Any]:
    brokers = [f"kafka://{host.strip()}" for host in settings.bootstrap_servers.split(",")]
    return {
        "id": app_id(settings),
        "broker": brokers,
        "broker_credentials": credentials(settings),
        # Tables take the app's serializers: we store bytes we encoded ourselves.
        "key_serializer": "raw",
        "value_serializer": "raw",
        # faust's RocksDB store, restoring newly active partitions with librdkafka first.
        "store": f"{restore.SCHEME}://",
        "rocksdb_options": ROCKSDB_OPTIONS,
        "datadir": str(settings.state_dir),
        "table_standby_replicas": settings.standby_replicas,
        "topic_partitions": partitions,
        "topic_replication_factor": settings.replication_factor,
        "web_enabled": False,
        "producer_acks": -1,
        "consumer_auto_offset_reset": "earliest",
        # Commit often: after a crash, fewer calls are replayed (and recognised as replays).
        "broker_commit_interval": 1.0,
        # A killed replica's partitions move after this long (faust's default is 60 s).
        "broker_session_timeout": 10.0,
        "broker_heartbeat_interval": 1.0,
        "producer_linger": 0.001,
    }
