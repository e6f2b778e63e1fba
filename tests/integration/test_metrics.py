"""GET /metrics through the real Envoy, from the real service: every counter moves by exactly
what the test sends (requests by method, model, key name and status code; pairs and tokens
matching the responses' usage; rejections by reason; the edge's checks), a key is needed by
default and the metrics are open when the setting says so."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from rerank.gateway.envoy import Envoy
from rerank.gateway.envoy import start as start_envoy
from rerank.gateway.processes import Child
from rerank.service.settings import Settings
from tests.support import API_KEY, OTHER_KEY
from tests.support.processes import free_port
from tests.support.prometheus import Samples, key_name
from tests.support.servers import start_service

MODEL = "bert-tiny"
RERANK = "/rerank.v1.RerankService/Rerank"
QUEUE_PAIRS = 8
"""The service's queue: a request of more pairs is refused (request_too_large)."""


@dataclass
class Observed:
    base_url: str
    metrics_url: str
    grpc_port: int
    service: Child
    envoy: Envoy

    def scrape(self, key: str | None = API_KEY) -> Samples:
        headers = {"authorization": f"Bearer {key}"} if key else {}
        response = httpx.get(f"{self.base_url}/metrics", headers=headers, timeout=30)
        assert response.status_code == 200, response.text[:300]
        return Samples.parse(response.text)


def observed(models: Path, workdir: Path, *flags: str, env: dict[str, str] | None = None) -> Iterator[Observed]:
    metrics_port = free_port()
    # fp32 (one ONNX Runtime stream) whatever the converter's timing table says: the counts below
    # take each small request to run as one micro-batch, and a two-stream OpenVINO variant (which
    # won the table once on a loaded machine; pinned, the test fails: 8 micro-batches for 5
    # requests) may split one across its streams.
    service, port, _ = start_service(
        models,
        "--metrics-port",
        str(metrics_port),
        "--max-queue-pairs",
        str(QUEUE_PAIRS),
        "--variant",
        "fp32",
        *flags,
        env=env,
    )
    settings = Settings(
        rest_port=free_port(), grpc_port=port, admin_port=free_port(), rest_host="127.0.0.1", metrics_port=metrics_port
    )
    envoy = start_envoy(settings, workdir)
    try:
        yield Observed(
            f"http://127.0.0.1:{settings.rest_port}", f"http://127.0.0.1:{metrics_port}/metrics", port, service, envoy
        )
    finally:
        envoy.stop()
        service.stop(grace=20)


