from __future__ import annotations

import random
import socket
from pathlib import Path

import pytest

from rerank.gateway.ports import EPHEMERAL_UNKNOWN, LOWEST, ephemeral_range, free_ports


class Picks(random.Random):
    """Hands out the first ports it is given, in order, then whatever a seeded generator picks."""

    def __init__(self, *first: int) -> None:
        super().__init__(7)
        self.first = list(first)

    def randrange(self, start: int, stop: int | None = None, step: int = 1) -> int:  # type: ignore[override]
        return self.first.pop(0) if self.first else super().randrange(start, stop, step)


def range_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ip_local_port_range"
    path.write_text(text)
    return path


def test_ports_are_outside_the_kernels_range_for_outgoing_connections() -> None:
    low, high = ephemeral_range()
    for _ in range(50):
        first = free_ports(3)
        assert all(not low <= port <= high for port in range(first, first + 3)), (first, low, high)
        assert first >= LOWEST


def unbound_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_port_is_never_handed_out_twice() -> None:
    port, other = unbound_port(), unbound_port()
    while other in (port, port + 1):
        other = unbound_port()
    first = free_ports(2, rng=Picks(port))
    again = free_ports(1, rng=Picks(port + 1, port, other))  # the first two: already handed out
    assert (first, again) == (port, other)


def test_a_taken_port_is_skipped(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        taken = busy.getsockname()[1]
        busy.listen()
        # The range file puts the taken port below the ephemeral range, where picks are made.
        ephemeral = range_file(tmp_path, f"{taken + 10}\t{taken + 20}\n")
        assert free_ports(1, ephemeral=ephemeral, rng=Picks(taken, taken + 1)) == taken + 1


def test_a_run_with_one_taken_port_is_skipped(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        taken = busy.getsockname()[1]
        ephemeral = range_file(tmp_path, f"{taken + 10} {taken + 20}")
        assert free_ports(3, ephemeral=ephemeral, rng=Picks(taken - 2, taken + 1)) == taken + 1


def test_without_room_outside_the_range_the_kernel_picks(tmp_path: Path) -> None:
    port = free_ports(1, ephemeral=range_file(tmp_path, "1024 65535"))
    assert 1024 <= port <= 65535


@pytest.mark.parametrize("text", ["", "32768", "a b"])
def test_an_unreadable_range_is_assumed(tmp_path: Path, text: str) -> None:
    assert ephemeral_range(range_file(tmp_path, text)) == EPHEMERAL_UNKNOWN
    assert ephemeral_range(tmp_path / "missing") == EPHEMERAL_UNKNOWN


def test_no_free_ports_is_an_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        taken = busy.getsockname()[1]
        ephemeral = range_file(tmp_path, f"{taken + 1} 65535")
        with pytest.raises(OSError, match="no 1 consecutive free ports"):
            free_ports(1, ephemeral=ephemeral, rng=Picks(*[taken] * 200))
