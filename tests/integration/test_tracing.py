"""Tracing end to end: a client's W3C ``traceparent`` goes through the real Envoy (REST and
native gRPC) into the real service, which exports its spans over OTLP/gRPC to a collector in
this process: the call's server span is the child of the client's span, and validation,
tokenization, queue wait and inference hang under it."""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from rerank.gateway.envoy import start as start_envoy
from rerank.service.settings import Settings
from tests.support import API_KEY
from tests.support.otlp import OtlpCollector
from tests.support.processes import free_port
from tests.support.prometheus import key_name
from tests.support.servers import start_service

MODEL = "bert-tiny"
WORK = {"rerank.validate", "rerank.tokenize", "rerank.queue", "rerank.inference"}


@pytest.fixture(scope="module")
def traced(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, OtlpCollector]]:
    """The service exporting to an in-process collector (every 100 ms), Envoy in front."""
    folder = tmp_path_factory.mktemp("traced-models")
    shutil.copytree(models_dir / MODEL, folder / MODEL)
    collector = OtlpCollector().start()
    env = {"RERANK_OTLP_ENDPOINT": collector.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"}
    service, port, _ = start_service(folder, env=env)
    settings = Settings(rest_port=free_port(), grpc_port=port, admin_port=free_port(), rest_host="127.0.0.1")
    envoy = start_envoy(settings, tmp_path_factory.mktemp("traced-envoy"))
    try:
        yield f"127.0.0.1:{settings.rest_port}", collector
    finally:
        envoy.stop()
        service.stop(grace=20)
        collector.stop()


def new_traceparent() -> tuple[bytes, bytes, str]:
    trace_id, span_id = secrets.token_bytes(16), secrets.token_bytes(8)
    return trace_id, span_id, f"00-{trace_id.hex()}-{span_id.hex()}-01"


def check_trace(collector: OtlpCollector, trace_id: bytes, client_span: bytes, method: str) -> None:
    def complete(spans: list) -> bool:
        # The server span ends last and may come in a later export than its children.
        return {s.name for s in spans if s.trace_id == trace_id} >= WORK | {method}

    spans = [s for s in collector.wait_for(complete) if s.trace_id == trace_id]
    (server,) = [s for s in spans if s.name == method]
    assert server.parent_span_id == client_span  # the client's span, through Envoy
    attributes = {a.key: a.value.string_value or a.value.int_value for a in server.attributes}
    assert attributes["rerank.model"] == MODEL and attributes["rerank.key"] == key_name(API_KEY)
    assert API_KEY not in str(server.attributes)
    children = {s.name: s for s in spans if s.parent_span_id == server.span_id}
    assert set(children) == WORK, sorted(children)
    assert children["rerank.queue"].end_time_unix_nano <= children["rerank.inference"].start_time_unix_nano


def test_a_rest_clients_traceparent_reaches_the_service_through_envoy(traced: tuple[str, OtlpCollector]) -> None:
    address, collector = traced
    trace_id, span_id, traceparent = new_traceparent()
    response = httpx.post(
        f"http://{address}/v1/rerank",
        json={"model": MODEL, "query": "what do pandas eat?", "documents": ["bamboo", "fish"]},
        headers={"authorization": f"Bearer {API_KEY}", "traceparent": traceparent},
        timeout=30,
    )
    assert response.status_code == 200, response.text[:300]
    check_trace(collector, trace_id, span_id, "rerank.v1.RerankService/Rerank")


def test_a_grpc_clients_traceparent_too(traced: tuple[str, OtlpCollector]) -> None:
    from rerank.service.protocol import rerank_pb2, rerank_pb2_grpc

    address, collector = traced
    trace_id, span_id, traceparent = new_traceparent()
    request = rerank_pb2.RerankRequest(model=MODEL, query="what do pandas eat?")
    request.documents.add().string_value = "bamboo"
    with grpc.insecure_channel(address) as channel:
        rerank_pb2_grpc.RerankServiceStub(channel).Rerank(
            request, metadata=[("authorization", f"Bearer {API_KEY}"), ("traceparent", traceparent)], timeout=30
        )
    check_trace(collector, trace_id, span_id, "rerank.v1.RerankService/Rerank")
