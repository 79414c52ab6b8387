"""Starting a processor replica in this process.

The group reader's child process (:mod:`cfstream.kafka.groups`) starts first, already asked
for the group, and the replica's own modules are imported while it starts: the warm-up waits for
that answer, and the child takes about as long as those imports (issue #20's start-up). The
topics check, which waits on the broker too, runs in a thread meanwhile.
"""

from __future__ import annotations

import signal
from types import FrameType

from cfstream.kafka.groups import Groups
from cfstream.processor.placement import predicts_assignment
from cfstream.settings import PROCESSOR_HTTP_PORT, Settings

# The service.name of its spans, unless OTEL_SERVICE_NAME says otherwise.
SERVICE_NAME = "cfstream-processor"


def run(settings: Settings) -> None:
    """Run one replica until SIGTERM or SIGINT, then finish the turn, commit and leave."""
    groups = (Groups.asking(settings, settings.processor_group)
              if predicts_assignment(settings) else None)
    # The rest is imported while the child starts, and while the topics are checked.
    from cfstream.kafka.topics import ensure_topics_soon

    ensure_topics_soon(settings)  # Processor.run's ensure_topics waits for it
    from cfstream.observability.http import serve
    from cfstream.processor.loop import Processor
    from cfstream.tracing.setup import setup_tracing

    tracer = setup_tracing(SERVICE_NAME)
    windows = None
    if tracer is not None:
        from cfstream.processor.tracing import WindowTracer

        windows = WindowTracer(tracer, settings.calls_topic)
    processor = Processor(settings, windows=windows, groups=groups)

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
