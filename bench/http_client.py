"""A minimal HTTP/1.1 keep-alive JSON client, so the bench times servers, not HTTP libraries.

Measured on W3 against our server behind Envoy (``python -m bench.gateway_overhead``): httpx
adds about 2 ms per request on its own and ``http.client`` about 0.6 ms (its header parsing),
which would be charged to whichever server sits behind them. This client writes the request
in one ``sendall`` and reads the reply by ``Content-Length`` (or chunks), like wrk or hey do;
the gRPC peers use grpc's C core, so both sides now pay about the same client cost.

Thread-safe: each request takes an idle connection from a pool, or opens one.
"""

from __future__ import annotations

import contextlib
import json
import queue
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


class HttpError(Exception):
    """A non-2xx reply, a malformed reply, or a connection that closed mid-reply."""


class _StaleConnection(HttpError):
    """The connection closed before any byte of the reply."""


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    """Lower-cased names; a repeated header keeps its last value."""
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class LeanHttpClient:
    """``post_json(path, body)`` over pooled keep-alive connections to one ``http://host:port``."""

    def __init__(self, base_url: str, headers: dict[str, str] | None = None, timeout: float = 3600.0) -> None:
        url = urlsplit(base_url)
        if url.scheme != "http" or not url.hostname or not url.port:
            raise ValueError(f"expected http://host:port, got {base_url!r}")
        self._address = (url.hostname, url.port)
        self._timeout = timeout
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self._fixed_headers = f"Host: {url.hostname}:{url.port}\r\n{extra}content-type: application/json\r\n"
        self._idle: queue.SimpleQueue[socket.socket] = queue.SimpleQueue()

    def _connect(self) -> socket.socket:
        sock = socket.create_connection(self._address, timeout=self._timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def post_json(self, path: str, body: Any) -> Reply:
        """POSTs ``body`` as JSON; raises :class:`HttpError` unless the reply is 2xx."""
        payload = json.dumps(body).encode()
        request = (
            f"POST {path} HTTP/1.1\r\n{self._fixed_headers}content-length: {len(payload)}\r\n\r\n".encode() + payload
        )
        try:
            sock, reused = self._idle.get_nowait(), True
        except queue.Empty:
            sock, reused = self._connect(), False
        try:
            try:
                sock.sendall(request)
                reply, keep = _read_reply(sock)
            except (_StaleConnection, ConnectionError):
                if not reused:
                    raise
                # The server closed the idle connection (llama-server does after 5 s) before
                # reading this request: send it again on a fresh one, as HTTP clients do.
                sock.close()
                sock = self._connect()
                sock.sendall(request)
                reply, keep = _read_reply(sock)
        except BaseException:
            sock.close()
            raise
        if keep:
            self._idle.put(sock)
        else:
            sock.close()
        if not 200 <= reply.status < 300:
            raise HttpError(f"HTTP {reply.status}: {reply.body[:300]!r}")
        return reply

    def close(self) -> None:
        with contextlib.suppress(queue.Empty):
            while True:
                self._idle.get_nowait().close()


def _read_reply(sock: socket.socket) -> tuple[Reply, bool]:
    """Reads one reply; returns it and whether the connection may be reused."""
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            raise (_StaleConnection if not buffer else HttpError)("connection closed before the reply's headers")
        buffer += chunk
    head, rest = buffer.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
        raise HttpError(f"not an HTTP/1.x status line: {lines[0]!r}")
    status = int(parts[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        size = int(headers["content-length"])
        while len(rest) < size:
            chunk = sock.recv(max(65536, size - len(rest)))
            if not chunk:
                raise HttpError("connection closed inside the reply's body")
            rest += chunk
        body = rest[:size]
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        body, rest = _read_chunked(sock, rest)
    else:
        raise HttpError("reply has neither content-length nor chunked encoding")
    keep = headers.get("connection", "").lower() != "close" and parts[0] == "HTTP/1.1"
    return Reply(status, headers, body), keep


def _read_chunked(sock: socket.socket, buffer: bytes) -> tuple[bytes, bytes]:
    body = b""

    def need(n: int) -> None:
        nonlocal buffer
        while len(buffer) < n:
            chunk = sock.recv(65536)
            if not chunk:
                raise HttpError("connection closed inside a chunked body")
            buffer += chunk

    while True:
        while b"\r\n" not in buffer:
            need(len(buffer) + 1)
        size_line, buffer = buffer.split(b"\r\n", 1)
        size = int(size_line.split(b";")[0], 16)
        need(size + 2)
        body, buffer = body + buffer[:size], buffer[size + 2 :]
        if size == 0:
            return body, buffer
