"""Starting a worker in this process."""

from __future__ import annotations

import signal
from types import FrameType

from cfstream.observability.http import serve
from cfstream.settings import WORKER_HTTP_PORT, Settings
from cfstream.worker.runner import Worker, import_tasks


def run(settings: Settings, modules: list[str]) -> None:
    """Run until SIGTERM or SIGINT, then finish running tasks, commit and leave the group."""
    worker = Worker(settings, import_tasks(modules))

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
