"""Starting a worker in this process."""

from __future__ import annotations

import importlib
import os
import signal
import sys
from types import FrameType
from typing import Any

from confluent_kafka import Consumer, Producer

from cfstream.errors import ConfigurationError
from cfstream.kafka.config import group_config, producer_config
from cfstream.kafka.sessions import member_session_ms
from cfstream.kafka.topics import ensure_topics
from cfstream.observability.http import serve
from cfstream.settings import WORKER_HTTP_PORT, Settings
from cfstream.task import Task, registry
from cfstream.tracing.setup import setup_tracing
from cfstream.worker.jobs import Tracing
from cfstream.worker.loop import Worker, worker_name

# A killed worker's partitions move after this long (librdkafka's default: 45 s).
SESSION_TIMEOUT_MS = 10_000
# The service.name of its spans, unless OTEL_SERVICE_NAME says otherwise.
SERVICE_NAME = "cfstream-worker"


def import_tasks(modules: list[str]) -> dict[str, Task[Any, Any]]:
    """Import ``modules``; the tasks they register are the only ones this worker runs.

    The current directory comes first on the path, as for ``python -m`` (and for Celery's and
    dramatiq's workers): a command's own directory would be there instead. A module that is
    not found is a ConfigurationError; an import its own code fails keeps its traceback."""
    here = os.getcwd()
    if here not in sys.path:
        sys.path.insert(0, here)
    for name in modules:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is None or not (name == exc.name or name.startswith(f"{exc.name}.")):
                raise
            raise ConfigurationError(
                f"cannot import {name!r}: no module named {exc.name!r} in {here} or on "
                "PYTHONPATH; run the worker where the module can be imported from, or set "
                "PYTHONPATH"
            ) from None
    return registry()


def spans(settings: Settings) -> Tracing | None:
    """The runs' spans, if the ``OTEL_*`` variables ask for traces."""
    tracer = setup_tracing(SERVICE_NAME)
    if tracer is None:
        return None
    from cfstream.worker.tracing import RunSpans

    return RunSpans(tracer, worker_name(), settings.executions_topic)


def run(settings: Settings, modules: list[str]) -> None:
    """Run until SIGTERM or SIGINT, then finish running tasks, commit and leave the group."""
    tasks = import_tasks(modules)
    ensure_topics(settings)
    consumer = Consumer(group_config(settings, f"{settings.topic_prefix}.workers",
                                     session_timeout_ms=member_session_ms(settings,
                                                                          SESSION_TIMEOUT_MS)))
    worker = Worker(settings, tasks, consumer, Producer(producer_config(settings)),
                    spans=spans(settings))

    def stop(signum: int, _frame: FrameType | None) -> None:
        worker.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server = serve(settings.http_port_or(WORKER_HTTP_PORT), worker.metrics.registry,
                   worker.ready)
    try:
        worker.run()
    finally:
        if server is not None:
            server.close()
