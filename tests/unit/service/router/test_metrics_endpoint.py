"""GET /metrics on the metrics port, over real HTTP on loopback: public by default, the key
check when RERANK_METRICS_REQUIRE_KEY asks for it, the caller's key name (never the key) in
``x-rerank-key``; and multiprocess mode, where any process serves every process's sum and a dead
process's gauges leave the sums."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry

from rerank.service.core.metrics import Metrics
from rerank.service.router.auth import Keyring
from rerank.service.router.metrics_endpoint import MetricsEndpoint
from tests.support import API_KEY, OTHER_KEY, REPO
from tests.support.prometheus import Samples, key_name

KEYRING = Keyring.load((API_KEY, OTHER_KEY), None)


@pytest.fixture
def endpoint(request: pytest.FixtureRequest) -> Iterator[str]:
    """An endpoint over a registry with one batch recorded; ``require_key`` by the parameter."""
    metrics = Metrics(CollectorRegistry())
    metrics.model("m").record_batch(pairs=3, padded_tokens=12, real_tokens=9, seconds=0.01)
    assert metrics.registry is not None
    server = MetricsEndpoint(metrics.registry, keyring=KEYRING, require_key=request.param)
    port = server.start("127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.mark.parametrize("endpoint", [False], indirect=True)
def test_metrics_are_public_by_default(endpoint: str) -> None:
    response = httpx.get(f"{endpoint}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert Samples.parse(response.text).get_value("rerank_pairs_total", model="m") == 3
    assert "x-rerank-key" not in response.headers
    # A caller that sends a key is named (for Envoy's access log), whether or not one is needed.
    named = httpx.get(f"{endpoint}/metrics", headers={"authorization": f"Bearer {OTHER_KEY}"})
    assert named.headers["x-rerank-key"] == key_name(OTHER_KEY) != OTHER_KEY


@pytest.mark.parametrize("endpoint", [True], indirect=True)
def test_a_key_can_be_required(endpoint: str) -> None:
    missing = httpx.get(f"{endpoint}/metrics")
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert "missing API key" in missing.text and "rerank_" not in missing.text
    wrong = httpx.get(f"{endpoint}/metrics", headers={"authorization": "Bearer not-a-key"})
    assert wrong.status_code == 401 and "invalid API key" in wrong.text
    good = httpx.get(f"{endpoint}/metrics", headers={"authorization": f"Bearer {API_KEY}"})
    assert good.status_code == 200 and good.headers["x-rerank-key"] == key_name(API_KEY)
    assert Samples.parse(good.text).get_value("rerank_pairs_total", model="m") == 3


@pytest.mark.parametrize("endpoint", [False], indirect=True)
def test_only_get_metrics(endpoint: str) -> None:
    assert httpx.get(f"{endpoint}/").status_code == 404
    assert httpx.post(f"{endpoint}/metrics").status_code == 405


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
