"""The call being answered, for everything that reports on it.

The call guard (:mod:`rerank.service.router.guard`) opens a :class:`Call` for each call and keeps it in
a context variable while the handler runs, so that a log line, a metric label or a span made
anywhere under the handler (its tasks included) knows the call's request id, its API key's name
and, once validation resolved it, its model. Work done on the scheduler's own task (micro-batches
serve several calls) names the request id itself.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass


@dataclass
class Call:
    """One call: what logs, metrics and spans may say about it (never the key, never text)."""

    method: str
    """The gRPC method, e.g. ``/rerank.v1.RerankService/Rerank`` (REST calls are transcoded)."""
    request_id: str
    """Envoy's ``x-request-id``, or one made up for a call that did not come through Envoy."""
    key: str = ""
    """The API key's name (``Keyring``), never the key; empty without one."""
    model: str = ""
    """The served model, once the request named one that exists."""


_current: contextvars.ContextVar[Call | None] = contextvars.ContextVar("rerank_call", default=None)


def current() -> Call | None:
    """The call whose handler is running, or None (start-up, the scheduler's own task)."""
    return _current.get()


def enter(call: Call) -> contextvars.Token[Call | None]:
    return _current.set(call)


def leave(token: contextvars.Token[Call | None]) -> None:
    _current.reset(token)


def set_model(name: str) -> None:
    """Records the model the current call asked for (a no-op outside a call)."""
    call = _current.get()
    if call is not None:
        call.model = name