@pytest.fixture(scope="module")
def one_model(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("metrics-models")
    shutil.copytree(models_dir / MODEL, folder / MODEL)
    return folder


@pytest.fixture(scope="module")
def private(one_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    yield from observed(one_model, tmp_path_factory.mktemp("metrics-envoy-key"))


@pytest.fixture(scope="module")
def public(one_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    service_env = {"RERANK_METRICS_REQUIRE_KEY": "false"}
    yield from observed(one_model, tmp_path_factory.mktemp("metrics-envoy-open"), env=service_env)


def rerank(base_url: str, documents: list[str], key: str | None = API_KEY, **fields: object) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    body = {"model": MODEL, "query": "what do pandas eat?", "documents": documents, **fields}
    return httpx.post(f"{base_url}/v1/rerank", json=body, headers=headers, timeout=30)


def test_counters_move_by_exactly_what_was_sent(private: Observed) -> None:
    public = private
    before = public.scrape()
    tokens = pairs = 0
    for key, documents in [
        (API_KEY, ["bamboo", "leaves"]),
        (API_KEY, ["the giant panda eats bamboo"]),
        (API_KEY, ["a", "b", "c"]),
        (OTHER_KEY, ["shoots"]),
        (OTHER_KEY, ["fish", "bamboo shoots and leaves"]),
    ]:
        response = rerank(public.base_url, documents, key)
        assert response.status_code == 200, response.text[:300]
        assert not [h for h in response.headers if h.startswith("x-rerank")]
        tokens += response.json()["usage"]["total_tokens"]
        pairs += len(documents)
    assert rerank(public.base_url, ["x"], query="").status_code == 400
    assert rerank(public.base_url, ["x"], model="nope").status_code == 404
    assert rerank(public.base_url, ["x"], key=None).status_code == 401
    assert rerank(public.base_url, ["x"] * (QUEUE_PAIRS + 1)).status_code == 429
    after = public.scrape()

    def moved(name: str, **labels: str) -> float:
        return after.get_value(name, **labels) - before.get_value(name, **labels)

    requests = {
        (key, model, code): moved("rerank_requests_total", method=RERANK, model=model, key=key, code=code)
        for key, model, code in [
            (key_name(API_KEY), MODEL, "OK"),
            (key_name(OTHER_KEY), MODEL, "OK"),
            (key_name(API_KEY), MODEL, "INVALID_ARGUMENT"),
            (key_name(API_KEY), "-", "NOT_FOUND"),
            ("-", "-", "UNAUTHENTICATED"),
            (key_name(API_KEY), MODEL, "RESOURCE_EXHAUSTED"),
        ]
    }
    # The call without a key never reached the service: the edge's check answered it.
    assert list(requests.values()) == [3, 2, 1, 1, 0, 1], requests
    assert after.total("rerank_requests_total") - before.total("rerank_requests_total") == 8  # and nothing else
    assert moved("rerank_edge_checks_total", key="-", outcome="unauthenticated") == 1
    # Each rerank with a key checked and held a place (a small body), scrapes and all passing.
    assert moved("rerank_edge_checks_total", key=key_name(API_KEY), outcome="held") == 3 + 1 + 1 + 1
    assert moved("rerank_edge_checks_total", key=key_name(OTHER_KEY), outcome="held") == 2
    assert moved("rerank_request_duration_seconds_count", method=RERANK, model=MODEL) == 3 + 2 + 1 + 1
    assert moved("rerank_rejected_requests_total", model=MODEL, reason="request_too_large") == 1
    # The five scored requests, each tokenized once, queued once and run in one micro-batch.
    assert moved("rerank_pairs_total", model=MODEL) == pairs
    assert moved("rerank_tokens_total", model=MODEL) == tokens  # what the responses' usage counted
    assert moved("rerank_padded_tokens_total", model=MODEL) >= tokens
    for histogram in ("tokenization_duration_seconds", "queue_duration_seconds", "inference_duration_seconds"):
        assert moved(f"rerank_{histogram}_count", model=MODEL) == 5, histogram
    assert moved("rerank_batch_size_count", model=MODEL) == 5
    assert moved("rerank_batch_size_sum", model=MODEL) == pairs
    assert after.get_value("rerank_queue_pairs", model=MODEL) == 0
    assert after.get_value("rerank_requests_in_flight") == 0


def test_the_metrics_port_serves_the_same_metrics(private: Observed) -> None:
    public = private
    auth = {"authorization": f"Bearer {API_KEY}"}
    direct = Samples.parse(httpx.get(public.metrics_url, headers=auth, timeout=30).text)
    through_envoy = public.scrape()
    assert direct.names() == through_envoy.names()
    assert direct.total("rerank_pairs_total") == through_envoy.total("rerank_pairs_total")


def test_metrics_can_be_opened_and_are_not_transcoded(public: Observed) -> None:
    response = httpx.get(f"{public.base_url}/metrics", timeout=30)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert httpx.get(public.metrics_url, timeout=30).status_code == 200
    assert httpx.post(f"{public.base_url}/metrics", timeout=30).status_code == 405


def test_a_key_is_needed_by_default_through_envoy_and_on_the_metrics_port(private: Observed) -> None:
    missing = httpx.get(f"{private.base_url}/metrics", timeout=30)
    assert missing.status_code == 401 and "rerank_" not in missing.text
    wrong = httpx.get(f"{private.base_url}/metrics", headers={"authorization": "Bearer wrong"}, timeout=30)
    assert wrong.status_code == 401
    assert httpx.get(private.metrics_url, timeout=30).status_code == 401  # on the metrics port as well
    assert private.scrape(OTHER_KEY).get_value("rerank_queue_pairs", model=MODEL) == 0
