"""Ports for the services and brokers the project starts itself (cfstream.dev.procs)."""

from __future__ import annotations

import socket

from cfstream.dev import procs


def test_free_ports_lie_below_the_range_outgoing_connections_take() -> None:
    # A node restarted on its old port found it taken by a client's outgoing connection.
    low, _ = procs.ephemeral_ports()
    ports = {procs.free_port() for _ in range(20)}
    assert all(procs.LISTEN_PORTS_FROM <= port < low for port in ports)
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            # As the broker and our HTTP servers bind: a port left in TIME_WAIT by an earlier
            # test's connection is free to listen on (CI failed binding one without this).
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((procs.HOST, port))  # free indeed
