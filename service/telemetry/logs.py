"""Log lines as text or JSON (``RERANK_LOG_FORMAT``), each with the request id of its call.

A line logged while a call is being answered carries that call's ``request_id`` (Envoy's
``x-request-id``, the id its access log shows), its API key's name and its model, taken from
:mod:`rerank.service.telemetry.context`; work outside a call (the scheduler's task) passes
``extra={"request_id": ...}`` itself. Text::

    2026-11-30 12:00:00,123 WARNING rerank.service.core.batching: pair 3 failed [request_id=9b1c... key=a model=m]

JSON, one object per line::

    {"time": "2026-11-30T12:00:00.123Z", "level": "WARNING", "logger": "rerank.service.core.batching",
     "message": "pair 3 failed", "request_id": "9b1c...", "key": "team-a", "model": "bge"}

What we log never holds an API key or a document's text, at any level: messages name keys by
their names and requests by their ids and sizes.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import IO, Any

from rerank.service.telemetry import context

CONTEXT_FIELDS = ("request_id", "method", "key", "model")
"""What a line may say about its call, in this order."""


class CallFilter(logging.Filter):
    """Adds the current call's fields to each record (unless the record names its own)."""

    def filter(self, record: logging.LogRecord) -> bool:
        call = context.current()
        if call is not None:
            for name in CONTEXT_FIELDS:
                if not getattr(record, name, None):
                    setattr(record, name, getattr(call, name))
        return True


def _fields(record: logging.LogRecord) -> dict[str, str]:
    return {name: value for name in CONTEXT_FIELDS if (value := getattr(record, name, None))}


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message [request_id=... key=... model=...]``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = {k: v for k, v in _fields(record).items() if k != "method"}
        if not fields:
            return line
        first, newline, rest = line.partition("\n")  # after the message, before a traceback
        return first + " [" + " ".join(f"{k}={v}" for k, v in fields.items()) + "]" + newline + rest


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC), level, logger, message, the call's fields, and
    ``exception`` (the formatted traceback) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False)


LIBRARIES_AT_INFO = ("grpc", "asyncio")
"""Libraries whose debug lines are about their own machinery (grpc logs one per call): at
``debug`` they stay at ``info``, so that our debug lines can be read."""


def configure(level: str, fmt: str = "text", stream: IO[str] | None = None) -> None:
    """Sends every log line at ``level`` and above to ``stream`` (stderr) as ``fmt`` (``text`` or
    ``json``), replacing whatever handlers were there."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(CallFilter())
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    for name in LIBRARIES_AT_INFO:
        logging.getLogger(name).setLevel(max(logging.INFO, logging.getLogger().level))
