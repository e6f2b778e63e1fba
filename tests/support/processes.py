"""Free loopback ports, and what Linux says about a process (its children, its environment)."""

from __future__ import annotations

from pathlib import Path

from rerank.gateway.ports import free_ports

__all__ = ["children_of", "environ_of", "free_port", "free_ports"]


def free_port() -> int:
    """A loopback port for a server a test starts (:func:`rerank.gateway.ports.free_ports`)."""
    return free_ports(1)


def children_of(pid: int) -> list[int]:
    """Direct child processes of ``pid`` (Linux)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)
