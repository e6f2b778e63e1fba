"""Per-key limits on a real Redis server, the store the processes of several hosts share
(``RERANK_LIMITS_STORE=redis://...``): the same buckets as in one process (refill, debt,
requests per second, tokens per minute, other keys untouched), one limit for processes that
share the server, and a server that cannot be reached admits (and says so) rather than refusing
every call. (The other stores: tests/unit/service/router/test_limits.py.)"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from rerank.service.errors import ConfigurationError, RateLimited
from rerank.service.router.auth import ApiKey
from rerank.service.router.limits import Bucket, KeyCaller, RedisBuckets, open_buckets
from tests.support.limits import admitted_across_processes
from tests.support.processes import free_port
from tests.support.redis import RedisServer


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    running = RedisServer(tmp_path_factory.mktemp("redis"))
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def buckets(server: RedisServer) -> Iterator[RedisBuckets]:
    import redis

    redis.Redis.from_url(server.url).flushdb()
    store = open_buckets(server.url)
    assert isinstance(store, RedisBuckets)
    yield store
    store.close()


def _key(name: str = "team", **limits: float) -> ApiKey:
    return ApiKey(hashlib.sha256(name.encode()).digest(), name, **limits)  # type: ignore[arg-type]


def test_requests_per_second(buckets: RedisBuckets) -> None:
    key = _key(requests_per_second=2)
    KeyCaller(key, buckets).admit()
    KeyCaller(key, buckets).admit()
    with pytest.raises(RateLimited, match=r"key 'team' is over its limit of 2 requests per second") as over:
        KeyCaller(key, buckets).admit()
    assert over.value.retry_after == 1


def test_tokens_per_minute_admits_while_positive_and_charges_into_debt(buckets: RedisBuckets) -> None:
    key = _key(tokens_per_minute=600)
    caller = KeyCaller(key, buckets)
    caller.admit()
    caller.charge(1000)
    with pytest.raises(RateLimited, match="600 tokens per minute") as over:
        KeyCaller(key, buckets).admit()
    assert 39 <= over.value.retry_after <= 41
    tokens = Bucket(f"tpm:{{{key.digest.hex()}}}", 600, 10)
    assert buckets.admit(None, tokens)[1] == pytest.approx(40, abs=1)


def test_other_keys_and_keys_without_limits_are_unaffected(buckets: RedisBuckets) -> None:
    limited, free = _key(requests_per_second=1), _key("other")
    KeyCaller(limited, buckets).admit()
    with pytest.raises(RateLimited):
        KeyCaller(limited, buckets).admit()
    for _ in range(50):
        KeyCaller(free, buckets).admit()
        KeyCaller(_key("both", requests_per_second=1000, tokens_per_minute=10**9), buckets).admit()


def test_processes_sharing_the_server_share_the_limit(server: RedisServer, buckets: RedisBuckets) -> None:
    assert admitted_across_processes(server.url) == 1


def test_a_server_that_cannot_be_reached_admits_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    store = open_buckets(f"redis://127.0.0.1:{free_port()}/0")
    key = _key(requests_per_second=0.001)
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            KeyCaller(key, store).admit()
    assert "per-key limits not counted" in caplog.text


def test_a_bad_url_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="RERANK_LIMITS_STORE"):
        open_buckets("redis://127.0.0.1:notaport/0")


def test_two_stacks_sharing_a_redis_server_hold_one_limit(
    server: RedisServer, models_dir: Path, tmp_path: Path
) -> None:
    """Two rerank-stacks (two hosts, each its own Envoy and replica) counting in one Redis: a key
    of 2 requests per second gets about 2 a second across both, not 2 from each."""
    import shutil
    import threading
    import time

    import httpx

    from tests.support.stack import StackProcess

    shutil.copytree(models_dir / "bert-tiny", tmp_path / "models" / "bert-tiny")
    keys = tmp_path / "keys"
    keys.write_text(f"{hashlib.sha256(b'shared-key-0001').hexdigest()} name=shared rps=2\n")
    env = {"RERANK_API_KEYS": "", "RERANK_API_KEYS_FILE": str(keys), "RERANK_LIMITS_STORE": server.url}
    stacks = [StackProcess.start(tmp_path / "models", tmp_path / f"host-{i}", env=env) for i in range(2)]
    served: list[int] = []
    try:
        stop = time.monotonic() + 6

        def client(base_url: str) -> None:
            with httpx.Client(base_url=base_url, timeout=30) as session:
                while time.monotonic() < stop:
                    response = session.post(
                        "/v1/rerank",
                        json={"query": "panda", "documents": ["bamboo"]},
                        headers={"authorization": "Bearer shared-key-0001"},
                    )
                    served.append(response.status_code)

        started = time.monotonic()
        threads = [threading.Thread(target=client, args=(s.base_url,)) for s in stacks for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        elapsed = time.monotonic() - started
    finally:
        for stack in stacks:
            stack.stop()
    assert set(served) <= {200, 429}, set(served)
    rate = (served.count(200) - 2) / elapsed  # the bucket's capacity aside
    assert rate <= 2.2, f"{served.count(200)} served in {elapsed:.1f} s across two hosts"
    assert served.count(200) >= elapsed, "the key was barely served"
