"""Child processes, supervised: the one place that starts, watches, restarts and stops them.

``rerank-stack`` (service replicas and Envoy), the integration tests and the benchmarks all
start their servers through :func:`spawn` and :class:`Supervisor`.

* A child never outlives its parent: on Linux it asks the kernel for ``SIGKILL`` when the
  process that started it dies (``PR_SET_PDEATHSIG``), even if that process was SIGKILLed, so a
  new start never finds a stale server on its ports. util-linux's ``setpriv --pdeathsig`` sets
  it and execs the child (so the pid is the child's): not Python code run between fork and exec
  (``preexec_fn``), which in a process with other threads (gRPC's, say) can crash or deadlock the
  child before exec (Envoy "exited with signal 11" with an empty log, once in a CI run). It
  also runs in its own process group, so a Ctrl-C in the terminal reaches the parent only, which
  then stops the children in order.
* A child stays in its parent's session. Where the kernel groups tasks by session for CPU
  fairness (``CONFIG_SCHED_AUTOGROUP``, on in most distributions' kernels; it applies to tasks
  outside any container's cgroup), each session's processes together get one share of the CPU,
  and niceness only orders threads within a session: a replica in a session of its own keeps its
  share busy with inference, so its event loop's wake-ups (Envoy's admission check, a refusal)
  wait behind other sessions' slices however nice its inference threads are. In one session the
  inference threads' lower priority (:mod:`rerank.service.core.priority`) holds across Envoy,
  the replicas and the parent (docs/performance.md#overload has what it changed).
* :class:`Supervisor` restarts a child that exits unexpectedly, with exponential backoff, and
  gives up (raising :class:`StartupFailure` with that child's last output) when it keeps failing
  before it ever becomes ready.
"""

from __future__ import annotations

import collections
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

log = logging.getLogger("rerank.supervisor")

SETPRIV = shutil.which("setpriv") if sys.platform.startswith("linux") else None
"""util-linux's ``setpriv`` (Debian: essential), which sets the parent-death signal and execs;
without it (not Linux) the parent's stop() is all there is."""


def dying_with_parent(argv: Sequence[str]) -> list[str]:
    """``argv`` run so that the kernel SIGKILLs it when the *thread* that started it ends
    (start children from a thread that lives as long as they should: the main thread). setpriv
    sets the signal a moment after Popen returns; a parent gone within that moment, before any
    child could be ready, leaves it running."""
    return [SETPRIV, "--pdeathsig", "KILL", "--", *argv] if SETPRIV else list(argv)


_OWN_PROCESS_GROUP: dict[str, Any] = (
    {"process_group": 0} if sys.version_info >= (3, 11) else {"start_new_session": True}
)
"""Popen's arguments for a child in a process group of its own, in the parent's session (see the
module's docstring); Python 3.10's Popen can only do that from ``preexec_fn``, so there the child
gets a session of its own, as before."""


class StartupFailure(RuntimeError):
    """A child kept failing before it became ready; the message carries its last output."""


class Child:
    """One child process. Its output goes to ``log_path`` (appended), or, with ``echo``, to this
    process's stdout with each line prefixed by ``echo`` (the last lines are kept either way, for
    error messages), or else is inherited."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        log_path: Path | None = None,
        echo: str | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = {**os.environ, **(env or {})}
        self.cwd = cwd
        self.log_path = log_path
        self.echo = echo
        self.popen: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self._tail: collections.deque[str] = collections.deque(maxlen=60)

    def start(self) -> Child:
        if self.echo is not None:
            self.popen = self._popen(subprocess.PIPE)
            threading.Thread(target=self._echo, args=(self.popen,), name=f"echo-{self.name}", daemon=True).start()
        elif self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.log_path, "ab") as out:  # the child keeps its own descriptor
                self.popen = self._popen(out)
        else:
            self.popen = self._popen(None)
        self.started_at = time.monotonic()
        return self

    def _popen(self, out: int | IO[bytes] | None) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            dying_with_parent(self.argv),
            env=self.env,
            cwd=self.cwd,
            stdout=out,
            stderr=subprocess.STDOUT if out is not None else None,
            **_OWN_PROCESS_GROUP,
        )

    def _echo(self, popen: subprocess.Popen[bytes]) -> None:
        assert popen.stdout is not None
        for raw in popen.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            self._tail.append(line)
            sys.stdout.write(f"{self.echo} | {line}\n")
            sys.stdout.flush()

    @property
    def pid(self) -> int:
        assert self.popen is not None, f"{self.name} was never started"
        return self.popen.pid

    def poll(self) -> int | None:
        """The exit status, or None while it runs (negative: killed by that signal)."""
        return None if self.popen is None else self.popen.poll()

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def send(self, signum: int) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signum)

    def wait(self, timeout: float | None = None) -> int | None:
        """Waits up to ``timeout`` seconds; the exit status, or None if it still runs."""
        if self.popen is None:
            return None
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, grace: float = 10.0, signum: int = signal.SIGTERM) -> int | None:
        """``signum``, then SIGKILL after ``grace`` seconds. Returns the exit status."""
        self.send(signum)
        return self.wait_or_kill(grace)

    def wait_or_kill(self, grace: float) -> int | None:
        """Waits ``grace`` seconds for a child already told to stop, then SIGKILLs it. (Never
        signals it again: to our servers a second signal means "hurry".)"""
        if self.popen is None:
            return None
        if self.wait(grace) is None:
            log.warning("%s did not stop within %.0f s; killing it", self.name, grace)
            self.popen.kill()
        return self.popen.wait()

    def log_tail(self, limit: int = 3000) -> str:
        """The end of the child's output (what its log file or the echo kept)."""
        if self.echo is not None:
            return "\n".join(self._tail)[-limit:]
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_bytes()[-limit:].decode(errors="replace")

    def wait_until(self, ready: Callable[[], bool], timeout: float, what: str | None = None) -> None:
        """Polls ``ready`` until true; raises :class:`StartupFailure` (with the output's tail) if
        the child exits first or ``timeout`` passes (the child is then stopped)."""
        deadline = time.monotonic() + timeout
        while not ready():
            status = self.poll()
            if status is not None or time.monotonic() > deadline:
                self.stop(grace=5)
                state = describe_exit(status) if status is not None else f"was not ready after {timeout:.0f} s"
                raise StartupFailure(f"{what or self.name} {state}\n{self.log_tail()}".rstrip())
            time.sleep(0.05)


