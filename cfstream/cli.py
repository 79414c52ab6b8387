"""The ``cfstream`` command line."""

from __future__ import annotations

import typer

from cfstream.dev.cli import kafka_app

# Exit codes, as dramatiq names them: scripts and Kubernetes read these.
RET_OK = 0
RET_ERROR = 1
RET_USAGE = 2

app = typer.Typer(help="Delayed and deferred (debounced) task execution on Apache Kafka.",
                  no_args_is_help=True, add_completion=False)
app.add_typer(kafka_app, name="kafka")


def main() -> None:
    app()
