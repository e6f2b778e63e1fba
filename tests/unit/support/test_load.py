"""The load generator's clients: what they count as a lost request."""

from __future__ import annotations

import time

import httpx

from tests.support.load import MAX_REFUSALS, Load


def _answers(*responses: httpx.Response):
    """A request function answering ``responses`` in turn, then 200 for ever."""
    queue = list(responses)

    def request(_client: httpx.Client) -> httpx.Response:
        return queue.pop(0) if queue else httpx.Response(200)

    return request


def _first(load: Load):
    deadline = time.monotonic() + 10
    while not load.outcomes:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    return load.stop()[0]


def test_a_client_honouring_retry_after_sends_a_refused_request_again() -> None:
    refused = httpx.Response(429, headers={"retry-after": "0"}, text="would wait")
    first = _first(Load(_answers(refused, refused), "http://127.0.0.1:9", clients=1, honour_retry_after=True).start())
    assert (first.status, first.refusals) == (200, 2)


def test_a_refusal_without_retry_after_or_past_the_retries_is_kept() -> None:
    bare = httpx.Response(429, text="no hint")
    first = _first(Load(_answers(bare), "http://127.0.0.1:9", clients=1, honour_retry_after=True).start())
    assert (first.status, first.refusals) == (429, 0)
    refused = httpx.Response(429, headers={"retry-after": "0"})
    many = _answers(*[refused] * (MAX_REFUSALS + 1))
    first = _first(Load(many, "http://127.0.0.1:9", clients=1, honour_retry_after=True).start())
    assert (first.status, first.refusals) == (429, MAX_REFUSALS)


def test_by_default_a_refusal_is_a_failure() -> None:
    refused = httpx.Response(429, headers={"retry-after": "0"})
    load = Load(_answers(refused), "http://127.0.0.1:9", clients=1).start()
    first = _first(load)
    assert first.status == 429 and load.failures()
