"""Every check of a request before any work is queued: its error kind, reason, field and message."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import struct_pb2

from rerank.service.errors import InvalidRequest, ModelNotFound, RerankError, TooManyDocuments
from rerank.service.router.validation import (
    Limits,
    check_document_sizes,
    check_documents,
    check_query,
    check_top_n,
    document_texts,
    long_documents_mode,
    resolve_model,
)


class Named:
    """resolve_model looks names up and reads the model's name (for the call's metrics): this
    stands for a served model."""

    def __init__(self, name: str) -> None:
        self.name = name


ONE: dict[str, Any] = {"solo": Named("solo")}
TWO: dict[str, Any] = {"beta": Named("beta"), "alpha": Named("alpha")}


def refused(kind: type[RerankError], call: Any, *args: Any) -> RerankError:
    with pytest.raises(kind) as info:
        call(*args)
    return info.value


def test_the_only_model_needs_no_name() -> None:
    assert resolve_model(ONE, "") is ONE["solo"]
    assert resolve_model(TWO, "beta") is TWO["beta"]


def test_several_models_need_a_name() -> None:
    error = refused(InvalidRequest, resolve_model, TWO, "")
    assert (error.reason, error.field) == ("MODEL_REQUIRED", "model")
    assert "alpha, beta" in error.message  # sorted, so a client can pick one


def test_an_unknown_model_is_not_found_and_lists_the_served_ones() -> None:
    error = refused(ModelNotFound, resolve_model, TWO, "gamma")
    assert (error.reason, error.field) == ("MODEL_NOT_FOUND", "model")
    assert "'gamma'" in error.message and "alpha, beta" in error.message
    assert refused(ModelNotFound, resolve_model, ONE, "Solo").field == "model"  # names are case-sensitive


def test_an_unknown_model_name_is_quoted_shortened() -> None:
    error = refused(ModelNotFound, resolve_model, ONE, "m" * 100_000)
    assert len(error.message) < 300


@pytest.mark.parametrize("query", ["", " ", "\t\n ", "\u200b", " \u200b\ufeff\u2060 ", "\u00ad"])
def test_a_query_without_visible_characters_is_empty(query: str) -> None:
    error = refused(InvalidRequest, check_query, query, Limits())
    assert (error.reason, error.field) == ("EMPTY_QUERY", "query")


@pytest.mark.parametrize("query", ["a", " panda ", "\u200bx", "熊猫", "0"])
def test_a_visible_query_passes_unchanged(query: str) -> None:
    assert check_query(query, Limits()) == query  # never stripped: the model sees what was sent


def test_document_count() -> None:
    limits = Limits(max_documents=3)
    error = refused(InvalidRequest, check_documents, 0, limits)
    assert (error.reason, error.field) == ("NO_DOCUMENTS", "documents")
    for count in (1, 3):
        check_documents(count, limits)
    error = refused(TooManyDocuments, check_documents, 4, limits)
    assert (error.reason, error.field, error.metadata) == ("TOO_MANY_DOCUMENTS", "documents", {"limit": "3"})
    assert "4 documents" in error.message and "limit is 3" in error.message


@pytest.mark.parametrize("top_n", [0, -1, -1000])
def test_top_n_below_one_is_refused(top_n: int) -> None:
    error = refused(InvalidRequest, check_top_n, top_n)
    assert (error.reason, error.field) == ("BAD_TOP_N", "top_n")
    assert str(top_n) in error.message


@pytest.mark.parametrize("top_n", [None, 1, 2, 10_000])
def test_top_n_of_one_or_more_or_none_passes(top_n: int | None) -> None:
    assert check_top_n(top_n) == top_n


@pytest.mark.parametrize(("value", "mode"), [("", "truncate"), ("truncate", "truncate"), ("window", "window")])
def test_long_documents_modes(value: str, mode: str) -> None:
    assert long_documents_mode(value) == mode


@pytest.mark.parametrize("value", ["chop", "Window", "TRUNCATE", " window", "windows", "x" * 10_000])
def test_an_unknown_long_documents_mode_is_refused(value: str) -> None:
    error = refused(InvalidRequest, long_documents_mode, value)
    assert (error.reason, error.field) == ("BAD_LONG_DOCUMENTS", "long_documents")
    assert "truncate, window" in error.message and len(error.message) < 300


def values(*items: Any) -> list[struct_pb2.Value]:
    """``google.protobuf.Value``s as the JSON transcoder builds them; ``...`` is an unset Value."""
    out = []
    for item in items:
        value = struct_pb2.Value()
        if item is None:
            value.null_value = struct_pb2.NULL_VALUE
        elif isinstance(item, bool):
            value.bool_value = item
        elif isinstance(item, str):
            value.string_value = item
        elif isinstance(item, dict):
            value.struct_value.update(item)
        elif isinstance(item, list):
            value.list_value.extend(item)
        elif isinstance(item, float | int):
            value.number_value = item
        out.append(value)
    return out


def test_strings_and_text_objects_are_documents() -> None:
    assert document_texts(values("a", {"text": "b"}, {"text": "", "id": 7}, "")) == ["a", "b", "", ""]


@pytest.mark.parametrize(
    ("item", "shown"),
    [
        (42, "is a number"),
        (True, "is a boolean"),
        (None, "is null"),
        (["a"], "is a list"),
        (..., "is empty"),
        ({"txt": "a"}, 'without a string "text"'),
        ({"text": 5}, 'without a string "text"'),
        ({"text": {"text": "a"}}, 'without a string "text"'),
    ],
)
def test_anything_else_is_refused_naming_its_index(item: Any, shown: str) -> None:
    error = refused(InvalidRequest, document_texts, values("fine", "fine", item, 1))
    assert (error.reason, error.field) == ("BAD_DOCUMENT", "documents[2]")  # the first bad one
    assert error.message.startswith("documents[2] ") and shown in error.message


def test_sizes_are_checked_in_characters_before_tokenizing() -> None:
    limits = Limits(max_query_chars=10, max_document_chars=5)
    error = refused(InvalidRequest, check_query, "q" * 11, limits)
    assert (error.field, error.reason, error.metadata) == ("query", "QUERY_TOO_LONG", {"limit": "10"})
    assert check_query("q" * 10, limits) == "q" * 10
    error = refused(InvalidRequest, check_document_sizes, ["ok", "123456"], limits)
    assert (error.field, error.reason) == ("documents[1]", "DOCUMENT_TOO_LONG")
    assert "6 characters long; the limit is 5" in error.message
    assert check_document_sizes(["12345"], limits) == ["12345"]
