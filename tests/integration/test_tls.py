"""TLS: Envoy's listener (REST and gRPC), mutual TLS, the service's own port, and Envoy speaking
TLS to the services — with a CA and certificates made at test time."""

from __future__ import annotations

import shutil
import ssl
import sys

import grpc
import httpx
import pytest

from rerank.gateway.envoy import start as start_envoy
from rerank.gateway.processes import Child
from rerank.service.settings import Settings
from tests.support import API_KEY, AUTH
from tests.support.certificates import Certificates, make_certificates
from tests.support.processes import free_port, free_ports
from tests.support.servers import start_service

BODY = {"query": "what do pandas eat?", "documents": ["bamboo", "fish"]}


@pytest.fixture(scope="module")
def certificates(tmp_path_factory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certificates"))


@pytest.fixture(scope="module")
def one_model(models_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tls-models")
    shutil.copytree(models_dir / "bert-tiny", folder / "bert-tiny")
    return folder


@pytest.fixture(scope="module")
def service(one_model):
    proc, port, _ = start_service(one_model)
    yield port
    proc.stop(grace=30)


def _envoy(tmp_path, grpc_port: int, **tls) -> tuple[object, int]:
    rest_port = free_port()
    settings = Settings(rest_port=rest_port, grpc_port=grpc_port, admin_port=free_port(), rest_host="127.0.0.1", **tls)
    return start_envoy(settings, tmp_path), rest_port


def _trusting(certificates: Certificates) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(certificates.ca))


def _rerank_over_grpc(channel: grpc.Channel):
    from rerank.service.protocol import rerank_pb2, rerank_pb2_grpc

    request = rerank_pb2.RerankRequest(query=BODY["query"])
    for text in BODY["documents"]:
        request.documents.add().string_value = text
    return rerank_pb2_grpc.RerankServiceStub(channel).Rerank(request, metadata=AUTH, timeout=30)


def test_envoy_serves_rest_and_grpc_over_tls_and_refuses_plain_http(service, certificates, tmp_path):
    envoy, port = _envoy(tmp_path, service, tls_cert=certificates.server_cert, tls_key=certificates.server_key)
    try:
        response = httpx.post(
            f"https://localhost:{port}/v1/rerank",
            json=BODY,
            verify=_trusting(certificates),
            headers={"authorization": f"Bearer {API_KEY}"},
            timeout=30,
        )
        assert response.status_code == 200 and len(response.json()["results"]) == 2
        credentials = grpc.ssl_channel_credentials(root_certificates=certificates.ca.read_bytes())
        with grpc.secure_channel(f"localhost:{port}", credentials) as channel:
            assert len(_rerank_over_grpc(channel).results) == 2
        with pytest.raises(httpx.HTTPError):  # plain HTTP gets no HTTP answer from a TLS listener
            httpx.post(f"http://localhost:{port}/v1/rerank", json=BODY, timeout=10)
    finally:
        envoy.stop()


def test_mutual_tls_requires_a_client_certificate(service, certificates, tmp_path):
    envoy, port = _envoy(
        tmp_path,
        service,
        tls_cert=certificates.server_cert,
        tls_key=certificates.server_key,
        tls_client_ca=certificates.ca,
    )
    url = f"https://localhost:{port}/v1/rerank"
    headers = {"authorization": f"Bearer {API_KEY}"}
    try:
        with pytest.raises(httpx.HTTPError):
            httpx.post(url, json=BODY, verify=_trusting(certificates), headers=headers, timeout=10)
        context = ssl.create_default_context(cafile=str(certificates.ca))
        context.load_cert_chain(certificates.client_cert, certificates.client_key)
        assert httpx.post(url, json=BODY, verify=context, headers=headers, timeout=30).status_code == 200
        credentials = grpc.ssl_channel_credentials(
            root_certificates=certificates.ca.read_bytes(),
            private_key=certificates.client_key.read_bytes(),
            certificate_chain=certificates.client_cert.read_bytes(),
        )
        with grpc.secure_channel(f"localhost:{port}", credentials) as channel:
            assert len(_rerank_over_grpc(channel).results) == 2
    finally:
        envoy.stop()


def test_the_services_own_port_over_tls(one_model, certificates):
    env = {"RERANK_GRPC_TLS_CERT": str(certificates.server_cert), "RERANK_GRPC_TLS_KEY": str(certificates.server_key)}
    proc, port, _ = start_service(one_model, env=env, tls_ca=certificates.ca)
    try:
        credentials = grpc.ssl_channel_credentials(root_certificates=certificates.ca.read_bytes())
        with grpc.secure_channel(f"localhost:{port}", credentials) as channel:
            assert len(_rerank_over_grpc(channel).results) == 2
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel, pytest.raises(grpc.RpcError):
            _rerank_over_grpc(channel)
    finally:
        proc.stop(grace=30)


def test_the_stack_speaks_tls_to_its_replicas(one_model, certificates, tmp_path):
    grpc_port, rest_port = free_ports(2), free_port()
    argv = [
        sys.executable,
        "-m",
        "gateway",
        "--models-dir",
        str(one_model),
        "--replicas",
        "2",
        "--grpc-port",
        str(grpc_port),
        "--rest-port",
        str(rest_port),
        "--rest-host",
        "127.0.0.1",
        "--admin-port",
        str(free_port()),
        "--state-dir",
        str(tmp_path / "state"),
        "--drain-delay",
        "0",
    ]
    env = {
        "RERANK_API_KEYS": API_KEY,
        "RERANK_GRPC_TLS_CERT": str(certificates.server_cert),
        "RERANK_GRPC_TLS_KEY": str(certificates.server_key),
        "RERANK_UPSTREAM_TLS_CA": str(certificates.ca),
    }
    log = tmp_path / "stack.log"
    stack = Child("stack", argv, env=env, log_path=log).start()
    try:
        stack.wait_until(lambda: "Ready:" in log.read_text(errors="replace"), timeout=120)
        response = httpx.post(
            f"http://127.0.0.1:{rest_port}/v1/rerank",
            json=BODY,
            headers={"authorization": f"Bearer {API_KEY}"},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel, pytest.raises(grpc.RpcError):
            _rerank_over_grpc(channel)  # the replicas themselves speak only TLS
    finally:
        stack.stop(grace=30)


def test_the_stack_refuses_replica_tls_envoy_cannot_verify(one_model, certificates, tmp_path):
    argv = [
        sys.executable,
        "-m",
        "gateway",
        "--models-dir",
        str(one_model),
        "--grpc-port",
        str(free_port()),
        "--rest-port",
        str(free_port()),
        "--admin-port",
        str(free_port()),
        "--state-dir",
        str(tmp_path),
    ]
    env = {
        "RERANK_API_KEYS": API_KEY,
        "RERANK_GRPC_TLS_CERT": str(certificates.server_cert),
        "RERANK_GRPC_TLS_KEY": str(certificates.server_key),
    }
    log = tmp_path / "stack.log"
    stack = Child("stack", argv, env=env, log_path=log).start()
    assert stack.wait(60) == 1
    assert "RERANK_UPSTREAM_TLS_CA" in log.read_text()
