"""``python -m rerank.gateway.probe``: is what this container runs healthy? (The image's HEALTHCHECK.)

One image has three roles (``rerank-stack``, ``rerank-serve``, ``rerank-gateway``), and one
HEALTHCHECK line must serve them all, so the probe checks every part that runs *here*, on
loopback, and needs at least one:

* the gRPC service on ``RERANK_GRPC_PORT`` (the service role, or the stack's first replica),
  when something listens there: its ``grpc.health.v1`` Check must answer SERVING (a draining
  service answers NOT_SERVING and is reported unhealthy);
* Envoy's admin API on ``RERANK_ENVOY_ADMIN_PORT`` (the gateway role, or the stack's Envoy),
  when something listens there: ``/ready`` must say LIVE, and at least one replica it routes to
  must pass Envoy's health checks.

Exit status 0 when healthy, 1 when not (with one line saying why), as Docker expects. Neither
check needs an API key. Kubernetes does not need this command: its probes speak
``grpc.health.v1`` themselves (``deploy/kubernetes``).
"""

from __future__ import annotations

import argparse
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from rerank.gateway.envoy import admin_healthy_upstreams, admin_live
from rerank.gateway.processes import grpc_serving
from rerank.service.settings import SettingsError, resolve

LOOPBACK = "127.0.0.1"


def listening(port: int, host: str = LOOPBACK, timeout: float = 1.0) -> bool:
    """Something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def probe(grpc_port: int, admin_port: int, tls_ca: Path | None = None) -> tuple[bool, str]:
    """(healthy, why) for the parts listening on loopback at these ports (the gRPC service over
    TLS, verified against ``tls_ca``, when given)."""
    checked: list[str] = []
    if listening(grpc_port):
        if not grpc_serving(grpc_port, tls_ca=tls_ca):
            return False, f"the gRPC service on port {grpc_port} is not SERVING"
        checked.append(f"gRPC service on {grpc_port} SERVING")
    if listening(admin_port):
        if not admin_live(admin_port):
            return False, f"Envoy (admin port {admin_port}) is not LIVE"
        # Envoy is up before the replicas it routes to: healthy means a request can be served.
        if admin_healthy_upstreams(admin_port) < 1:
            return False, f"Envoy (admin port {admin_port}) has no replica passing its health checks"
        checked.append(f"Envoy (admin port {admin_port}) LIVE")
    if not checked:
        return False, f"nothing listens on port {grpc_port} (gRPC) or {admin_port} (Envoy's admin)"
    return True, "; ".join(checked)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rerank.gateway.probe",
        description="Health of the rerank service and/or Envoy running here (exit 0: healthy).",
        epilog="Ports default to RERANK_GRPC_PORT and RERANK_ENVOY_ADMIN_PORT, as the servers read them.",
    )
    parser.add_argument("--grpc-port", type=int, default=None, help="the gRPC service's port")
    parser.add_argument("--admin-port", type=int, default=None, help="Envoy's admin port")
    args = parser.parse_args(argv)
    try:
        settings = resolve("stack", {})  # the ports from the environment, as the servers read them
    except SettingsError as exc:
        print(f"unhealthy: {exc}")
        return 1
    healthy, why = probe(
        args.grpc_port if args.grpc_port is not None else settings.grpc_port,
        args.admin_port if args.admin_port is not None else settings.admin_port,
        # A service serving TLS: its own CA (RERANK_UPSTREAM_TLS_CA), or its self-signed certificate.
        tls_ca=settings.upstream_tls_ca or settings.grpc_tls_cert,
    )
    print(f"{'healthy' if healthy else 'unhealthy'}: {why}")
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
