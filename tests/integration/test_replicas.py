"""rerank-stack with replicas behind Envoy, under load: a replica killed or stopped, the whole
stack stopped, the stack killed — and no request lost."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sys
import time
from pathlib import Path

import httpx
import pytest

from rerank.gateway.processes import Child, grpc_serving
from tests.support import API_KEY
from tests.support.load import Load
from tests.support.processes import children_of, environ_of, free_port, free_ports

LOAD_SECONDS = 20
CLIENTS = 8
DOCUMENTS = [
    ("the giant panda eats bamboo in the mountains of central china and sleeps " * 6) + str(i) for i in range(200)
]
"""~190 ms of work per request on one core: at any moment several calls are inside each replica."""


@pytest.fixture(scope="module")
def one_model(models_dir, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("replica-models")
    shutil.copytree(models_dir / "bert-tiny", folder / "bert-tiny")
    return folder


class RunningStack:
    def __init__(self, models: Path, state: Path, replicas: int = 2) -> None:
        self.grpc_port = free_ports(replicas)
        self.rest_port, self.admin_port = free_port(), free_port()
        self.state = state
        argv = [
            sys.executable,
            "-m",
            "gateway",
            "--models-dir",
            str(models),
            "--replicas",
            str(replicas),
            "--grpc-port",
            str(self.grpc_port),
            "--rest-port",
            str(self.rest_port),
            "--rest-host",
            "127.0.0.1",
            "--admin-port",
            str(self.admin_port),
            "--state-dir",
            str(state),
            "--drain-delay",
            "2",
        ]
        self.log = state / "stack.log"
        self.child = Child("stack", argv, env={"RERANK_API_KEYS": API_KEY}, log_path=self.log)

    def start(self) -> RunningStack:
        self.child.start().wait_until(lambda: "Ready:" in self.log.read_text(errors="replace"), timeout=120)
        return self

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    def replica_pid(self, index: int) -> int:
        """The pid of replica ``index`` (0-based): the child serving on its port."""
        port = str(self.grpc_port + index)
        for pid in children_of(self.child.pid):
            if environ_of(pid).get("RERANK_GRPC_PORT") == port:
                return pid
        raise LookupError(f"no replica on port {port}")

    def descendants(self) -> list[int]:
        return children_of(self.child.pid)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def rerank(client: httpx.Client) -> httpx.Response:
    return client.post(
        "/v1/rerank",
        headers={"authorization": f"Bearer {API_KEY}"},
        json={"query": "what do pandas eat?", "documents": DOCUMENTS, "return_documents": False},
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/status").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text()


@pytest.mark.parametrize(
    ("signum", "exit_text"),
    [(signal.SIGKILL, "exited with signal 9 (SIGKILL)"), (signal.SIGTERM, "exited with status 0")],
)
def test_a_replica_going_away_under_load_loses_no_request(one_model, tmp_path, signum, exit_text):
    stack = RunningStack(one_model, tmp_path).start()
    try:
        victim = stack.replica_pid(1)
        load = Load(rerank, stack.base_url, clients=CLIENTS).start()
        time.sleep(5)
        os.kill(victim, signum)
        time.sleep(LOAD_SECONDS - 5)
        outcomes = load.stop()
        assert len(outcomes) > 100, "the load was too light to show anything"
        failures = load.failures()
        # On failure, the stack's log too: replica lines and Envoy's access log say which path it took.
        assert not failures, f"{len(failures)} of {len(outcomes)} failed, e.g. {failures[:3]}\n{stack.output()[-6000:]}"
        # The supervisor said what happened and brought the replica back on its port.
        assert f"replica 2 {exit_text}; restarting" in stack.output()
        deadline = time.monotonic() + 30
        while not grpc_serving(stack.grpc_port + 1) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert stack.replica_pid(1) != victim and grpc_serving(stack.grpc_port + 1)
    finally:
        stack.child.stop(grace=30)


def test_a_stopped_replica_does_not_hang_the_calls_sent_to_it(one_model, tmp_path):
    """One replica of two SIGSTOPped under load (a frozen process: its port accepts, nothing
    answers): Envoy's pings find it within seconds and the calls on its connections are retried
    on the other replica (they hung 17-19 s). Every call succeeds, none takes much longer than
    that."""
    stack = RunningStack(one_model, tmp_path).start()
    victim = stack.replica_pid(1)
    try:
        load = Load(rerank, stack.base_url, clients=CLIENTS).start()
        time.sleep(3)
        os.kill(victim, signal.SIGSTOP)
        stopped = time.monotonic()
        time.sleep(10)
        outcomes = load.stop()
        failures = load.failures()
        assert not failures, f"{len(failures)} of {len(outcomes)} failed, e.g. {failures[:3]}"
        around = [o for o in outcomes if o.started < stopped + 5 and o.finished > stopped]
        assert around, "no call was under way when the replica stopped"
        slowest = max(o.finished - o.started for o in around)
        assert slowest < 8, f"a call took {slowest:.1f} s\n{stack.output()[-4000:]}"
    finally:
        os.kill(victim, signal.SIGCONT)
        stack.child.stop(grace=30)


def test_stopping_the_stack_answers_every_request_in_flight(one_model, tmp_path):
    stack = RunningStack(one_model, tmp_path).start()
    children = stack.descendants()
    load = Load(rerank, stack.base_url, clients=CLIENTS).start()
    time.sleep(5)
    signalled = time.monotonic()
    stack.child.send(signal.SIGTERM)
    assert stack.child.wait(60) == 0, stack.output()[-3000:]
    load.stop()
    in_flight = [o for o in load.outcomes if o.started < signalled < o.finished]
    assert len(in_flight) >= CLIENTS // 2, "no request was in flight when the signal came"
    failures = load.failures(started_before=signalled)
    assert not failures, f"{len(failures)} requests in flight were not answered 200: {failures[:3]}"
    assert not [pid for pid in children if _alive(pid)], "a child outlived the stack"


def test_killing_the_stack_leaves_no_orphan_and_the_ports_free(one_model, tmp_path):
    first = RunningStack(one_model, tmp_path / "a").start()
    children = first.descendants()
    assert len(children) == 3  # two replicas and Envoy
    os.kill(first.child.pid, signal.SIGKILL)
    first.child.wait(10)
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in children if _alive(pid)], "children outlived a SIGKILLed stack"
    second = RunningStack(one_model, tmp_path / "b")
    second.grpc_port, second.rest_port, second.admin_port = first.grpc_port, first.rest_port, first.admin_port
    second.child.argv = [a.replace(str(tmp_path / "a"), str(tmp_path / "b")) for a in first.child.argv]
    second.start()  # the same ports: nothing stale holds them
    try:
        with httpx.Client(base_url=second.base_url, timeout=30) as client:
            assert rerank(client).status_code == 200
    finally:
        second.child.stop(grace=30)


def test_a_replica_that_keeps_failing_stops_the_stack_with_the_reason_last(one_model, tmp_path):
    broken = tmp_path / "models"
    shutil.copytree(one_model, broken)
    for graph in broken.glob("*/*.onnx"):
        graph.write_bytes(b"not a graph")
    stack = RunningStack(broken, tmp_path / "state", replicas=1)
    stack.child.start()
    assert stack.child.wait(120) == 1
    lines = [line for line in stack.output().splitlines() if line.strip()]
    # The last line, after the replica's and Envoy's output: what a log's tail shows.
    assert lines[-1] == "rerank-stack: replica 1 exited with status 1 before it was ready, 3 times in a row"
    # The replica's own error above it (which damaged graph it names first may vary).
    assert any("the file is damaged" in line for line in lines[:-1]), "the replica's own error is quoted above it"


def test_a_busy_port_is_a_one_line_error_naming_its_setting(one_model, tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        stack = RunningStack(one_model, tmp_path)
        stack.child.argv[stack.child.argv.index("--rest-port") + 1] = str(port)
        stack.child.start()
        assert stack.child.wait(30) == 1
    lines = [line for line in stack.output().splitlines() if line.strip()]
    assert lines == [
        f"rerank-stack: port {port} is in use: it is the REST port (RERANK_REST_PORT / --rest-port); choose another"
    ]
