"""The server's assembly, in process on stand-in models: what it refuses to start with, serving
without keys when told to, and a stop that answers the call in flight."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from rerank.service.backends.base import Batch
from rerank.service.errors import ConfigurationError
from tests.support import API_KEY, AUTH
from tests.support.calls import rerank_request
from tests.support.edge import check, ok_headers
from tests.support.servers import InProcessServer, server_settings
from tests.support.stand_in import StandInBackend, write_stand_in_model


def serve(models: Path, **settings: object) -> InProcessServer:
    return InProcessServer(server_settings(models, **settings), backend=StandInBackend.for_folder)


def test_no_keys_is_a_configuration_error(stand_in_models: Path) -> None:
    with pytest.raises(ConfigurationError, match="RERANK_API_KEYS"):
        serve(stand_in_models, api_keys=()).start()


def test_insecure_no_auth_serves_without_keys(stand_in_models: Path) -> None:
    from rerank.service.protocol import rerank_pb2_grpc

    with (
        serve(stand_in_models, api_keys=(), insecure_no_auth=True) as server,
        grpc.insecure_channel(server.target) as channel,
    ):
        reply = rerank_pb2_grpc.RerankServiceStub(channel).Rerank(rerank_request("alpha", ["a"], query="a"), timeout=10)
    assert len(reply.results) == 1


def test_the_log_says_why_the_cpu_serves_without_openvino(
    stand_in_models: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from rerank.service.backends import loader

    monkeypatch.setattr(loader, "runtime_available", lambda runtime: runtime == "onnxruntime")
    caplog.set_level("INFO", logger="rerank")
    with serve(stand_in_models, device="cpu"):
        pass
    said = [r.getMessage() for r in caplog.records if "OpenVINO" in r.getMessage()]
    assert said == [loader.runtime_note("cpu")]


def test_no_model_folder_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="no model folders"):
        serve(tmp_path).start()


def test_two_folders_with_one_name_are_a_configuration_error(tmp_path: Path) -> None:
    write_stand_in_model(tmp_path, "alpha")
    shutil.copytree(tmp_path / "alpha", tmp_path / "alpha-copy")
    with pytest.raises(ConfigurationError, match="two model folders are both named 'alpha'"):
        serve(tmp_path).start()


def test_a_stop_drains_and_answers_the_call_in_flight(stand_in_models: Path) -> None:
    """SIGTERM's path: NOT_SERVING while it still serves for the drain delay, then no new calls,
    and the call in flight (one pair inside the model, one queued) is answered, not dropped."""
    from rerank.service.protocol import rerank_pb2, rerank_pb2_grpc

    gate = threading.Event()
    gate.set()  # the warm-up at start passes

    class Held(StandInBackend):
        def run(self, batch: Batch) -> np.ndarray:
            assert gate.wait(20), "never released"
            return super().run(batch)

    # One pair per batch: while the first is inside the model, the second still waits in the queue.
    settings = server_settings(stand_in_models, drain_delay=1.0, grace_period=10.0, max_batch_pairs=1)
    server = InProcessServer(settings, backend=lambda folder, config: Held()).start()
    stopper = threading.Thread(target=server.stop, kwargs={"delay": None})
    try:
        gate.clear()
        with grpc.insecure_channel(server.target) as channel:
            stub = rerank_pb2_grpc.RerankServiceStub(channel)
            request = rerank_request("alpha", ["panda", "red car"], query="panda")
            in_flight = stub.Rerank.future(request, metadata=AUTH, timeout=30)
            wait_for(lambda: server.server.calls.in_flight == 1)
            stopper.start()
            health = health_pb2_grpc.HealthStub(channel)
            wait_for(lambda: health_status(health) == health_pb2.HealthCheckResponse.NOT_SERVING)
            assert stub.ListModels(rerank_pb2.ListModelsRequest(), metadata=AUTH, timeout=5).data  # still serving
            wait_for(lambda: health_status(health) is None)  # the delay is over: new calls are refused
            # It now waits for the call in flight (up to the grace period); a server that did not
            # would answer it UNAVAILABLE within microseconds, well inside this pause.
            time.sleep(0.3)
            gate.set()
            assert [(r.index, r.relevance_score) for r in in_flight.result().results] == [(0, 1.0), (1, 0.0)]
    finally:
        gate.set()
        if stopper.ident is None:  # the test failed before it began stopping
            stopper.start()
        stopper.join(30)
    assert not stopper.is_alive() and server.server.calls.in_flight == 0


def health_status(health: health_pb2_grpc.HealthStub) -> int | None:
    """The server's overall health, or None when it refuses the call."""
    try:
        return int(health.Check(health_pb2.HealthCheckRequest(service=""), timeout=2).status)
    except grpc.RpcError:
        return None


def wait_for(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_draining_replica_holds_no_place_for_a_body(stand_in_models: Path) -> None:
    """From the moment a stop begins (NOT_SERVING, still serving for the drain delay) the edge's
    check admits without a hold or a pin: a body pinned to a replica on its way out would meet a
    closed port or a queue about to be answered UNAVAILABLE, and that replica's queue says nothing
    about the replica Envoy sends the body to."""
    from rerank.service.admission.contract import HOLD_HEADER

    server = serve(stand_in_models, drain_delay=2.0).start()
    stopper = threading.Thread(target=server.stop, kwargs={"delay": None})
    body = {"authorization": f"Bearer {API_KEY}", "content-length": str(64 * 1024)}
    try:
        assert HOLD_HEADER in ok_headers(check(server.target, "/v1/rerank", body))  # serving: a place held
        stopper.start()
        with grpc.insecure_channel(server.target) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            wait_for(lambda: health_status(health) == health_pb2.HealthCheckResponse.NOT_SERVING)
        assert [ok_headers(check(server.target, "/v1/rerank", body)) for _ in range(5)] == [{}] * 5
    finally:
        if stopper.ident is None:
            stopper.start()
        stopper.join(30)
