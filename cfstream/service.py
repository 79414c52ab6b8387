"""Running a service in this process: a processor replica or a worker, configured by the
environment, and the exit codes the ``cfstream`` command ends with."""

from __future__ import annotations

from collections.abc import Sequence

from cfstream.errors import CfStreamError, ReplicaFenced

# Exit codes, as dramatiq names them: scripts and Kubernetes read these.
RET_OK = 0
RET_ERROR = 1
RET_USAGE = 2
# A processor replica fenced by another that joined under its CFSTREAM_INSTANCE_ID.
RET_FENCED = 3
# Ctrl-C, as a shell reports it (128 + SIGINT).
RET_INTERRUPTED = 130


def serve(kind: str, modules: Sequence[str] = ()) -> None:
    """Run a processor replica (``kind`` "processor") or a worker running the tasks of
    ``modules`` ("worker"), configured by the environment, until SIGTERM."""
    from cfstream.logs import configure_logging
    from cfstream.settings import get_settings

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    if kind == "processor":
        from cfstream.processor.run import run

        run(settings)
    else:
        from cfstream.worker.run import run as run_worker

        run_worker(settings, list(modules))


def exit_code(exc: CfStreamError) -> int:
    return RET_FENCED if isinstance(exc, ReplicaFenced) else RET_ERROR
