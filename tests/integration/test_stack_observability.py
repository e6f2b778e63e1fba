"""rerank-stack, observed: GET /metrics through Envoy adds up across two replicas (any replica
serves the sum), Envoy's own stats stay on its admin port, Envoy writes one JSON access-log line
per request with the key's name and the gRPC status, the service's lines carry the same request
id, and no key and no document text reaches any log at debug level, in either format."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from tests.support import OTHER_KEY
from tests.support.prometheus import Samples
from tests.support.stack import StackProcess

MODEL = "bert-tiny"
RERANK = "/rerank.v1.RerankService/Rerank"
SECRET_KEY = "sk-live-DISTINCTIVE-9f8e7d6c5b4a3"
"""The key every request here sends; it must appear in no log."""
WRONG_KEY = "sk-wrong-UNREGISTERED-0a1b2c3d4e"
DOCUMENT = "zebra-quartz DOCUMENT TEXT 5521 about bamboo"
QUERY = "QUERY TEXT zephyr 8812: what do pandas eat?"
KEY_NAME = "team-secret"


def keys_file(folder: Path) -> Path:
    path = folder / "keys.sha256"
    lines = [
        f"{hashlib.sha256(k.encode()).hexdigest()} name={n}" for k, n in ((SECRET_KEY, KEY_NAME), (OTHER_KEY, "other"))
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def start(models: Path, state: Path, fmt: str, replicas: int) -> StackProcess:
    env = {"RERANK_API_KEYS": "", "RERANK_API_KEYS_FILE": str(keys_file(state.parent))}
    return StackProcess.start(models, state, "--log-level", "debug", "--log-format", fmt, replicas=replicas, env=env)


@pytest.fixture(scope="module")
def one_model(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    import shutil

    folder = tmp_path_factory.mktemp("observed-models")
    shutil.copytree(models_dir / MODEL, folder / MODEL)
    return folder


@pytest.fixture(scope="module")
def json_stack(one_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackProcess]:
    stack = start(one_model, tmp_path_factory.mktemp("json-stack") / "state", "json", replicas=2)
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def text_stack(one_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackProcess]:
    stack = start(one_model, tmp_path_factory.mktemp("text-stack") / "state", "text", replicas=1)
    try:
        yield stack
    finally:
        stack.stop()


def rerank(stack: StackProcess, request_id: str, key: str = SECRET_KEY, **fields: Any) -> httpx.Response:
    body = {"model": MODEL, "query": QUERY, "documents": [DOCUMENT, "bamboo shoots"], **fields}
    headers = {"authorization": f"Bearer {key}", "x-request-id": request_id}
    return httpx.post(f"{stack.base_url}/v1/rerank", json=body, headers=headers, timeout=30)


def access_log(stack: StackProcess, request_id: str, timeout: float = 15) -> dict[str, Any]:
    """Envoy's access-log entry for ``request_id`` (Envoy flushes its log about every second)."""
    deadline = time.monotonic() + timeout
    while True:
        for line in stack.lines("envoy"):
            if line.startswith("{") and json.loads(line).get("request_id") == request_id:
                return dict(json.loads(line))
        assert time.monotonic() < deadline, f"no access-log line for {request_id}"
        time.sleep(0.2)


def scrape(url: str) -> Samples:
    response = httpx.get(url, headers={"authorization": f"Bearer {SECRET_KEY}"}, timeout=30)
    assert response.status_code == 200, response.text[:300]
    return Samples.parse(response.text)


def rerank_direct(stack: StackProcess, replica: int) -> None:
    """One Rerank call straight to replica ``replica`` (0-based), not through Envoy."""
    from rerank.service.protocol import rerank_pb2, rerank_pb2_grpc

    request = rerank_pb2.RerankRequest(model=MODEL, query="what do pandas eat?")
    request.documents.add().string_value = "bamboo"
    with grpc.insecure_channel(f"127.0.0.1:{stack.grpc_port + replica}") as channel:
        rerank_pb2_grpc.RerankServiceStub(channel).Rerank(
            request, metadata=[("authorization", f"Bearer {SECRET_KEY}")], timeout=30
        )


def test_metrics_through_envoy_add_up_across_replicas(json_stack: StackProcess) -> None:
    stack = json_stack
    ok = {"method": RERANK, "model": MODEL, "key": KEY_NAME, "code": "OK"}
    before = scrape(f"{stack.base_url}/metrics").get_value("rerank_requests_total", **ok)
    # Each replica gets its own share for sure (straight to its port), and Envoy some more.
    for replica, calls in ((0, 3), (1, 5)):
        for _ in range(calls):
            rerank_direct(stack, replica)
    for i in range(4):
        assert rerank(stack, f"sum-{i}").status_code == 200
    sent = 3 + 5 + 4
    # Any replica answers with the whole stack's count: through Envoy, and on each metrics port.
    assert scrape(f"{stack.base_url}/metrics").get_value("rerank_requests_total", **ok) - before == sent
    for i in range(2):
        direct = scrape(f"http://127.0.0.1:{stack.metrics_port + i}/metrics")
        assert direct.get_value("rerank_requests_total", **ok) - before == sent, f"replica {i + 1}"


