"""Request validation: every check that turns a bad request into a 400 (or 404, 429) naming the
field, before any work is queued. Shared by every API face."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rerank.service.core.reranker import ServedModel
from rerank.service.core.tokenization import LongDocuments, TruncationSide
from rerank.service.errors import InvalidRequest, ModelNotFound, TooManyDocuments, quote
from rerank.service.telemetry import context as calls

LONG_DOCUMENT_MODES: tuple[LongDocuments, ...] = ("truncate", "window")

_INVISIBLE = "\u200b\u200c\u200d\u2060\ufeff\u00ad"
"""Characters that render as nothing: a query made only of these (and spaces) is empty."""


@dataclass(frozen=True)
class Limits:
    """Per-request limits the servicers enforce, on sizes alone, before any tokenizing."""

    max_documents: int = 1000
    max_query_chars: int = 16384
    max_document_chars: int = 200_000


def resolve_model(models: Mapping[str, ServedModel], name: str, default: str = "") -> ServedModel:
    """The named model; when ``name`` is empty, ``default`` (for faces whose API names no model),
    else the only one served."""
    name = name or default
    if not name:
        if len(models) == 1:
            only = next(iter(models.values()))
            calls.set_model(only.name)
            return only
        raise InvalidRequest(
            f"several models are served; name one of: {', '.join(sorted(models))}",
            reason="MODEL_REQUIRED",
            field="model",
        )
    model = models.get(name)
    if model is None:
        raise ModelNotFound(
            f"model {quote(name)} is not served; served models: {', '.join(sorted(models))}", field="model"
        )
    calls.set_model(model.name)  # the call's metrics, logs and spans name it from here on
    return model


def check_query(query: str, limits: Limits, field: str = "query") -> str:
    return _visible_text(
        query, limits, field, "QUERY", f"{field} must be a non-empty string (it has no visible characters)"
    )


def check_instruction(instruction: str | None, limits: Limits, field: str = "instruction") -> str | None:
    """An instruction, when given, is held to the query's limits: it is read as part of the query.
    Whether the model takes one at all is the model's to say
    (:meth:`~rerank.service.core.tokenization.PairEncoder.check_instruction`)."""
    if instruction is None:
        return None
    return _visible_text(
        instruction,
        limits,
        field,
        "INSTRUCTION",
        f"{field} must be a non-empty string when given; leave it out for the model's default instruction",
    )


def _visible_text(text: str, limits: Limits, field: str, kind: str, empty: str) -> str:
    """``text`` within the query's length limit and with something visible in it, else an
    InvalidRequest (reasons ``<kind>_TOO_LONG``, ``EMPTY_<kind>``)."""
    if len(text) > limits.max_query_chars:
        raise InvalidRequest(
            f"{field} is {len(text)} characters long; the limit is {limits.max_query_chars}",
            reason=f"{kind}_TOO_LONG",
            field=field,
            metadata={"limit": str(limits.max_query_chars)},
        )
    if not text.strip().strip(_INVISIBLE).strip():
        raise InvalidRequest(empty, reason=f"EMPTY_{kind}", field=field)
    return text


def check_document_sizes(texts: Sequence[str], limits: Limits, field: str = "documents") -> list[str]:
    for i, text in enumerate(texts):
        if len(text) > limits.max_document_chars:
            raise InvalidRequest(
                f"{field}[{i}] is {len(text)} characters long; the limit is {limits.max_document_chars}",
                reason="DOCUMENT_TOO_LONG",
                field=f"{field}[{i}]",
                metadata={"limit": str(limits.max_document_chars)},
            )
    return list(texts)


def check_documents(count: int, limits: Limits, field: str = "documents") -> None:
    if count == 0:
        raise InvalidRequest(
            f'{field} must be a non-empty list of strings or {{"text": string}} objects',
            reason="NO_DOCUMENTS",
            field=field,
        )
    if count > limits.max_documents:
        raise TooManyDocuments(
            f"{count} documents in one request; the limit is {limits.max_documents}",
            field=field,
            metadata={"limit": str(limits.max_documents)},
        )


def check_top_n(top_n: int | None, field: str = "top_n") -> int | None:
    if top_n is not None and top_n < 1:
        raise InvalidRequest(
            f"{field} must be at least 1 (got {top_n}); leave it out to get all documents",
            reason="BAD_TOP_N",
            field=field,
        )
    return top_n


def check_max_tokens_per_doc(value: int | None, field: str = "max_tokens_per_doc") -> int | None:
    if value is not None and value < 1:
        raise InvalidRequest(
            f"{field} must be at least 1 (got {value}); leave it out for the default",
            reason="BAD_TOKEN_CAP",
            field=field,
        )
    return value


TRUNCATION_SIDES: dict[str, TruncationSide] = {"right": "right", "left": "left"}


def truncation_side(value: str, field: str = "truncation_direction") -> TruncationSide:
    """TEI's ``truncation_direction``: ``right`` (default) or ``left``, any capitalisation."""
    if value == "":
        return "right"
    side = TRUNCATION_SIDES.get(value.lower())
    if side is None:
        raise InvalidRequest(
            f"{field} must be right or left (got {quote(value)})", reason="BAD_TRUNCATION_DIRECTION", field=field
        )
    return side


def long_documents_mode(value: str) -> LongDocuments:
    if value == "":
        return "truncate"
    for mode in LONG_DOCUMENT_MODES:
        if value == mode:
            return mode
    raise InvalidRequest(
        f"long_documents must be one of {', '.join(LONG_DOCUMENT_MODES)} (got {quote(value)})",
        reason="BAD_LONG_DOCUMENTS",
        field="long_documents",
    )


_KIND_NAMES = {"number_value": "a number", "bool_value": "a boolean", "null_value": "null", "list_value": "a list"}


def document_texts(values: Sequence[Any]) -> list[str]:
    """Each ``google.protobuf.Value`` must be a string or an object with a string ``text``."""
    texts: list[str] = []
    for i, value in enumerate(values):
        kind = value.WhichOneof("kind")
        if kind == "string_value":
            texts.append(value.string_value)
            continue
        if kind == "struct_value":
            text = value.struct_value.fields.get("text")
            if text is not None and text.WhichOneof("kind") == "string_value":
                texts.append(text.string_value)
                continue
            raise InvalidRequest(
                f'documents[{i}] is an object without a string "text" field',
                reason="BAD_DOCUMENT",
                field=f"documents[{i}]",
            )
        shown = _KIND_NAMES.get(kind or "", "empty")
        raise InvalidRequest(
            f'documents[{i}] is {shown}; each document must be a string or an object {{"text": string}}',
            reason="BAD_DOCUMENT",
            field=f"documents[{i}]",
        )
    return texts
