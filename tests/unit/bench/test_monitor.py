"""What a repetition charges a peer: the memory and CPU of its server's whole process tree (vLLM
scores in an engine process its API server starts), and nothing of the bench's own children."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil
import pytest

pytest.importorskip("onnx", reason="needs the [convert] extra")

from bench.measure import Monitor, process_tree

# A server that does its work in a child: the child holds ~200 MB (touched) and spins a core.
CHILD = "x = bytearray(200 << 20)\nx[::4096] = b'1' * len(x[::4096])\nprint('ready', flush=True)\nwhile True: pass"
SERVER = f"""
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", {CHILD!r}], stdout=subprocess.PIPE)
child.stdout.readline()
print("ready", flush=True)
time.sleep(60)
"""


@pytest.fixture
def server():  # type: ignore[no-untyped-def]
    process = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE)
    assert process.stdout is not None and process.stdout.readline().strip() == b"ready"
    yield process
    for child in psutil.Process(process.pid).children(recursive=True):
        child.kill()
    process.kill()
    process.wait()
    process.stdout.close()


def test_a_servers_children_are_its_memory_and_cpu(server) -> None:  # type: ignore[no-untyped-def]
    with Monitor([server.pid]) as monitor:
        time.sleep(0.5)
    assert monitor.peak > 190 << 20  # the child's 200 MB, not the parent's ~10 MB
    # Its CPU is the peer's too, not "other" load: the CPU clock reads the same tree.
    (child,) = psutil.Process(server.pid).children()
    assert {p.pid for p in process_tree([server.pid])} == {server.pid, child.pid}


def test_the_bench_process_is_charged_without_its_children(server) -> None:  # type: ignore[no-untyped-def]
    """An in-process peer is this process: the servers the bench started are not its memory."""
    import os

    with Monitor([os.getpid()]) as monitor:
        time.sleep(0.2)
    assert monitor.peak < psutil.Process().memory_info().rss + (100 << 20)
