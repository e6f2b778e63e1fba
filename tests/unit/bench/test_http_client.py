"""The bench's lean HTTP client: keep-alive reuse, a server closing idle connections, chunked replies."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from bench.http_client import HttpError, LeanHttpClient


def _serve(reply: bytes, close_after: float | None) -> tuple[int, list[int]]:
    """A one-reply-per-request HTTP server; returns its port and a list of accepted connections."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted: list[int] = []

    def handle(conn: socket.socket) -> None:
        buffer = b""
        while True:
            while b"\r\n\r\n" not in buffer:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buffer += chunk
            head, buffer = buffer.split(b"\r\n\r\n", 1)
            size = int(
                next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
            )
            while len(buffer) < size:
                buffer += conn.recv(65536)
            buffer = buffer[size:]
            conn.sendall(reply)
            if close_after is not None:
                time.sleep(close_after)
                conn.close()
                return

    def accept() -> None:
        while True:
            conn, _ = server.accept()
            accepted.append(1)
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return server.getsockname()[1], accepted


def _reply(body: dict, status: str = "200 OK") -> bytes:
    data = json.dumps(body).encode()
    return f"HTTP/1.1 {status}\r\ncontent-length: {len(data)}\r\n\r\n".encode() + data


def test_keep_alive_reuses_one_connection():
    port, accepted = _serve(_reply({"n": 1}), close_after=None)
    client = LeanHttpClient(f"http://127.0.0.1:{port}")
    assert [client.post_json("/x", {"i": i}).json() for i in range(3)] == [{"n": 1}] * 3
    assert len(accepted) == 1


def test_idle_connection_closed_by_server_is_replaced():
    port, accepted = _serve(_reply({"ok": True}), close_after=0.05)
    client = LeanHttpClient(f"http://127.0.0.1:{port}")
    assert client.post_json("/x", {}).json() == {"ok": True}
    time.sleep(0.3)  # the server has closed the pooled connection by now
    assert client.post_json("/x", {}).json() == {"ok": True}
    assert len(accepted) == 2


def test_chunked_reply_and_error_status():
    chunked = b'HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\n{"a":\r\n2\r\n1}\r\n0\r\n\r\n'
    port, _ = _serve(chunked, close_after=None)
    assert LeanHttpClient(f"http://127.0.0.1:{port}").post_json("/x", {}).json() == {"a": 1}
    port, _ = _serve(_reply({"code": 8}, "429 Too Many Requests"), close_after=None)
    with pytest.raises(HttpError, match="429"):
        LeanHttpClient(f"http://127.0.0.1:{port}").post_json("/x", {})
