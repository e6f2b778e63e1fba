"""Free ports for a process that binds them later (a replica's metrics port, a test's server).

A port found by binding port 0 is one the kernel hands out for outgoing connections too (its
ephemeral range, ``ip_local_port_range``): between the check and the child's own bind, any
connection this host opens may take it as its local port, and a replica restarted hours later
can find its metrics port held by a client's socket. Ports outside that range are taken only by
something that binds them on purpose, so :func:`free_ports` picks them there, at random, and
never hands the same one out twice in a process (two picks made before either is bound would
otherwise be free to coincide).
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
EPHEMERAL_UNKNOWN = (32768, 65535)
"""Assumed where the kernel does not say (Linux's default start, the IANA range's end)."""
LOWEST = 10000
"""Ports below this are left alone: the usual homes of databases and other services."""
TRIES = 200

_handed: set[int] = set()


def ephemeral_range(path: Path = EPHEMERAL_RANGE) -> tuple[int, int]:
    """The kernel's range for outgoing connections' local ports, inclusive."""
    try:
        low, high = (int(word) for word in path.read_text().split())
    except (OSError, ValueError):
        return EPHEMERAL_UNKNOWN
    return low, high


def _bindable(family: socket.AddressFamily, host: str, ports: range) -> bool:
    sockets: list[socket.socket] = []
    try:
        for port in ports:
            sockets.append(socket.socket(family))
            sockets[-1].bind((host, port))
    except OSError:
        return False
    finally:
        for s in sockets:
            s.close()
    return True


def free_ports(
    count: int, host: str = "127.0.0.1", *, ephemeral: Path = EPHEMERAL_RANGE, rng: random.Random | None = None
) -> int:
    """The first of ``count`` consecutive ports that are free on ``host`` now, outside the
    ephemeral range where it leaves room (else where the kernel's port 0 lands), and not handed
    out before by this process. Raises OSError when :data:`TRIES` picks find none."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    low, high = ephemeral_range(ephemeral)
    # The first ports that keep all ``count`` below the ephemeral range, or above it (end excluded).
    windows = [(a, b) for a, b in ((LOWEST, low - count + 1), (high + 1, 65537 - count)) if b > a]
    pick = rng or random.Random()
    for _ in range(TRIES):
        if windows:
            weights = [b - a for a, b in windows]
            a, b = pick.choices(windows, weights)[0]
            first = pick.randrange(a, b)
        else:
            with socket.socket(family) as probe:
                probe.bind((host, 0))
                first = int(probe.getsockname()[1])
        ports = range(first, first + count)
        if ports.stop > 65536 or _handed.intersection(ports) or not _bindable(family, host, ports):
            continue
        _handed.update(ports)
        return first
    raise OSError(f"no {count} consecutive free ports on {host}")
