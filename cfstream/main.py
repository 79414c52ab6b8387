"""The ``cfstream`` command's entry point.

``cfstream processor`` and ``cfstream worker MODULE...`` are what a deployment runs, once a
replica: they start the service without loading the command line's own libraries (typer and
rich, 0.08 s of a replica's launch; issue #20). Every other command, and either of these with an
option (``--help``, say), goes to :mod:`cfstream.cli`, which runs the services the same way.
"""

from __future__ import annotations

import sys
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


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not _a_service(args):
        from cfstream.cli import main as command_line

        command_line(args)
        return
    try:
        serve(args[0], args[1:])
    except CfStreamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(exit_code(exc)) from None
    except KeyboardInterrupt:  # before the service's own handler was in place
        raise SystemExit(RET_INTERRUPTED) from None


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


def _a_service(args: list[str]) -> bool:
    """``processor`` alone, or ``worker`` and module names (no option)."""
    if args == ["processor"]:
        return True
    return (len(args) > 1 and args[0] == "worker"
            and not any(arg.startswith("-") for arg in args[1:]))
