"""Starting a processor replica in this process."""

from __future__ import annotations

from confluent_kafka.admin import AdminClient

from cfstream.kafka.config import admin_config
from cfstream.kafka.topics import ADMIN_TIMEOUT, ensure_topics
from cfstream.logs import logging_config
from cfstream.observability.http import serve
from cfstream.processor.app import Processor
from cfstream.settings import Settings


def calls_partitions(settings: Settings) -> int:
    """The calls topic's real partition count: the table must match it, whatever settings say."""
    ensure_topics(settings)  # with its own admin client, which reports a refused login at once
    admin = AdminClient(admin_config(settings))
    topic = settings.calls_topic
    return len(admin.list_topics(topic, timeout=ADMIN_TIMEOUT).topics[topic].partitions)


def run(settings: Settings) -> None:
    """Run one replica until SIGTERM or SIGINT (faust's worker stops it gracefully)."""
    import faust

    processor = Processor(settings, calls_partitions(settings))
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    server = serve(settings.http_port, processor.metrics.registry, processor.ready)
    worker = faust.Worker(processor.app, loglevel=settings.log_level.lower(),
                          redirect_stdouts=False,
                          logging_config=logging_config(settings.log_level, settings.log_format))
    try:
        worker.execute_from_commandline()
    finally:
        processor.outputs.close()
        if server is not None:
            server.close()
