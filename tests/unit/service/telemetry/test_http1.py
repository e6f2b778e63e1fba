"""The metrics port's HTTP/1.1 server, over real sockets on loopback: connections stay open,
the fast path (Envoy's admission check) is never stuck behind a slow one (rendering metrics), and
what it does not speak is refused, not hung on."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest

from rerank.service.telemetry.http1 import MAX_HEAD_BYTES, Http1Server

release = threading.Event()
slow_entered = threading.Event()


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    if environ["PATH_INFO"] == "/slow":
        slow_entered.set()
        release.wait(10)
    if environ["PATH_INFO"] == "/broken":
        raise RuntimeError("a bug")
    body = f"{environ['REQUEST_METHOD']} {environ['PATH_INFO']}?{environ['QUERY_STRING']} {environ.get('HTTP_X_A')}"
    start_response("200 OK", [("Content-Type", "text/plain"), ("X-Path", environ["PATH_INFO"])])
    return [body.encode()]


@pytest.fixture
def port() -> Iterator[int]:
    release.clear()
    slow_entered.clear()
    server = Http1Server(app, fast=lambda path: path == "/fast", name="test-http")
    bound = server.start("127.0.0.1", 0)
    try:
        yield bound
    finally:
        release.set()
        server.stop()


def exchange(sock: socket.socket, request: bytes) -> tuple[str, dict[str, str], bytes]:
    """Sends ``request`` and reads one response (by its Content-Length; none for HEAD)."""
    sock.sendall(request)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    while not request.startswith(b"HEAD ") and len(body) < int(headers["content-length"]):
        body += sock.recv(65536)
    return status, headers, body


def closed(sock: socket.socket) -> bool:
    sock.settimeout(2)
    return sock.recv(1) == b""


def test_one_connection_carries_many_requests(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        for i in range(3):
            status, headers, body = exchange(sock, f"GET /fast?n={i} HTTP/1.1\r\nHost: x\r\nX-A: {i}\r\n\r\n".encode())
            assert status == "HTTP/1.1 200 OK" and headers["connection"] == "keep-alive"
            assert body == f"GET /fast?n={i} {i}".encode()
        # A small body is read and ignored, and the next request still parses.
        status, _, body = exchange(sock, b"GET /other HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc")
        assert status == "HTTP/1.1 200 OK" and body == b"GET /other? None"
        status, headers, body = exchange(sock, b"HEAD /fast HTTP/1.1\r\nConnection: close\r\n\r\n")
        assert headers["connection"] == "close" and headers["content-length"] == "16" and body == b""
        assert closed(sock)
    with socket.create_connection(("127.0.0.1", port)) as sock:
        status, headers, _ = exchange(sock, b"GET /fast HTTP/1.0\r\n\r\n")  # HTTP/1.0: closes
        assert status == "HTTP/1.0 200 OK" and headers["connection"] == "close" and closed(sock)


def test_the_fast_path_is_not_stuck_behind_a_slow_one(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as slow, socket.create_connection(("127.0.0.1", port)) as fast:
        slow.sendall(b"GET /slow HTTP/1.1\r\n\r\n")
        assert slow_entered.wait(10), "the slow request never reached the application"
        started = time.monotonic()
        status, _, _ = exchange(fast, b"GET /fast HTTP/1.1\r\n\r\n")
        assert status.endswith("200 OK") and time.monotonic() - started < 0.5
        release.set()
        assert exchange(slow, b"")[2] == b"GET /slow? None"


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"NONSENSE\r\n\r\n", "400"),
        (b"GET /broken HTTP/1.1\r\n\r\n", "500"),
        (b"GET /fast HTTP/1.1\r\nno colon here\r\n\r\n", "400"),
        (b"GET /fast HTTP/1.1\r\nContent-Length: lots\r\n\r\n", "400"),
        (b"POST /fast HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", "501"),
        (b"GET /fast HTTP/1.1\r\nContent-Length: 9999999\r\n\r\n", "413"),
        (b"GET /fast HTTP/1.1\r\nX-Big: " + b"a" * MAX_HEAD_BYTES + b"\r\n\r\n", "431"),
    ],
)
def test_what_it_does_not_speak_is_refused_and_closed(port: int, request_bytes: bytes, status: str) -> None:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        answer, headers, _ = exchange(sock, request_bytes)
        assert answer.split(" ")[1] == status and headers["connection"] == "close"
        assert closed(sock)


def test_stopping_with_open_connections_closes_them_quietly(caplog: pytest.LogCaptureFixture) -> None:
    server = Http1Server(app, fast=lambda path: path == "/fast", name="test-http")
    bound = server.start("127.0.0.1", 0)
    idle = [socket.create_connection(("127.0.0.1", bound), timeout=5) for _ in range(3)]
    try:
        idle[0].sendall(b"GET /fast HTTP/1.1\r\nHost: x\r\n\r\n")
        assert idle[0].recv(1024).startswith(b"HTTP/1.1 200")  # kept alive, waiting for the next request
        time.sleep(0.1)
        with caplog.at_level("DEBUG"):
            server.stop()
        assert all(sock.recv(1024) == b"" for sock in idle)  # closed by the server
        assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")], caplog.text
    finally:
        for sock in idle:
            sock.close()
