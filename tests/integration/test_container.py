"""The container image (deploy/docker/Dockerfile), run by a real Docker daemon: its three roles,
its health check, its scores against the stack run without a container, and a service
container killed under load behind Envoy containers on a user-defined network.

``make test-container`` builds the image (``make image``) and runs these; ``make test`` does not
(they need Docker and a minute or two). The image is ``$RERANK_TEST_IMAGE`` (default
``rerank:dev``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from pathlib import Path

import httpx
import pytest

from rerank.gateway import kubernetes
from rerank.gateway.envoy_config.bootstrap import to_yaml
from tests.support import API_KEY
from tests.support.containers import Containers, docker
from tests.support.load import Load

pytestmark = pytest.mark.container

UID = "10001:10001"
QUERY = "what do pandas eat?"
DOCUMENTS = [
    "The giant panda eats bamboo in the mountains of central China.",
    "Pandas sleep most of the day.",
    "Der Große Panda frisst fast ausschließlich Bambus.",
    "大熊猫主要以竹子为食。",
    "A panda's diet is 99 percent bamboo, with the occasional small animal.",
    "Stock markets fell on Tuesday.",
]
LOAD_DOCUMENTS = [
    ("the giant panda eats bamboo in the mountains of central china and sleeps " * 6) + str(i) for i in range(48)
]
"""Enough work per request that several calls are inside each service container at any time."""


@pytest.fixture(scope="module")
def image() -> str:
    name = os.environ.get("RERANK_TEST_IMAGE", "rerank:dev")
    if docker("image", "inspect", name, check=False).returncode != 0:
        pytest.fail(f"image {name} not found: `make test-container` builds it (make image)")
    return name


@pytest.fixture
def containers():
    # Unique names: a crashed earlier run, or another worktree's, cannot collide with this one.
    found = Containers(prefix=f"rerank-test-{uuid.uuid4().hex[:8]}")
    try:
        yield found
    finally:
        found.remove()


def readable_dir(path: Path) -> Path:
    """A new folder the container's user (uid 10001) can read: pytest's temporary folders are
    private to root."""
    path.mkdir()
    path.chmod(0o755)
    return path


def readable_file(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o644)
    return path


def readable_copy(source: Path, target: Path) -> Path:
    """A copy of the folder ``source`` that the container's user can read."""
    readable_dir(target)
    for child in source.iterdir():
        if child.is_dir():
            shutil.copytree(child, target / child.name)
        else:
            shutil.copy2(child, target / child.name)
    return target


@pytest.fixture(scope="module")
def container_models(models_dir, tmp_path_factory) -> Path:
    return readable_copy(models_dir, tmp_path_factory.mktemp("container") / "models")


