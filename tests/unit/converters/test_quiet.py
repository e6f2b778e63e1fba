"""quiet_loggers silences for the call only, and leaves no logging state behind."""

from __future__ import annotations

import logging

import pytest

from rerank.converters.quiet import quiet_loggers, quiet_onnxruntime_tools


def test_silences_root_and_named_loggers_then_restores(caplog: pytest.LogCaptureFixture) -> None:
    root, tool = logging.getLogger(), logging.getLogger("onnxruntime.transformers.optimizer")
    root_level = root.level
    with quiet_onnxruntime_tools():
        logging.warning("Please consider to run pre-processing before quantization.")  # as onnxruntime does
        tool.warning("Model producer not matched")
        tool.error("a real error still shows")
    assert caplog.messages == ["a real error still shows"]
    assert root.level == root_level and logging.getLogger("onnxruntime").level == logging.NOTSET


def test_no_basicconfig_handler_is_left_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    """logging.warning() on a root logger without handlers installs a stderr handler for good."""
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    with quiet_onnxruntime_tools():
        logging.warning("Please consider to run pre-processing before quantization.")
    assert root.handlers == []


def test_levels_restored_after_an_error() -> None:
    logger = logging.getLogger("some.library")
    logger.setLevel(logging.INFO)
    with pytest.raises(RuntimeError), quiet_loggers("some.library"):
        raise RuntimeError
    assert logger.level == logging.INFO
