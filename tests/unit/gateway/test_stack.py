"""rerank-stack's settings for each replica."""

from __future__ import annotations

from rerank.gateway.stack import replica_env
from rerank.service.settings import Settings


def test_each_replica_answers_the_check_on_its_own_port_and_asks_its_peers_there():
    env = replica_env(Settings(grpc_port=7000, check_port=7100, metrics_port=7200, replicas=3), 1, "s3cret")
    assert env["RERANK_GRPC_PORT"] == "7001" and env["RERANK_CHECK_PORT"] == "7101"
    assert env["RERANK_REPLICA_ADDRESS"] == "127.0.0.1:7001"  # where Envoy routes the calls it pins here
    assert env["RERANK_PEERS"] == "127.0.0.1:7100,127.0.0.1:7102"  # where a peer's check answers
