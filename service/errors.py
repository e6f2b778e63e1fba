"""The errors a client can see, as typed exceptions.

Library code (core, backends, the servicers) raises these; :mod:`rerank.service.router.status` is the
one table that turns each kind into a gRPC status code (and so, through Envoy, an HTTP status).
Every instance carries a human message naming the problem, a machine-readable ``reason``
(``google.rpc.ErrorInfo``), and, for a bad request field, the ``field``
(``google.rpc.BadRequest``).
"""

from __future__ import annotations

from typing import Any

QUOTE_LIMIT = 80
"""Longest piece of user input quoted back in an error message."""


def quote(value: str, limit: int = QUOTE_LIMIT) -> str:
    """``repr(value)``, shortened to ``limit`` characters: user input is never echoed whole."""
    if len(value) <= limit:
        return repr(value)
    return repr(value[:limit]) + f"... ({len(value)} characters)"


class RerankError(Exception):
    """Base of every client-visible error."""

    default_reason = "ERROR"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        field: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.field = field
        self.metadata = dict(metadata or {})


class InvalidRequest(RerankError):
    """The request is malformed or asks for something impossible; retrying will not help."""

    default_reason = "INVALID_ARGUMENT"


class QueryTooLong(InvalidRequest):
    """The query alone leaves no room for any document token."""

    default_reason = "QUERY_TOO_LONG"


class DocumentTooLong(InvalidRequest):
    """A document does not fit the model's window and the request asked not to truncate it."""

    default_reason = "DOCUMENT_TOO_LONG"

    def __init__(self, message: str, *, index: int, metadata: dict[str, str] | None = None) -> None:
        super().__init__(message, field=f"documents[{index}]", metadata=metadata)
        self.index = index


class ModelNotFound(RerankError):
    """The named model is not served."""

    default_reason = "MODEL_NOT_FOUND"


class Overloaded(RerankError):
    """Over a limit that will clear: retry later (after ``retry_after`` seconds, when known)."""

    default_reason = "RESOURCE_EXHAUSTED"

    def __init__(self, message: str, *, retry_after: int | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class QueueFull(Overloaded):
    """The model's queue cannot take this request now."""

    default_reason = "QUEUE_FULL"


class RateLimited(Overloaded):
    """The caller's key is over one of its limits (requests per second, tokens per minute)."""

    default_reason = "RATE_LIMITED"


class TooManyDocuments(Overloaded):
    """More documents in one request than the server accepts."""

    default_reason = "TOO_MANY_DOCUMENTS"


class Unauthenticated(RerankError):
    """No API key, or one that is not accepted."""

    default_reason = "UNAUTHENTICATED"


class Unavailable(RerankError):
    """The server is stopping or not ready."""

    default_reason = "UNAVAILABLE"


class ConfigurationError(Exception):
    """The server cannot start as configured (no models, a bad model folder, a busy port, ...).

    Not client-visible: ``main`` prints the message on one line and exits non-zero."""
