"""Docker: containers and networks a test creates, all removed afterwards."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field


def docker(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``docker ARGS``: its result (raises with the output when ``check`` and it fails)."""
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    return result


@dataclass
class Containers:
    """Containers and networks a test creates, named with one prefix, all removed by
    :meth:`remove` (call it in a ``finally`` or a fixture's teardown, so failures clean up too)."""

    prefix: str
    names: list[str] = field(default_factory=list)
    networks: list[str] = field(default_factory=list)

    def network(self, name: str) -> str:
        full = f"{self.prefix}-{name}"
        docker("network", "create", full)
        self.networks.append(full)
        return full

    def run(self, name: str, image: str, *command: str, options: Sequence[str] = ()) -> str:
        """``docker run -d`` as ``PREFIX-name``; returns the full name."""
        full = f"{self.prefix}-{name}"
        self.names.append(full)
        docker("run", "-d", "--name", full, *options, image, *command)
        return full

    def published(self, name: str, port: int) -> int:
        """The host port that ``port`` of ``name`` is published on (``-p 127.0.0.1::PORT``)."""
        text = docker("port", name, str(port)).stdout.splitlines()[0]
        return int(text.rsplit(":", 1)[1])

    def health(self, name: str) -> str:
        return docker("inspect", "-f", "{{.State.Health.Status}}", name).stdout.strip()

    def wait_healthy(self, name: str, timeout: float = 120) -> None:
        """Waits until the image's HEALTHCHECK passes in ``name``; raises with its logs if it
        exits or stays unhealthy."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.health(name) == "healthy":
                return
            if docker("inspect", "-f", "{{.State.Running}}", name).stdout.strip() != "true":
                break
            time.sleep(0.5)
        raise AssertionError(f"{name} is not healthy ({self.health(name)}):\n{self.logs(name)}")

    def logs(self, name: str, tail: int = 60) -> str:
        result = docker("logs", "--tail", str(tail), name, check=False)
        return result.stdout + result.stderr

    def remove(self) -> None:
        for name in reversed(self.names):
            docker("rm", "-f", name, check=False)
        for network in self.networks:
            docker("network", "rm", network, check=False)
