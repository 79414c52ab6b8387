"""``cfstream kafka start|stop|status``: a local single-node Kafka broker for development."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from cfstream.dev import broker, properties
from cfstream.dev.jars import KAFKA_VERSION
from cfstream.errors import ConfigurationError, KafkaUnavailable

# LSB's "program is not running" status code, so scripts can do `status || start`.
RET_NOT_RUNNING = 3

kafka_app = typer.Typer(
    help=f"A local single-node Apache Kafka {KAFKA_VERSION} broker (KRaft) for dev and tests.",
    no_args_is_help=True,
)
_err = Console(stderr=True, soft_wrap=True)

DataDir = Annotated[
    Path, typer.Option("--data-dir", help="Broker storage, config, pid file and broker.log.")
]


def _fail(exc: KafkaUnavailable | ConfigurationError) -> typer.Exit:
    _err.print(str(exc), style="red", markup=False, highlight=False)
    return typer.Exit(1)


@kafka_app.command()
def start(
    port: Annotated[int, typer.Option(help="PLAINTEXT port on 127.0.0.1 (0: any free port).")] = (
        broker.DEFAULT_PORT
    ),
    data_dir: DataDir = broker.DEFAULT_DATA_DIR,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the broker.")] = (
        broker.START_TIMEOUT_S
    ),
    sasl: Annotated[bool, typer.Option(
        "--sasl", help="Also open a SASL_PLAINTEXT listener (mechanism PLAIN) on --sasl-port.",
    )] = False,
    sasl_port: Annotated[int, typer.Option(
        help="SASL_PLAINTEXT port on 127.0.0.1 (0: any free port); implies --sasl.",
    )] = 0,
    sasl_user: Annotated[list[str] | None, typer.Option(
        "--sasl-user", metavar="NAME=PASSWORD",
        help="A user of the SASL listener (repeatable); implies --sasl. Default: "
             + ", ".join(f"{n}={p}" for n, p in properties.DEFAULT_SASL_USERS.items()) + ".",
    )] = None,
) -> None:
    """Start the broker in the background and print its (PLAINTEXT) bootstrap address."""
    users: dict[str, str] | None = None
    for item in sasl_user or []:
        name, sep, password = item.partition("=")
        if not sep:
            _err.print(f"--sasl-user {item!r}: expected NAME=PASSWORD", style="red",
                       markup=False, highlight=False)
            raise typer.Exit(2)
        users = {**(users or {}), name: password}
    before = broker.status(data_dir)
    try:
        started = broker.start(
            port, data_dir, sasl=sasl, sasl_port=sasl_port or None, sasl_users=users,
            timeout=timeout,
            notify=lambda msg: _err.print(msg, markup=False, highlight=False),
        )
    except (KafkaUnavailable, ConfigurationError) as exc:
        raise _fail(exc) from exc
    if before.running:
        _err.print(f"Already running (pid {started.pid}, data dir {started.data_dir}).")
    else:
        _err.print(f"Kafka broker started (pid {started.pid}, data dir {started.data_dir}, "
                   f"log {started.data_dir / 'broker.log'}).", highlight=False)
    if started.sasl_bootstrap_servers:
        named = users or properties.DEFAULT_SASL_USERS
        names = "" if before.running else " for " + ", ".join(named)
        _err.print(f"SASL_PLAINTEXT (PLAIN) listener on {started.sasl_bootstrap_servers}{names}.",
                   markup=False, highlight=False)
    # stdout carries only the address: `export CFSTREAM_BOOTSTRAP_SERVERS=$(cfstream kafka start)`.
    typer.echo(started.bootstrap_servers)


@kafka_app.command()
def stop(
    data_dir: DataDir = broker.DEFAULT_DATA_DIR,
    timeout: Annotated[float, typer.Option(help="Seconds before SIGKILL.")] = (
        broker.STOP_TIMEOUT_S
    ),
) -> None:
    """Stop the broker of --data-dir (SIGTERM, then SIGKILL after --timeout)."""
    try:
        was_running = broker.stop(data_dir, timeout=timeout)
    except KafkaUnavailable as exc:
        raise _fail(exc) from exc
    typer.echo("stopped" if was_running else f"not running ({Path(data_dir).resolve()})")


@kafka_app.command()
def status(data_dir: DataDir = broker.DEFAULT_DATA_DIR) -> None:
    """Say whether the broker of --data-dir runs, and where. Exit code 3 when it does not."""
    current = broker.status(data_dir)
    if not current.running:
        typer.echo(f"not running (data dir {current.data_dir})")
        raise typer.Exit(RET_NOT_RUNNING)
    sasl = (f", SASL_PLAINTEXT {current.sasl_bootstrap_servers}"
            if current.sasl_bootstrap_servers else "")
    typer.echo(f"running: bootstrap {current.bootstrap_servers}{sasl}, pid {current.pid}, "
               f"data dir {current.data_dir}")
