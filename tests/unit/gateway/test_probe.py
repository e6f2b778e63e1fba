"""``python -m rerank.gateway.probe`` (the image's HEALTHCHECK) against a real in-process gRPC health
server. The Envoy half (admin ``/ready``) runs against real Envoy in the container tests."""

from __future__ import annotations

import socket
from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from rerank.gateway.probe import main, probe
from tests.support.processes import free_port


@pytest.fixture
def health_server():
    """A gRPC server with the standard health service on a free loopback port."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield port, servicer
    finally:
        server.stop(0)


def test_nothing_running_is_unhealthy():
    healthy, why = probe(free_port(), free_port())
    assert not healthy and "nothing listens" in why


def test_a_serving_service_is_healthy_and_a_draining_one_is_not(health_server):
    port, servicer = health_server
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    assert probe(port, free_port()) == (True, f"gRPC service on {port} SERVING")
    servicer.enter_graceful_shutdown()  # what the service does on SIGTERM
    healthy, why = probe(port, free_port())
    assert not healthy and f"port {port} is not SERVING" in why


def test_something_on_the_admin_port_that_is_not_envoy_is_unhealthy(health_server):
    port, servicer = health_server
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        admin = other.getsockname()[1]
        healthy, why = probe(port, admin)
    assert not healthy and f"admin port {admin}" in why


def test_main_reads_the_ports_from_the_environment(health_server, monkeypatch, capsys):
    port, servicer = health_server
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    monkeypatch.setenv("RERANK_GRPC_PORT", str(port))
    monkeypatch.setenv("RERANK_ENVOY_ADMIN_PORT", str(free_port()))
    assert main([]) == 0
    assert capsys.readouterr().out.startswith("healthy:")
    monkeypatch.setenv("RERANK_GRPC_PORT", str(free_port()))
    assert main([]) == 1
    assert capsys.readouterr().out.startswith("unhealthy: nothing listens")
