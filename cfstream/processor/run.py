"""Starting a processor replica in this process."""

from __future__ import annotations

import signal
from types import FrameType

from cfstream.observability.http import serve
from cfstream.processor.loop import Processor
from cfstream.settings import PROCESSOR_HTTP_PORT, Settings


def run(settings: Settings) -> None:
    """Run one replica until SIGTERM or SIGINT, then finish the turn, commit and leave."""
    processor = Processor(settings)

    def stop(signum: int, _frame: FrameType | None) -> None:
        processor.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    server = serve(settings.http_port_or(PROCESSOR_HTTP_PORT), processor.metrics.registry,
                   processor.ready)
    try:
        processor.run()
    finally:
        if server is not None:
            server.close()
