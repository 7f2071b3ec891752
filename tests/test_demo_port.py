"""A second `doit demo` right after the first keeps the demo registry's port (issue 21, item 2)."""

from __future__ import annotations

import socket

from lambdaimages.testbed import demo


def test_port_in_time_wait_is_free_to_the_demo():
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    port = server.getsockname()[1]
    server.listen()
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = server.accept()
    accepted.close()  # the server side closes first: its end of the connection stays in TIME_WAIT
    server.close()
    client.close()
    assert demo._port_free(port)


def test_port_in_use_is_not_free():
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        assert not demo._port_free(held.getsockname()[1])
