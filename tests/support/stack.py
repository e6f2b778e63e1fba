"""``rerank-stack`` as a process, on free loopback ports, its whole output kept."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from rerank.gateway.processes import Child
from tests.support import API_KEY, REPO
from tests.support.processes import free_port, free_ports


@dataclass
class StackProcess:
    """``rerank-stack`` (``python -m rerank.gateway``) on free loopback ports, its whole output (the
    stack's, each replica's and Envoy's, access log included) in ``log``."""

    child: Child
    log: Path
    rest_port: int
    grpc_port: int
    metrics_port: int
    admin_port: int

    @classmethod
    def start(
        cls, models: Path, state: Path, *extra: str, replicas: int = 1, env: dict[str, str] | None = None
    ) -> StackProcess:
        grpc_port, metrics_port = free_ports(replicas), free_ports(replicas)
        rest_port, admin_port = free_port(), free_port()
        state.mkdir(parents=True, exist_ok=True)
        log = state / "stack.log"
        argv = [sys.executable, "-m", "rerank.gateway", "--models-dir", str(models), "--replicas", str(replicas)]
        argv += ["--grpc-port", str(grpc_port), "--metrics-port", str(metrics_port), "--rest-port", str(rest_port)]
        argv += ["--rest-host", "127.0.0.1", "--admin-port", str(admin_port), "--state-dir", str(state)]
        argv += ["--drain-delay", "0", *extra]
        child = Child("stack", argv, env={"RERANK_API_KEYS": API_KEY, **(env or {})}, cwd=REPO, log_path=log)
        child.start().wait_until(lambda: "Ready:" in log.read_text(errors="replace"), timeout=180)
        return cls(child, log, rest_port, grpc_port, metrics_port, admin_port)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def lines(self, prefix: str) -> list[str]:
        """The output lines of one child, without the prefix the stack gives them (``envoy``,
        ``replica 1``, ...)."""
        marker = f"{prefix} | "
        return [line.split(marker, 1)[1] for line in self.output().splitlines() if marker in line]

    def stop(self) -> None:
        self.child.stop(grace=30)
