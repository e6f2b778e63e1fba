"""Log lines carry the request id (and key name and model) of the call they belong to, as text
or as one JSON object per line."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from rerank.service.telemetry import context, logs
from rerank.service.telemetry.context import Call


@pytest.fixture
def logger() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger of its own with the handler ``logs.configure`` installs (the root logger is
    pytest's)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(logs.CallFilter())
    log = logging.getLogger("rerank.test-logs")
    log.addHandler(handler)
    log.propagate = False
    log.setLevel(logging.DEBUG)
    try:
        yield log, stream
    finally:
        log.removeHandler(handler)


def in_call(call: Call, log: logging.Logger, message: str, *args: object) -> None:
    token = context.enter(call)
    try:
        log.info(message, *args)
    finally:
        context.leave(token)


def test_json_lines_carry_the_call(logger: tuple[logging.Logger, io.StringIO]) -> None:
    log, stream = logger
    log.handlers[0].setFormatter(logs.JsonFormatter())
    call = Call("/rerank.v1.RerankService/Rerank", "req-1", key="team-a", model="bge")
    in_call(call, log, "scored %d pairs", 3)
    log.warning("outside any call")
    log.error("from the scheduler", extra={"request_id": "req-2"})
    first, second, third = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first == {
        "time": first["time"],
        "level": "INFO",
        "logger": "rerank.test-logs",
        "message": "scored 3 pairs",
        "request_id": "req-1",
        "method": "/rerank.v1.RerankService/Rerank",
        "key": "team-a",
        "model": "bge",
    }
    assert first["time"].endswith("Z") and "T" in first["time"]
    assert "request_id" not in second and second["level"] == "WARNING"
    assert third["request_id"] == "req-2"


def test_a_traceback_stays_inside_its_json_line(logger: tuple[logging.Logger, io.StringIO]) -> None:
    log, stream = logger
    log.handlers[0].setFormatter(logs.JsonFormatter())
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("failed")
    (line,) = stream.getvalue().splitlines()
    entry = json.loads(line)
    assert entry["message"] == "failed" and "RuntimeError: boom" in entry["exception"]


def test_text_lines_name_the_call_after_the_message(logger: tuple[logging.Logger, io.StringIO]) -> None:
    log, stream = logger
    log.handlers[0].setFormatter(logs.TextFormatter())
    in_call(Call("/m", "req-9", key="team-b"), log, "hello")
    log.info("no call")
    with_call, without = stream.getvalue().splitlines()
    assert with_call.endswith("INFO rerank.test-logs: hello [request_id=req-9 key=team-b]")
    assert without.endswith("INFO rerank.test-logs: no call")


def test_the_model_is_known_once_validation_resolved_it() -> None:
    call = Call("/m", "req-3")
    token = context.enter(call)
    try:
        context.set_model("bge")
    finally:
        context.leave(token)
    context.set_model("ignored")  # outside a call: nothing to name
    assert call.model == "bge" and context.current() is None
