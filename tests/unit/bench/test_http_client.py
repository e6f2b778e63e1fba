"""The bench's lean HTTP client: keep-alive reuse, a server closing idle connections, chunked replies."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing

import pytest

from bench.http_client import HttpError, LeanHttpClient

Serve = Callable[[bytes, float | None], tuple[int, list[int]]]


@pytest.fixture
def serve() -> Iterator[Serve]:
    """``serve(reply, close_after)``: a one-reply-per-request HTTP server on a free port; returns
    the port and a list that grows by one per accepted connection. Closed after the test."""
    listening: list[socket.socket] = []

    def start(reply: bytes, close_after: float | None) -> tuple[int, list[int]]:
        server = socket.socket()
        listening.append(server)
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        accepted: list[int] = []

        def handle(conn: socket.socket) -> None:
            with conn:
                buffer = b""
                while True:
                    while b"\r\n\r\n" not in buffer:
                        chunk = conn.recv(65536)
                        if not chunk:
                            return
                        buffer += chunk
                    head, buffer = buffer.split(b"\r\n\r\n", 1)
                    size = int(
                        next(
                            line.split(b":")[1]
                            for line in head.split(b"\r\n")
                            if line.lower().startswith(b"content-length")
                        )
                    )
                    while len(buffer) < size:
                        buffer += conn.recv(65536)
                    buffer = buffer[size:]
                    conn.sendall(reply)
                    if close_after is not None:
                        time.sleep(close_after)
                        return

        def accept() -> None:
            while True:
                try:
                    conn, _ = server.accept()
                except OSError:  # closed at the end of the test
                    return
                accepted.append(1)
                threading.Thread(target=handle, args=(conn,), daemon=True).start()

        threading.Thread(target=accept, daemon=True).start()
        return server.getsockname()[1], accepted

    yield start
    for server in listening:
        server.close()


def _reply(body: dict, status: str = "200 OK") -> bytes:
    data = json.dumps(body).encode()
    return f"HTTP/1.1 {status}\r\ncontent-length: {len(data)}\r\n\r\n".encode() + data


def test_keep_alive_reuses_one_connection(serve: Serve):
    port, accepted = serve(_reply({"n": 1}), None)
    with closing(LeanHttpClient(f"http://127.0.0.1:{port}")) as client:
        assert [client.post_json("/x", {"i": i}).json() for i in range(3)] == [{"n": 1}] * 3
    assert len(accepted) == 1


def test_idle_connection_closed_by_server_is_replaced(serve: Serve):
    port, accepted = serve(_reply({"ok": True}), 0.05)
    with closing(LeanHttpClient(f"http://127.0.0.1:{port}")) as client:
        assert client.post_json("/x", {}).json() == {"ok": True}
        time.sleep(0.3)  # the server has closed the pooled connection by now
        assert client.post_json("/x", {}).json() == {"ok": True}
    assert len(accepted) == 2


def test_chunked_reply_and_error_status(serve: Serve):
    chunked = b'HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\n{"a":\r\n2\r\n1}\r\n0\r\n\r\n'
    port, _ = serve(chunked, None)
    with closing(LeanHttpClient(f"http://127.0.0.1:{port}")) as client:
        assert client.post_json("/x", {}).json() == {"a": 1}
    port, _ = serve(_reply({"code": 8}, "429 Too Many Requests"), None)
    with closing(LeanHttpClient(f"http://127.0.0.1:{port}")) as client, pytest.raises(HttpError, match="429"):
        client.post_json("/x", {})
