"""GET /metrics on the metrics port, over real HTTP on loopback: a key needed by default (and
open when RERANK_METRICS_REQUIRE_KEY is off), nothing but GET of one path, clients that are slow
or too many cut off, odd requests answered without a traceback; and multiprocess mode, where any
process serves every process's sum and a dead process's gauges leave the sums."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry

from rerank.service.core.metrics import Metrics
from rerank.service.router import metrics_endpoint
from rerank.service.router.auth import Keyring
from rerank.service.router.metrics_endpoint import MetricsEndpoint
from tests.support import API_KEY, OTHER_KEY, REPO
from tests.support.prometheus import Samples

KEYRING = Keyring.load((API_KEY, OTHER_KEY), None)


@pytest.fixture
def endpoint(request: pytest.FixtureRequest) -> Iterator[str]:
    """An endpoint over a registry with one batch recorded; ``require_key`` by the parameter."""
    metrics = Metrics(CollectorRegistry())
    metrics.model("m").record_batch(pairs=3, padded_tokens=12, real_tokens=9, seconds=0.01)
    assert metrics.registry is not None
    server = MetricsEndpoint(metrics.registry, keyring=KEYRING, require_key=getattr(request, "param", True))
    port = server.start("127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.mark.parametrize("endpoint", [False], indirect=True)
def test_metrics_can_be_opened(endpoint: str) -> None:
    response = httpx.get(f"{endpoint}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert Samples.parse(response.text).get_value("rerank_pairs_total", model="m") == 3
    assert not [h for h in response.headers if h.startswith("x-rerank")]


def test_a_key_is_needed_by_default(endpoint: str) -> None:
    missing = httpx.get(f"{endpoint}/metrics")
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert "missing API key" in missing.text and "rerank_" not in missing.text
    wrong = httpx.get(f"{endpoint}/metrics", headers={"authorization": "Bearer not-a-key"})
    assert wrong.status_code == 401 and "invalid API key" in wrong.text
    good = httpx.get(f"{endpoint}/metrics", headers={"authorization": f"Bearer {API_KEY}"})
    assert good.status_code == 200 and not [h for h in good.headers if h.startswith("x-rerank")]
    assert Samples.parse(good.text).get_value("rerank_pairs_total", model="m") == 3


@pytest.mark.parametrize("endpoint", [False], indirect=True)
def test_only_get_metrics(endpoint: str) -> None:
    assert httpx.get(f"{endpoint}/").status_code == 404
    assert httpx.post(f"{endpoint}/metrics").status_code == 405


def _open(endpoint: str, timeout: float = 5) -> socket.socket:
    host, port = endpoint.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=timeout)


def _answer(connection: socket.socket) -> bytes:
    """What the server sends on ``connection`` until it closes it (b'' if it closes at once)."""
    received = b""
    while chunk := connection.recv(65536):
        received += chunk
    return received


def test_a_client_that_does_not_finish_its_request_is_cut_off(endpoint: str) -> None:
    with _open(endpoint, timeout=metrics_endpoint.READ_SECONDS + 10) as slow:
        slow.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        started = time.monotonic()
        assert _answer(slow) == b""
        assert time.monotonic() - started < metrics_endpoint.READ_SECONDS + 2


def test_connections_past_the_cap_are_closed_and_the_others_served(endpoint: str) -> None:
    idle = [_open(endpoint) for _ in range(metrics_endpoint.MAX_CONNECTIONS)]
    try:
        answers = []
        deadline = time.monotonic() + 5  # until the server has accepted every idle one
        while b"" not in answers and time.monotonic() < deadline:
            with _open(endpoint) as extra:
                extra.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
                answers.append(_answer(extra))
        assert answers[-1] == b"", "a connection past the cap was served"  # closed at once, no thread spent
    finally:
        for connection in idle:
            connection.close()
    deadline = time.monotonic() + 5
    while httpx.get(f"{endpoint}/metrics", headers={"authorization": f"Bearer {API_KEY}"}).status_code != 200:
        assert time.monotonic() < deadline


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /metrics HTTP/1.1\r\nContent-Length: \xc2\xb2\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nContent-Length: 10\r\nContent-Length: 3\r\n\r\nabc",
        b"GET /metrics?bytes=99999999999999999999999 HTTP/1.1\r\n\r\n",
        b"\x00\xff garbage\r\n\r\n",
        b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n",
    ],
)
def test_odd_requests_get_an_answer_and_no_traceback(endpoint: str, request_bytes: bytes, caplog) -> None:
    with caplog.at_level(logging.DEBUG), _open(endpoint) as connection:
        connection.sendall(request_bytes)
        answer = _answer(connection)
    assert answer == b"" or b" 40" in answer[:200] or b" 41" in answer[:200], answer[:200]
    assert "Traceback" not in caplog.text
    assert httpx.get(f"{endpoint}/metrics", headers={"authorization": f"Bearer {API_KEY}"}).status_code == 200


def test_a_busy_port_is_a_configuration_error() -> None:
    from rerank.service.errors import ConfigurationError

    first = MetricsEndpoint(CollectorRegistry(), keyring=KEYRING, require_key=False)
    port = first.start("127.0.0.1", 0)
    try:
        with pytest.raises(ConfigurationError, match=f"cannot serve metrics on 127.0.0.1:{port}.*RERANK_METRICS_PORT"):
            MetricsEndpoint(CollectorRegistry(), keyring=KEYRING, require_key=False).start("127.0.0.1", port)
    finally:
        first.stop()


# --- multiprocess mode: one folder, several processes -----------------------------------------------

RECORD = """
import os, sys
from pathlib import Path
from rerank.service.router.metrics_endpoint import server_metrics
metrics = server_metrics(Path(sys.argv[1]))
model = metrics.model("m")
model.record_batch(pairs=int(sys.argv[2]), padded_tokens=8, real_tokens=8, seconds=0.01)
model.set_queue(int(sys.argv[3]), 1.5)
"""

READ = """
import sys
from pathlib import Path
from prometheus_client import generate_latest
from rerank.service.router.metrics_endpoint import exposition_registry, server_metrics
folder = Path(sys.argv[1])
metrics = server_metrics(folder)
sys.stdout.write(generate_latest(exposition_registry(metrics, folder)).decode())
"""


def run(script: str, folder: Path, *args: str) -> str:
    """``script`` in a Python process of its own, in multiprocess mode on ``folder``."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder)}
    result = subprocess.run(
        [sys.executable, "-c", script, str(folder), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_any_process_serves_the_sum_and_a_dead_ones_gauges_leave_it(tmp_path: Path) -> None:
    run(RECORD, tmp_path, "3", "5")  # exits without a clean stop, as a killed replica does
    run(RECORD, tmp_path, "4", "2")
    samples = Samples.parse(run(READ, tmp_path))
    assert samples.get_value("rerank_pairs_total", model="m") == 3 + 4  # counters survive their process
    assert samples.get_value("rerank_batch_size_count", model="m") == 2
    # The queue gauges of processes that are gone are dropped; only the reader's own 0 is left.
    assert samples.get_value("rerank_queue_pairs", model="m") == 0  # not 5 + 2
    assert samples.get_value("rerank_queue_estimated_seconds", model="m") == 0  # not 1.5


def test_multiprocess_mode_needs_the_variable_before_the_import(tmp_path: Path) -> None:
    from rerank.service.errors import ConfigurationError
    from rerank.service.router.metrics_endpoint import server_metrics

    with pytest.raises(ConfigurationError, match="PROMETHEUS_MULTIPROC_DIR before the process starts"):
        server_metrics(tmp_path)
