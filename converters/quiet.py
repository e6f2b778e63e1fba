"""Silencing what third-party libraries print during a conversion, for the duration of a call.

The converter reports its own progress; what transformers and ONNX Runtime print on the way
(weight-loading bars, "Model producer not matched", "Please consider to run pre-processing
before quantization") is not addressed to our user and hides the lines that are. Each helper
here restores the previous state when the call returns, so a program that embeds the converter
keeps its own settings.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator


@contextlib.contextmanager
def quiet_loggers(*names: str, level: int = logging.ERROR) -> Iterator[None]:
    """Raises the named loggers to ``level`` for the call.

    ``""`` names the root logger, which onnxruntime.quantization logs to directly. A root
    logger without handlers gets a NullHandler meanwhile: ``logging.warning()`` would otherwise
    install a permanent stderr handler (``basicConfig``) on its way.
    """
    loggers = [logging.getLogger(name or None) for name in names]
    levels = [logger.level for logger in loggers]
    root = logging.getLogger()
    placeholder = logging.NullHandler() if not root.handlers else None
    if placeholder is not None:
        root.addHandler(placeholder)
    for logger in loggers:
        logger.setLevel(level)
    try:
        yield
    finally:
        for logger, previous in zip(loggers, levels, strict=True):
            logger.setLevel(previous)
        if placeholder is not None:
            root.removeHandler(placeholder)


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """transformers without its progress bars (weight loading) and below-error log lines."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"(transformers|torch)(\.|$)")
            yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def quiet_onnxruntime_tools() -> contextlib.AbstractContextManager[None]:
    """ONNX Runtime's Python tools (transformer optimizer, quantizer) without their warnings."""
    return quiet_loggers("onnxruntime", "")