def grpc_serving(port: int, host: str = "127.0.0.1", *, tls_ca: Path | None = None) -> bool:
    """Readiness of a gRPC server: its standard health check answers SERVING (over TLS,
    verified against ``tls_ca``, when given)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    target = f"{host}:{port}"
    channel = (
        grpc.secure_channel(target, grpc.ssl_channel_credentials(root_certificates=tls_ca.read_bytes()))
        if tls_ca is not None
        else grpc.insecure_channel(target)
    )
    try:
        with channel:
            stub: Any = health_pb2_grpc.HealthStub(channel)  # its methods are made at run time
            reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
    except grpc.RpcError:
        return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def spawn(name: str, argv: Sequence[str], **kwargs: object) -> Child:
    """Starts a :class:`Child` (keyword arguments as for :class:`Child`)."""
    return Child(name, argv, **kwargs).start()  # type: ignore[arg-type]


def describe_exit(status: int | None) -> str:
    if status is None:
        return "is running"
    if status < 0:
        try:
            return f"exited with signal {-status} ({signal.Signals(-status).name})"
        except ValueError:
            return f"exited with signal {-status}"
    return f"exited with status {status}"


@dataclass
class _Supervised:
    child: Child
    ready: Callable[[Child], bool]
    ever_ready: bool = False
    failures: int = 0
    """Consecutive exits before becoming ready."""
    restart_at: float | None = None
    backoff: float = field(default=0.5)


class Supervisor:
    """Keeps named children running: call :meth:`poll` periodically.

    A child that exits while the supervisor is not stopping is restarted after a backoff that
    doubles up to ``max_backoff`` and resets once the child is ready again; a child that exits
    ``max_startup_failures`` times in a row without ever becoming ready stops the supervisor
    with :class:`StartupFailure`.
    """

    def __init__(
        self, *, max_backoff: float = 10.0, max_startup_failures: int = 3, report: Callable[[str], None] | None = None
    ) -> None:
        self.max_backoff = max_backoff
        self.max_startup_failures = max_startup_failures
        self.report = report or log.warning
        self._children: dict[str, _Supervised] = {}
        self.stopping = False

    def add(self, child: Child, ready: Callable[[Child], bool]) -> Child:
        """Starts ``child`` (if it is not running) and supervises it."""
        if not child.alive():
            child.start()
        self._children[child.name] = _Supervised(child, ready)
        return child

    def children(self) -> list[Child]:
        return [s.child for s in self._children.values()]

    def all_ready(self) -> bool:
        return all(self._is_ready(s) for s in self._children.values())

    def _is_ready(self, s: _Supervised) -> bool:
        if not s.child.alive():
            return False
        if s.ready(s.child):
            if not s.ever_ready:
                s.ever_ready = True
                s.failures = 0
                s.backoff = 0.5
            return True
        return False

    def poll(self) -> None:
        """Notices exits, restarts children whose backoff has passed; raises StartupFailure."""
        now = time.monotonic()
        for s in self._children.values():
            child = s.child
            if self.stopping:
                return
            if s.restart_at is not None:
                if now >= s.restart_at:
                    s.restart_at = None
                    s.ever_ready = False
                    child.start()
                continue
            if child.alive():
                self._is_ready(s)
                continue
            status = child.poll()
            if not s.ever_ready:
                s.failures += 1
                if s.failures >= self.max_startup_failures:
                    raise StartupFailure(
                        f"{child.name} {describe_exit(status)} before it was ready, {s.failures} times in a row\n"
                        f"{child.log_tail()}".rstrip()
                    )
            self.report(f"{child.name} {describe_exit(status)}; restarting in {s.backoff:.1f} s")
            s.restart_at = now + s.backoff
            s.backoff = min(self.max_backoff, s.backoff * 2)

    def stop(self, names: Sequence[str] | None = None, *, grace: float = 10.0, signum: int = signal.SIGTERM) -> None:
        """Stops ``names`` (default: every child) at once, each getting ``grace`` seconds."""
        self.stopping = True
        chosen = [self._children[n].child for n in names] if names is not None else self.children()
        for child in chosen:
            child.send(signum)
        deadline = time.monotonic() + grace
        for child in chosen:
            child.wait_or_kill(max(0.0, deadline - time.monotonic()))