def rerank(base_url: str, model: str, documents: list[str]) -> dict:
    response = httpx.post(
        f"{base_url}/v1/rerank",
        headers={"authorization": f"Bearer {API_KEY}"},
        json={"model": model, "query": QUERY, "documents": documents, "return_documents": False},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_the_image_runs_as_a_user_without_compilers_or_torch(image):
    config = json.loads(docker("image", "inspect", "-f", "{{json .Config}}", image).stdout)
    assert config["User"] == UID
    assert config["Cmd"][0] == "rerank-stack"
    assert "rerank.gateway.probe" in " ".join(config["Healthcheck"]["Test"])
    script = (
        "id -u; for c in cc gcc g++ clang; do command -v $c && exit 1; done; "
        "python -c 'import torch' 2>/dev/null && exit 2; envoy --version >/dev/null && rerank-serve --version"
    )
    result = docker("run", "--rm", "--entrypoint", "sh", image, "-c", script, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[0] == "10001"


def test_the_stack_container_scores_like_the_stack_outside(image, containers, container_models, stack):
    """The default role (service + Envoy), read-only root, keys from the environment: the
    same scores, bit for bit, as the same models served outside a container."""
    name = containers.run(
        "stack",
        image,
        options=[
            "-p",
            "127.0.0.1::8080",
            "-v",
            f"{container_models}:/models:ro",
            "-e",
            f"RERANK_API_KEYS={API_KEY}",
            "--read-only",
            "--tmpfs",
            "/var/lib/rerank:uid=10001,gid=10001,mode=0700",
            "--tmpfs",
            "/tmp",
            "--health-interval",
            "1s",
        ],
    )
    containers.wait_healthy(name)
    inside = f"http://127.0.0.1:{containers.published(name, 8080)}"
    for model in ("xlmr-tiny", "bert-tiny"):
        ours, theirs = rerank(inside, model, DOCUMENTS), rerank(stack.rest, model, DOCUMENTS)
        assert ours["results"] == theirs["results"], model
        assert ours["usage"] == theirs["usage"], model
    # Without a key: refused, as outside.
    assert httpx.post(f"{inside}/v1/rerank", json={"query": "q", "documents": ["d"]}).status_code == 401
    # docker stop (SIGTERM): the stack drains and exits cleanly.
    docker("stop", "-t", "30", name, timeout=60)
    assert docker("inspect", "-f", "{{.State.ExitCode}}", name).stdout.strip() == "0", containers.logs(name)
    assert "draining" in containers.logs(name)


def envoy_admin(containers: Containers, name: str, path: str) -> str:
    """Envoy's admin API inside container ``name`` (it listens on the container's loopback)."""
    code = f"from rerank.gateway.envoy import admin_request; print(admin_request(9901, {path!r}) or '')"
    return docker("exec", name, "python", "-c", code).stdout


def upstream_successes(containers: Containers, name: str) -> dict[str, int]:
    """Requests each upstream host (by address) answered, from Envoy's ``/clusters``."""
    found: dict[str, int] = {}
    for line in envoy_admin(containers, name, "/clusters").splitlines():
        parts = line.split("::")
        if len(parts) == 4 and parts[0] == "rerank_grpc" and parts[2] == "rq_success":
            found[parts[1].rsplit(":", 1)[0]] = int(parts[3])
    return found


def test_killing_a_service_container_under_load_loses_no_request(image, containers, container_models, tmp_path):
    """Two service containers (rerank-serve) on a user-defined network, behind two Envoy
    containers: one ``rerank-gateway`` reaching them by container name, one running the
    Kubernetes ConfigMap's configuration unchanged, reaching them by a shared network alias
    (what a headless Service is to it). One service container is SIGKILLed under load."""
    network = containers.network("net")
    keys = readable_dir(tmp_path / "keys")
    readable_file(keys / "api-keys.sha256", hashlib.sha256(API_KEY.encode()).hexdigest() + "\n")
    config = readable_dir(tmp_path / "envoy")
    readable_file(config / kubernetes.CONFIG_KEY, to_yaml(kubernetes.envoy_config()))

    common = ["--network", network, "--read-only", "--tmpfs", "/tmp", "--health-interval", "1s"]
    services = [
        containers.run(
            f"svc{i}",
            image,
            "rerank-serve",
            options=[
                *common,
                "--network-alias",
                kubernetes.HEADLESS_SERVICE,
                "-v",
                f"{container_models}:/models:ro",
                "-v",
                f"{keys}:/run/keys:ro",
                "-e",
                "RERANK_API_KEYS_FILE=/run/keys/api-keys.sha256",
                "-e",
                "RERANK_THREADS=1",  # two containers on this machine's two cores
            ],
        )
        for i in (1, 2)
    ]
    gateway = containers.run(
        "gateway",
        image,
        "rerank-gateway",
        options=[
            *common,
            "-p",
            "127.0.0.1::8080",
            "--tmpfs",
            "/var/lib/rerank:uid=10001,gid=10001,mode=0700",
            "-e",
            "RERANK_UPSTREAMS=" + ",".join(f"{s}:50051" for s in services),
        ],
    )
    k8s_envoy = containers.run(
        "k8s-envoy",
        image,
        "envoy",
        "-c",
        "/etc/envoy/envoy.yaml",
        "--log-level",
        "warn",
        options=[*common, "-p", "127.0.0.1::8080", "-v", f"{config}:/etc/envoy:ro"],
    )
    for name in [*services, gateway, k8s_envoy]:
        containers.wait_healthy(name)
    envoys = [gateway, k8s_envoy]
    for envoy in envoys:  # the files Envoy serves itself are where its configuration says
        page = httpx.get(f"http://127.0.0.1:{containers.published(envoy, 8080)}/openapi.json", timeout=10)
        assert page.status_code == 200 and "/v1/rerank" in page.json()["paths"]
    deadline = time.monotonic() + 30
    healthy = "cluster.rerank_grpc.membership_healthy: 2"
    while not all(healthy in envoy_admin(containers, e, "/stats?filter=membership_healthy") for e in envoys):
        assert time.monotonic() < deadline, "the Envoy containers did not see both services healthy"
        time.sleep(0.5)

    # The survivor alone has half the capacity for the same 8 clients: admission may refuse some
    # (429, Retry-After) rather than queue them past its bound; clients that wait as told lose nothing.
    loads = [
        Load(
            rerank_request, f"http://127.0.0.1:{containers.published(e, 8080)}", clients=4, honour_retry_after=True
        ).start()
        for e in envoys
    ]
    time.sleep(6)
    victim = services[1]
    victim_address = docker(
        "inspect", "-f", f'{{{{(index .NetworkSettings.Networks "{network}").IPAddress}}}}', victim
    ).stdout.strip()
    served_by_victim = [upstream_successes(containers, e).get(victim_address, 0) for e in envoys]
    docker("kill", victim)  # SIGKILL: no drain, calls in flight die with the container
    time.sleep(10)
    outcomes = [load.stop() for load in loads]

    assert all(n > 0 for n in served_by_victim), f"the killed container served no request: {served_by_victim}"
    for envoy, load, done in zip(envoys, loads, outcomes, strict=True):
        assert len(done) > 30, f"{envoy}: the load was too light to show anything ({len(done)} requests)"
        failures = load.failures()
        assert not failures, f"{envoy}: {len(failures)} of {len(done)} failed, e.g. {failures[:3]}"
    # The service left standing still answers through both.
    for envoy in envoys:
        assert containers.health(envoy) == "healthy"


def rerank_request(client: httpx.Client) -> httpx.Response:
    return client.post(
        "/v1/rerank",
        headers={"authorization": f"Bearer {API_KEY}"},
        json={"model": "bert-tiny", "query": QUERY, "documents": LOAD_DOCUMENTS, "return_documents": False},
    )