def test_envoys_own_stats_stay_on_its_admin_port(json_stack: StackProcess) -> None:
    text = httpx.get(f"http://127.0.0.1:{json_stack.admin_port}/stats/prometheus", timeout=30).text
    assert "envoy_cluster_upstream_rq_total" in text and 'envoy_cluster_name="rerank_grpc"' in text


def test_one_access_log_line_per_request_with_the_services_request_id(json_stack: StackProcess) -> None:
    stack = json_stack
    request_id = f"access-{uuid.uuid4().hex}"
    response = rerank(stack, request_id)
    assert response.status_code == 200 and "x-rerank-key" not in response.headers
    entry = access_log(stack, request_id)
    assert {k: entry[k] for k in ("method", "path", "status", "grpc_status", "key", "protocol")} == {
        "method": "POST",
        "path": "/v1/rerank",
        "status": 200,
        "grpc_status": "0",
        "key": KEY_NAME,
        "protocol": "HTTP/1.1",
    }
    assert entry["upstream_host"] in {f"127.0.0.1:{stack.grpc_port + i}" for i in range(2)}
    assert entry["bytes_sent"] == len(response.content) and entry["bytes_received"] > len(DOCUMENT)
    assert isinstance(entry["duration_ms"], int) and entry["time"].endswith("Z")
    # The replica that served it logged the call under the same id, with the key's name.
    replica = int(entry["upstream_host"].rsplit(":", 1)[1]) - stack.grpc_port
    lines = [json.loads(line) for line in stack.lines(f"replica {replica + 1}") if line.startswith("{")]
    mine = [line for line in lines if line.get("request_id") == request_id]
    assert mine and all(line["key"] == KEY_NAME and line["model"] == MODEL for line in mine), mine
    assert any("OK" in line["message"] and line["logger"] == "rerank.service.router.guard" for line in mine)


def test_errors_and_grpc_calls_are_logged_with_their_grpc_status(json_stack: StackProcess) -> None:
    stack = json_stack
    bad, wrong = f"bad-{uuid.uuid4().hex}", f"wrong-{uuid.uuid4().hex}"
    assert rerank(stack, bad, documents=[DOCUMENT, 5]).status_code == 400
    assert rerank(stack, wrong, key=WRONG_KEY).status_code == 401
    assert (access_log(stack, bad)["grpc_status"], access_log(stack, bad)["key"]) == ("3", KEY_NAME)
    assert (access_log(stack, wrong)["grpc_status"], access_log(stack, wrong)["key"]) == ("16", None)

    from rerank.service.protocol import rerank_pb2, rerank_pb2_grpc

    native = f"grpc-{uuid.uuid4().hex}"
    with grpc.insecure_channel(f"127.0.0.1:{stack.rest_port}") as channel:
        request = rerank_pb2.RerankRequest(model=MODEL, query=QUERY)
        request.documents.add().string_value = DOCUMENT
        metadata = [("authorization", f"Bearer {SECRET_KEY}"), ("x-request-id", native)]
        _, call = rerank_pb2_grpc.RerankServiceStub(channel).Rerank.with_call(request, metadata=metadata, timeout=30)
    assert "x-rerank-key" not in dict(call.initial_metadata())
    entry = access_log(stack, native)
    assert (entry["path"], entry["protocol"], entry["grpc_status"], entry["key"]) == (
        RERANK,
        "HTTP/2",
        "0",
        KEY_NAME,
    )


@pytest.mark.parametrize("stack_fixture", ["json_stack", "text_stack"])
def test_no_key_and_no_document_text_in_any_log(stack_fixture: str, request: pytest.FixtureRequest) -> None:
    stack: StackProcess = request.getfixturevalue(stack_fixture)
    ids = [f"secret-{i}-{uuid.uuid4().hex}" for i in range(5)]
    assert rerank(stack, ids[0]).status_code == 200  # echoes the document back
    assert rerank(stack, ids[1], documents=[DOCUMENT, 5]).status_code == 400
    assert rerank(stack, ids[2], model=f"no-such-model {DOCUMENT}").status_code == 404
    assert rerank(stack, ids[3], key=WRONG_KEY).status_code == 401
    metrics = httpx.get(
        f"{stack.base_url}/metrics",
        headers={"authorization": f"Bearer {SECRET_KEY}", "x-request-id": ids[4]},
        timeout=30,
    )
    assert metrics.status_code == 200
    for request_id in ids:
        access_log(stack, request_id)  # everything is written before we look
    output = stack.output()
    for secret in (SECRET_KEY, WRONG_KEY, DOCUMENT, QUERY, "zebra-quartz", "zephyr"):
        assert secret not in output, f"{secret!r} is in the logs"
    # Not vacuous: the logs are there, at debug, naming calls by request id and key name (the
    # call with a wrong key never reached a replica: the edge answered it).
    replica_lines = "\n".join(stack.lines("replica 1") + stack.lines("replica 2"))
    assert "DEBUG" in replica_lines and KEY_NAME in replica_lines
    assert all(request_id in replica_lines for request_id in ids[:3])
    assert ids[3] not in replica_lines and access_log(stack, ids[3])["status"] == 401
