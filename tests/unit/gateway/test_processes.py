"""Children started by the supervisor: gone with the thread that started them, started by exec
alone (no Python code between fork and exec, which is unsafe beside other threads)."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import pytest

from rerank.gateway import processes
from rerank.gateway.processes import Child

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_child_is_killed_when_the_thread_that_started_it_ends(tmp_path: Path) -> None:
    started: list[Child] = []

    def start() -> None:
        started.append(Child("sleeper", ["sleep", "60"]).start())
        # setpriv sets the signal just after Popen returns: a thread (or process) gone within
        # that instant would leave the child running. A server's parent lives longer.
        time.sleep(0.5)

    thread = threading.Thread(target=start)
    thread.start()
    thread.join()
    child = started[0]
    try:
        deadline = time.monotonic() + 10
        while _alive(child.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(child.pid), "the child outlived the thread that started it"
    finally:
        child.send(9)
        assert child.wait(5) == -9


def test_the_child_is_the_program_itself_and_no_python_runs_before_its_exec(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    popen_kwargs: list[dict] = []
    real = processes.subprocess.Popen

    def recording(*args, **kwargs):  # type: ignore[no-untyped-def]
        popen_kwargs.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(processes.subprocess, "Popen", recording)
    child = Child("sleeper", ["sleep", "30"]).start()
    try:
        assert popen_kwargs[0].get("preexec_fn") is None
        deadline = time.monotonic() + 5
        while Path(f"/proc/{child.pid}/cmdline").read_bytes().split(b"\0")[0] != b"sleep":
            assert time.monotonic() < deadline, "the child never became the program (setpriv did not exec it)"
            time.sleep(0.02)
    finally:
        child.send(9)
        child.wait(5)
    assert os.path.basename(processes.SETPRIV or "") == "setpriv"


@pytest.mark.skipif(sys.version_info < (3, 11), reason="Popen's process_group is Python 3.11's")
def test_a_child_shares_the_parents_session_in_a_process_group_of_its_own() -> None:
    # Its own group: a Ctrl-C at the terminal reaches the parent only, which stops children in
    # order. The parent's session: under the kernel's per-session CPU groups (autogroup) a child
    # with a session of its own would take an equal share whatever its threads' niceness, which
    # is what kept a replica's event loop waiting behind its own inference (issue 20's 429 p99).
    child = Child("sleeper", ["sleep", "60"]).start()
    try:
        assert os.getsid(child.pid) == os.getsid(0)
        assert os.getpgid(child.pid) == child.pid != os.getpgid(0)
    finally:
        child.send(9)
        child.wait(5)
