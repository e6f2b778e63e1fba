"""A small HTTP/1.1 server for the metrics port, on its own thread and event loop.

It serves a WSGI application (:class:`~rerank.service.router.metrics_endpoint.MetricsEndpoint`) to
two kinds of caller: Prometheus, which scrapes now and then, and Envoy's early admission check,
which asks before every large rerank body and waits a bounded time for the answer. The standard
library's WSGI server fits the first and fails the second: it starts a thread per request, closes
the connection after each answer (HTTP/1.0) and listens with a backlog of 5, so under load
Envoy's checks waited for connections and threads and timed out. Here connections stay open
(Envoy pools them), one event loop answers every request in turn, and ``fast`` paths (the
admission check: a few microseconds of reading published state) are answered on the loop
itself while anything else (rendering the metrics) runs on a worker thread.

Only what those callers send is understood: ``GET``/``HEAD`` with an optional small body, no
chunked bodies, no ``Expect``; anything else is answered with a 4xx and the connection closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import socket
import sys
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import unquote

log = logging.getLogger(__name__)

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

MAX_HEAD_BYTES = 16 * 1024
"""Request line and headers together; beyond this, 431."""
MAX_BODY_BYTES = 64 * 1024
"""A request body (read and ignored: no path takes one); beyond this, 413."""
IDLE_SECONDS = 120.0
"""An open connection with no request for this long is closed."""
BACKLOG = 1024

_REASONS = {
    400: "Bad Request",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    501: "Not Implemented",
    500: "Internal Server Error",
}


class Http1Server:
    """Serves ``app`` on ``host:port`` from a daemon thread; ``fast(path)`` says which paths are
    answered on the server's event loop (they must not block), the rest go to a worker thread."""

    def __init__(self, app: WsgiApp, *, fast: Callable[[str], bool] = lambda path: False, name: str = "http") -> None:
        self.app = app
        self.fast = fast
        self.name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None
        self._workers = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{name}-render")
        self.port = 0

    def start(self, host: str, port: int) -> int:
        """Listens on ``host:port`` (0: a free one) and serves until :meth:`stop`; returns the
        port. Raises :class:`OSError` if it cannot listen."""
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(BACKLOG)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        self.port = int(sock.getsockname()[1])
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._server = loop.run_until_complete(
                asyncio.start_server(self._connection, sock=sock, limit=MAX_HEAD_BYTES)
            )
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name=self.name, daemon=True)
        self._thread.start()
        ready.wait()
        return self.port

    def stop(self) -> None:
        """Stops listening and closes every connection."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        self._loop = self._thread = None

        async def close() -> None:
            assert self._server is not None
            self._server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(close(), loop).result(timeout=5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        self._workers.shutdown(wait=False, cancel_futures=True)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await self._one_request(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        except asyncio.CancelledError:
            # The server is stopping (:meth:`stop` cancels every connection). Not re-raised:
            # asyncio's stream callback reports a cancelled handler as an error in the log.
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _one_request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Reads and answers one request; returns whether the connection stays open."""
        try:
            async with asyncio.timeout(IDLE_SECONDS):
                head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            await _refuse(writer, 431)
            return False
        except asyncio.IncompleteReadError as exc:
            if exc.partial.strip():
                await _refuse(writer, 400)
            return False
        request = _parse(head)
        if request is None:
            await _refuse(writer, 400)
            return False
        method, target, version, headers = request
        if "transfer-encoding" in headers or "expect" in headers:
            await _refuse(writer, 501)
            return False
        length = headers.get("content-length", "0")
        if not length.isdigit():
            await _refuse(writer, 400)
            return False
        if int(length) > MAX_BODY_BYTES:
            await _refuse(writer, 413)
            return False
        if int(length):
            await reader.readexactly(int(length))
        connection = headers.get("connection", "").lower()
        keep_alive = connection != "close" if version == "HTTP/1.1" else connection == "keep-alive"
        path, _, query = target.partition("?")
        environ = _environ(method, unquote(path), query, version, headers, writer)
        try:
            if self.fast(path):
                status, response_headers, body = _call(self.app, environ)
            else:
                loop = asyncio.get_running_loop()
                status, response_headers, body = await loop.run_in_executor(self._workers, _call, self.app, environ)
        except Exception:
            log.exception("%s: %s %s failed", self.name, method, path)
            await _refuse(writer, 500)
            return False
        await _write(
            writer, status, response_headers, body, keep_alive=keep_alive, version=version, head=method == "HEAD"
        )
        return keep_alive


def _parse(head: bytes) -> tuple[str, str, str, dict[str, str]] | None:
    """The request line and headers (names lower-cased; a repeated one: the last), or None."""
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes any byte
        return None
    line, *rest = text[:-4].split("\r\n")
    parts = line.split(" ")
    if len(parts) != 3 or parts[2] not in ("HTTP/1.1", "HTTP/1.0") or not parts[1].startswith("/"):
        return None
    headers: dict[str, str] = {}
    for field in rest:
        name, colon, value = field.partition(":")
        if not colon or not name or name != name.strip():
            return None
        headers[name.lower()] = value.strip()
    return parts[0], parts[1], parts[2], headers


def _environ(
    method: str, path: str, query: str, version: str, headers: dict[str, str], writer: asyncio.StreamWriter
) -> dict[str, Any]:
    peer = writer.get_extra_info("peername") or ("", 0)
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "SERVER_PROTOCOL": version,
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "0",
        "REMOTE_ADDR": str(peer[0]),
        "SCRIPT_NAME": "",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    for name, value in headers.items():
        key = name.upper().replace("-", "_")
        environ[key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else f"HTTP_{key}"] = value
    return environ


def _call(app: WsgiApp, environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
    """Runs the WSGI application on ``environ``: its status, headers and whole body."""
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
        seen["status"], seen["headers"] = status, headers
        return lambda data: None

    chunks = app(environ, start_response)
    try:
        body = b"".join(chunks)
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    return seen["status"], seen["headers"], body


async def _write(
    writer: asyncio.StreamWriter,
    status: str,
    headers: list[tuple[str, str]],
    body: bytes,
    *,
    keep_alive: bool,
    version: str = "HTTP/1.1",
    head: bool = False,
) -> None:
    """One response; its length and connection headers are ours, whatever ``headers`` say."""
    lines = [f"{version} {status}"]
    lines += [f"{k}: {v}" for k, v in headers if k.lower() not in ("content-length", "connection")]
    lines += [f"Content-Length: {len(body)}", f"Connection: {'keep-alive' if keep_alive else 'close'}"]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head else body))
    await writer.drain()


async def _refuse(writer: asyncio.StreamWriter, code: int) -> None:
    reason = _REASONS[code]
    with contextlib.suppress(ConnectionError):
        await _write(
            writer, f"{code} {reason}", [("Content-Type", "text/plain")], f"{reason}\n".encode(), keep_alive=False
        )
