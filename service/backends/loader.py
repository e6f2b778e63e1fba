"""Picks and loads the backend for a model folder; the only place that names concrete backends."""

from __future__ import annotations

from pathlib import Path

from service.backends.base import Backend
from service.model_folder import ModelFolderConfig


def select_variant(config: ModelFolderConfig, *, variant: str | None, device: str | None) -> str:
    """The variant :func:`load_backend` will run for these settings."""
    from service.backends.onnx import available_device, choose_variant

    return choose_variant(config, device or available_device(), variant)


def load_backend(
    folder: Path, config: ModelFolderConfig, *, variant: str | None, device: str | None, threads: int | None
) -> Backend:
    """The backend that runs ``folder``'s graph on this machine."""
    from service.backends.onnx import OnnxBackend

    return OnnxBackend(folder, config, variant=variant, device=device, threads=threads)
