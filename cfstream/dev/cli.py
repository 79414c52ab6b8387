"""``cfstream kafka start|stop|status``: a local Kafka broker, or a cluster (``--nodes``), for
development."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from cfstream.dev import broker, cluster, properties
from cfstream.dev.cluster_layout import configured_port, is_cluster
from cfstream.dev.jars import KAFKA_VERSION
from cfstream.errors import ConfigurationError, KafkaUnavailable

# LSB's "program is not running" status code, so scripts can do `status || start`.
RET_NOT_RUNNING = 3
# LSB's "dead and pid file exists": some nodes of a cluster run, others died or were stopped.
RET_DEGRADED = 1

kafka_app = typer.Typer(
    help=f"A local Apache Kafka {KAFKA_VERSION} broker (KRaft), or a cluster of them "
         "(--nodes), for dev and tests.",
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
    nodes: Annotated[int, typer.Option(
        min=1, help="Nodes, each broker and controller: more than 1 is a cluster with a quorum "
                    "of that many voters, node i serving clients on --port + i - 1.",
    )] = 1,
) -> None:
    """Start the broker (or cluster) in the background and print its (PLAINTEXT) bootstrap
    address(es)."""
    if nodes > 1 or is_cluster(data_dir):
        if sasl or sasl_port or sasl_user:
            _err.print("--sasl works with a single broker only (no --nodes)", style="red",
                       markup=False, highlight=False)
            raise typer.Exit(2)
        _start_cluster(nodes, port, data_dir, timeout)
    else:
        _start_broker(port, data_dir, timeout, sasl, sasl_port, _sasl_users(sasl_user or []))


def _sasl_users(items: list[str]) -> dict[str, str] | None:
    """``--sasl-user NAME=PASSWORD`` options as a dict; None without any."""
    users: dict[str, str] | None = None
    for item in items:
        name, sep, password = item.partition("=")
        if not sep:
            _err.print(f"--sasl-user {item!r}: expected NAME=PASSWORD", style="red",
                       markup=False, highlight=False)
            raise typer.Exit(2)
        users = {**(users or {}), name: password}
    return users


def _start_broker(port: int, data_dir: Path, timeout: float, sasl: bool, sasl_port: int,
                  users: dict[str, str] | None) -> None:
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


def _start_cluster(nodes: int, port: int, data_dir: Path, timeout: float) -> None:
    before = cluster.status(data_dir)
    try:
        started = cluster.start(
            nodes, port, data_dir, timeout=timeout,
            notify=lambda msg: _err.print(msg, markup=False, highlight=False),
        )
    except (KafkaUnavailable, ConfigurationError) as exc:
        raise _fail(exc) from exc
    if before.running:
        _err.print(f"Already running ({nodes} nodes, data dir {started.data_dir}).",
                   highlight=False)
    else:
        again = [i for i in started.running_ids if i not in before.running_ids]
        what = (f"Kafka cluster of {nodes} nodes started" if not before.running_ids
                else f"Node{'s' if len(again) > 1 else ''} {', '.join(map(str, again))} "
                     f"started again")
        _err.print(f"{what} (data dir {started.data_dir}):", highlight=False)
        for i, current in enumerate(started.nodes, start=1):
            _err.print(f"  node {i}: pid {current.pid}, port {current.port}, "
                       f"log {current.data_dir / 'broker.log'}", highlight=False)
    # stdout carries only the addresses, as for one broker.
    typer.echo(started.bootstrap_servers)


@kafka_app.command()
def stop(
    data_dir: DataDir = broker.DEFAULT_DATA_DIR,
    timeout: Annotated[float, typer.Option(help="Seconds before SIGKILL.")] = (
        broker.STOP_TIMEOUT_S
    ),
) -> None:
    """Stop the broker (or every node of the cluster) of --data-dir (SIGTERM, then SIGKILL
    after --timeout)."""
    try:
        if is_cluster(data_dir):
            was_running = cluster.stop(data_dir, timeout=timeout)
        else:
            was_running = broker.stop(data_dir, timeout=timeout)
    except KafkaUnavailable as exc:
        raise _fail(exc) from exc
    typer.echo("stopped" if was_running else f"not running ({Path(data_dir).resolve()})")


@kafka_app.command()
def status(data_dir: DataDir = broker.DEFAULT_DATA_DIR) -> None:
    """Say whether the broker (or cluster) of --data-dir runs, and where. Exit code 3 when it
    does not, 1 when only some nodes of a cluster run."""
    if is_cluster(data_dir):
        _cluster_status(data_dir)
        return
    current = broker.status(data_dir)
    if not current.running:
        typer.echo(f"not running (data dir {current.data_dir})")
        raise typer.Exit(RET_NOT_RUNNING)
    sasl = (f", SASL_PLAINTEXT {current.sasl_bootstrap_servers}"
            if current.sasl_bootstrap_servers else "")
    typer.echo(f"running: bootstrap {current.bootstrap_servers}{sasl}, pid {current.pid}, "
               f"data dir {current.data_dir}")


def _cluster_status(data_dir: Path) -> None:
    current = cluster.status(data_dir)
    count, up = len(current.nodes), len(current.running_ids)
    if not up:
        typer.echo(f"not running (cluster of {count} nodes, data dir {current.data_dir})")
    else:
        state = "running" if current.running else f"degraded, {up} of {count} nodes running"
        typer.echo(f"{state}: bootstrap {current.bootstrap_servers}, data dir {current.data_dir}")
    for i, node in enumerate(current.nodes, start=1):
        if node.running:
            typer.echo(f"  node {i}: running, pid {node.pid}, port {node.port}")
        else:
            typer.echo(f"  node {i}: not running (port {configured_port(current.data_dir, i)})")
    if not current.running:
        raise typer.Exit(RET_DEGRADED if up else RET_NOT_RUNNING)
