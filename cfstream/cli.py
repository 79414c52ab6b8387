"""The ``cfstream`` command line."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import typer
from rich.console import Console

from cfstream.dev.cli import kafka_app
from cfstream.errors import CfStreamError, ExecutionCancelled
from cfstream.logs import configure_logging
from cfstream.service import RET_ERROR, RET_USAGE, exit_code, serve
from cfstream.settings import get_settings

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
    serve("processor")


@app.command()
def worker(
    modules: Annotated[list[str], typer.Argument(help="Modules whose tasks this worker runs.")],
) -> None:
    """Run tasks registered by MODULES until SIGTERM."""
    serve("worker", modules)


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
def pending(
    task: Annotated[str | None, typer.Option(help="Only this task (module:function).")] = None,
    key: Annotated[str | None, typer.Option(help="Only this defer key.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
) -> None:
    """What waits for its due time, soonest first (read from the processors' changelog)."""
    import json

    from rich.table import Column, Table

    from cfstream.processor.pending import modes, pending_calls, seconds_until
    from cfstream.progress import records_bar

    with records_bar("reading the changelog", _err) as progress:
        found = pending_calls(get_settings(), task=task, key=key, progress=progress)
    if as_json:
        for item in found:
            held = {} if item.running_id is None else {"after": item.running_id}
            _out.print(json.dumps({**item.call.to_dict(), "due_ms": item.due_ms, **held}),
                       markup=False, highlight=False, soft_wrap=True)
        return
    # The id whole, whatever the terminal's width: it is what `cfstream cancel` takes.
    table = Table(Column("execution", no_wrap=True, min_width=36), "task", "defer key", "mode",
                  "due in", title=f"{len(found)} pending")
    for item in found:
        task = item.call.task + (f" (attempt {item.call.attempt})" if item.call.attempt > 1
                                 else "")
        table.add_row(item.call.id, task, item.call.defer_key or "",
                      modes(item), f"{seconds_until(item.due_ms):.1f}s")
    _out.print(table)


@app.command()
def cancel(
    execution_id: Annotated[str | None, typer.Argument(help="The pending execution.")] = None,
    task: Annotated[str | None, typer.Option(help="With --key: the pending call of a key.")] = None,
    key: Annotated[str | None, typer.Option(help="The defer key (with --task).")] = None,
    reason: Annotated[str, typer.Option(help="Shown to waiters.")] = "cancelled by operator",
    wait: Annotated[float, typer.Option(help="Seconds to wait for the cancelled event.")] = 30.0,
) -> None:
    """Cancel a pending call: it will not run and its waiters get cf.ExecutionCancelled. An
    EXECUTION_ID that a newer call replaced cancels the call pending in its place."""
    from cfstream.client import Client
    from cfstream.execution import Execution
    from cfstream.processor.pending import cancel as cancel_pending
    from cfstream.processor.pending import pending_calls

    if (execution_id is None) == (task is None or key is None):
        _err.print("give an EXECUTION_ID, or --task and --key", style="red")
        raise typer.Exit(RET_USAGE)
    settings = get_settings()
    found = None
    if execution_id is None:
        found = pending_calls(settings, task=task, key=key)
        if not found:
            _err.print(f"nothing pending for {task} key {key!r}: it ran, or never existed "
                       "(`cfstream events --task TASK --key KEY` tells which)", style="red",
                       markup=False)
            raise typer.Exit(RET_ERROR)
        execution_id = found[0].call.id
    client = Client(settings)
    execution = Execution(execution_id, client=client)
    try:
        status = execution.status()
        if status == "unknown":  # no event (yet, or past the topic's retention): the
            # processors' changelog knows whether it is pending, and under which key
            found = found or pending_calls(settings, execution_id=execution_id)
            if not found:
                _err.print(f"nothing pending for {execution_id}: no event names it and no "
                           "processor holds it (a mistyped id, or one submitted a moment "
                           "ago?)", style="red", markup=False)
                raise typer.Exit(RET_ERROR)
            cancel_pending(settings, found[0], reason)  # the cancel below waits for its answer
        elif status not in ("scheduled", "deferred", "retrying"):
            _err.print(f"nothing pending for {execution_id}: it is {status} (`cfstream events "
                       "--id ID` tells more)", style="red", markup=False)
            raise typer.Exit(RET_ERROR)
        if not execution.cancel(reason, timeout=wait):
            _err.print(f"{execution_id} (or the call that replaced it) started before the "
                       "cancel arrived (`cfstream events --id ID` tells more)", style="red",
                       markup=False)
            raise typer.Exit(RET_ERROR)
        execution.result(timeout=wait)
    except ExecutionCancelled as exc:
        replaced = "" if exc.execution_id == execution_id else f", which replaced {execution_id}"
        _out.print(f"cancelled {exc.execution_id}{replaced}", markup=False, soft_wrap=True)
    except (TimeoutError, CfStreamError) as exc:
        _err.print(str(exc), style="red", markup=False)
        raise typer.Exit(RET_ERROR) from None
    finally:
        client.close()


@app.command()
def console(
    host: Annotated[str, typer.Option(help="Address to serve on (loopback by default).")] =
        "127.0.0.1",
    port: Annotated[int | None, typer.Option(
        help="Port to serve on (default: CFSTREAM_CONSOLE_PORT, 9466; 0: a free one).",
        show_default=False)] = None,
) -> None:
    """A web page showing tasks, pending calls and executions live; it can cancel calls."""
    from cfstream.console.app import run

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    run(settings, host, port)


@app.command()
def demo(
    producer_only: Annotated[bool, typer.Option(
        "--producer-only", help="Only submit the calls (a processor and worker run elsewhere).",
    )] = False,
) -> None:
    """The seed page's notification example: a burst of calls collapsing into one execution."""
    from cfstream.demo import run

    settings = get_settings()
    # A fresh broker's transient warnings (coordinator still loading) would clutter the timeline.
    configure_logging("ERROR", settings.log_format)
    run(settings, producer_only=producer_only)


@topics_app.command("create")
def topics_create() -> None:
    """Create the calls, executions, events and dead-letter topics if missing, replicated for
    the cluster (CFSTREAM_REPLICATION_FACTOR, CFSTREAM_MIN_INSYNC_REPLICAS: unset, the cluster's
    size decides), and show each one's partitions, replicas and min ISR."""
    from cfstream.kafka.topics import ensure_topics, shapes, topic_specs

    settings = get_settings()
    # A slow broker gets named waits on stderr (kafka.topics.Notice), and the replication
    # chosen for new topics; stdout keeps the table of what each topic has on the cluster.
    configure_logging(settings.log_level, settings.log_format)
    created = ensure_topics(settings)
    names = list(topic_specs(settings))
    for name, shape in shapes(settings, names).items():
        state = "created" if name in created else "exists"
        # One line a topic, never wrapped: scripts read it.
        _out.print(f"{name:<40} {shape.partitions:>3} partitions  RF {shape.replicas}  "
                   f"min ISR {shape.min_insync or '?'}  {state}", soft_wrap=True)


def main(args: Sequence[str] | None = None) -> None:
    """The command line (``args``: the command's own, default ``sys.argv[1:]``)."""
    try:
        app(args=None if args is None else list(args))
    except CfStreamError as exc:
        _err.print(f"error: {exc}", style="red", markup=False, highlight=False, soft_wrap=True)
        raise SystemExit(exit_code(exc)) from None
