"""The ``cfstream`` command's entry point.

``cfstream processor`` and ``cfstream worker MODULE...`` are what a deployment runs, once a
replica: they start the service (:mod:`cfstream.service`) without loading the command line's own
libraries (typer and rich, 0.08 s of a replica's launch; issue #20). Every other command, and
either of these with an option (``--help``, say), goes to :mod:`cfstream.cli`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from cfstream.errors import CfStreamError
from cfstream.service import RET_INTERRUPTED, exit_code, serve


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


def _a_service(args: list[str]) -> bool:
    """``processor`` alone, or ``worker`` and module names (no option)."""
    if args == ["processor"]:
        return True
    return (len(args) > 1 and args[0] == "worker"
            and not any(arg.startswith("-") for arg in args[1:]))
