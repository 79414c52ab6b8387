"""The ``cfstream`` command line."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from cfstream.dev.cli import kafka_app
from cfstream.errors import CfStreamError
from cfstream.logs import configure_logging
from cfstream.settings import get_settings

# Exit codes, as dramatiq names them: scripts and Kubernetes read these.
RET_OK = 0
RET_ERROR = 1
RET_USAGE = 2

app = typer.Typer(help="Delayed and deferred (debounced) task execution on Apache Kafka.",
                  no_args_is_help=True, add_completion=False)
app.add_typer(kafka_app, name="kafka")
topics_app = typer.Typer(help="cfstream's Kafka topics.", no_args_is_help=True)
app.add_typer(topics_app, name="topics")
_out = Console()
_err = Console(stderr=True)


@app.command()
def processor() -> None:
    """Run one stream-processor replica (state in CFSTREAM_STATE_DIR)."""
    from cfstream.processor.run import run

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    run(settings)


@app.command()
def worker(
    modules: Annotated[list[str], typer.Argument(help="Modules whose tasks this worker runs.")],
) -> None:
    """Run tasks registered by MODULES until SIGTERM."""
    from cfstream.worker.run import run

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    run(settings, modules)


@app.command()
def events(
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new events.")] = False,
    task: Annotated[str | None, typer.Option(help="Only this task.")] = None,
    key: Annotated[str | None, typer.Option(help="Only this defer key.")] = None,
    execution: Annotated[str | None, typer.Option("--id", help="Only this execution.")] = None,
    type_: Annotated[list[str] | None, typer.Option("--type", help="Only these types.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print raw JSON lines.")] = False,
) -> None:
    """Print events (scheduled, deferred, started, succeeded, failed, cancelled, invalid)."""
    import json

    from cfstream.events.tail import describe, matches, tail

    for item in tail(get_settings(), follow=follow):
        if matches(item, task=task, key=key, execution_id=execution, types=type_):
            _out.print(json.dumps(item) if as_json else describe(item), markup=False,
                       highlight=False, soft_wrap=True)


@app.command()
def demo(
    producer_only: Annotated[bool, typer.Option(
        "--producer-only", help="Only submit the calls (a processor and worker run elsewhere).",
    )] = False,
) -> None:
    """The seed page's notification example: a burst of calls collapsing into one execution."""
    from cfstream.demo import run

    settings = get_settings()
    configure_logging("WARNING", settings.log_format)
    run(settings, producer_only=producer_only)


@topics_app.command("create")
def topics_create() -> None:
    """Create the calls, executions, events and dead-letter topics if missing."""
    from cfstream.kafka.topics import ensure_topics, topic_specs

    settings = get_settings()
    created = ensure_topics(settings)
    for name, spec in topic_specs(settings).items():
        state = "created" if name in created else "exists"
        _out.print(f"{name:<40} {spec['partitions']:>3} partitions  {state}")


def main() -> None:
    try:
        app()
    except CfStreamError as exc:
        _err.print(f"error: {exc}", style="red", markup=False, highlight=False)
        raise SystemExit(RET_ERROR) from None
