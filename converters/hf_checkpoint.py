"""Reads a Hugging Face checkpoint folder (or Hub repo) into canonical weights.

Which layouts exist, and how each is recognised and read, is the families' business
(:mod:`rerank.converters.families`); this module fetches the folder, reads ``config.json`` and
the tensor files, bounded and checked (they are untrusted input), and hands them to the layout
the registry names. No downloaded code is ever executed (``trust_remote_code`` is never used).
"""

from __future__ import annotations

import json
import math
import pickle
import struct
import warnings
import zipfile
from pathlib import Path
from typing import Any

from rerank.converters import families
from rerank.converters.errors import CheckpointError
from rerank.converters.families.base import Checkpoint, check_finite
from rerank.converters.fields import Fields
from rerank.converters.spec import LoadedModel, Weights
from rerank.service.model_folder import file_sha256

MAX_CONFIG_BYTES = 1024 * 1024
"""A model's config.json is a few KB."""
MAX_HEADER_BYTES = 16 * 1024 * 1024
"""A safetensors header indexes each tensor in ~100 bytes: a few hundred KB for the largest models."""
MAX_DIMS = 8
DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip
"""Bytes per element of each safetensors dtype."""


def fetch(source: str) -> Path:
    """A local folder as is; anything else is taken as a Hub repo id and downloaded."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    if path.suffix or source.startswith((".", "/")):
        raise CheckpointError(f"{source}: no such checkpoint folder.")
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "*.txt", "*.model"]
    try:
        return Path(snapshot_download(source, allow_patterns=patterns))
    except Exception as exc:
        raise CheckpointError(download_failed(source, exc)) from exc


def download_failed(source: str, exc: BaseException) -> str:
    """What went wrong downloading ``source``, in whole sentences, and what to do next: most
    often the machine is offline; else the repo id is wrong, or the repo is gated or private."""
    from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError

    from rerank.converters.catalog import CATALOG, did_you_mean

    # A supported model's repo id is right as typed: suggest nothing then.
    hint = "" if any(source == entry.hub_repo for entry in CATALOG.values()) else did_you_mean(source)
    # The library's message, whole, on one line: its lines are sentences or fragments of one.
    lines = [line.strip().removeprefix("Got: ") for line in str(exc).splitlines() if line.strip()]
    detail = " ".join(line if line.endswith((".", "!", "?")) else f"{line}." for line in lines)
    offline = (
        "Offline, build the demo reranker (make serve MODEL=demo, or rerank-convert demo) or convert a checkpoint "
        "folder or .gguf file you have (make serve MODEL=/path/to/checkpoint, or rerank-convert /path/to/checkpoint)."
    )
    if isinstance(exc, GatedRepoError):
        return (
            f"{source!r} is a gated repository on the Hugging Face Hub: accept its terms on its page, log in "
            "(hf auth login), then run this again."
        )
    if isinstance(exc, RepositoryNotFoundError):
        return (
            f"{source!r} is not a repository on the Hugging Face Hub{hint}, or it is private. "
            "Check the repo id (rerank-convert --list shows the supported models), or log in (hf auth login) for "
            "a private one."
        )
    if isinstance(exc, LocalEntryNotFoundError):
        return (
            f"could not download {source!r}{hint}: this machine cannot reach the Hugging Face "
            f"Hub, and the model is not in its local cache ({detail}). {offline}"
        )
    reason = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
    return f"could not download {source!r} from the Hugging Face Hub{hint} ({reason}). {offline}"


def count_parameters(folder: Path) -> int:
    """The checkpoint's parameter count, without loading it: from the safetensors headers, or a
    ``pytorch_model.bin``'s size at 4 bytes per parameter (float32, how those were saved)."""
    files = sorted(folder.glob("*.safetensors"))
    if files:
        return sum(sum(safetensors_index(file).values()) for file in files)
    bin_file = folder / "pytorch_model.bin"
    if bin_file.exists():
        return bin_file.stat().st_size // 4
    raise CheckpointError(f"{folder}: no model.safetensors or pytorch_model.bin")


def safetensors_index(file: Path) -> dict[str, int]:
    """Each tensor's element count, from a safetensors file's header (a u64 length and a JSON
    index), checked: every tensor's bytes lie inside the file and match its shape and dtype."""

    def bad(problem: str) -> CheckpointError:
        return CheckpointError(f"{file}: not a readable safetensors file ({problem})")

    try:
        with open(file, "rb") as handle:
            size = handle.seek(0, 2)
            handle.seek(0)
            if size < 8:
                raise bad(f"{size} bytes, shorter than its header's length")
            (length,) = struct.unpack("<Q", handle.read(8))
            if length > min(MAX_HEADER_BYTES, size - 8):
                raise bad(f"a header of {length} bytes in a file of {size}")
            header = json.loads(handle.read(length))
    except OSError as exc:
        raise bad(exc.strerror or str(exc)) from exc
    except (ValueError, RecursionError) as exc:
        raise bad(f"its header is not JSON: {str(exc)[:80]}") from exc
    if not isinstance(header, dict):
        raise bad("its header is not a JSON object")
    data_bytes = size - 8 - length
    index = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(info, dict):
            raise bad(f"tensor {name[:80]!r} is not described by an object")
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if dtype not in DTYPE_BYTES:
            raise bad(f"tensor {name[:80]!r} has dtype {str(dtype)[:20]!r}")
        if not (isinstance(shape, list) and len(shape) <= MAX_DIMS and all(_count(d) for d in shape)):
            raise bad(f"tensor {name[:80]!r} has shape {str(shape)[:40]}")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_count(o) for o in offsets)):
            raise bad(f"tensor {name[:80]!r} has data offsets {str(offsets)[:40]}")
        elements = math.prod(shape)
        begin, end = offsets
        if not begin <= end <= data_bytes or end - begin != elements * DTYPE_BYTES[dtype]:
            raise bad(f"tensor {name[:80]!r} ({dtype} {shape}) does not fit bytes {begin} to {end} of {data_bytes}")
        index[name] = elements
    return index


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def read_config(folder: Path) -> dict[str, Any]:
    """``config.json`` as a JSON object, refusing what cannot be one (or is absurdly large)."""
    path = folder / "config.json"
    if not path.exists():
        raise CheckpointError(f"{folder}: no config.json")
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise CheckpointError(f"{path}: {size} bytes; a model config is a few KB (at most {MAX_CONFIG_BYTES})")
        config = json.loads(path.read_bytes())
    except OSError as exc:
        raise CheckpointError(f"{path}: not readable ({exc.strerror or exc})") from exc
    except (ValueError, RecursionError) as exc:
        raise CheckpointError(f"{path}: not JSON ({str(exc)[:80]})") from exc
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: a JSON {type(config).__name__}, not an object")
    return config


class _Tensors:
    """A checkpoint's tensor files: the names from their headers, the data when asked for."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.files = sorted(folder.glob("*.safetensors"))
        self.bin_file = folder / "pytorch_model.bin"
        if not self.files and not self.bin_file.exists():
            raise CheckpointError(f"{folder}: no model.safetensors or pytorch_model.bin")
        self._loaded: Weights | None = None

    def names(self) -> frozenset[str]:
        if self.files:
            return frozenset(name for file in self.files for name in safetensors_index(file))
        return frozenset(self.load())

    def load(self) -> Weights:
        """Every tensor, as numpy arrays (float16/32 as stored; bf16 and ``.bin`` as float32)."""
        if self._loaded is None:
            self._loaded = self._read()
        return self._loaded

    def _read(self) -> Weights:
        if self.files:
            tensors: Weights = {}
            for file in self.files:
                tensors.update(_load_safetensors(file))
            return tensors
        return _load_bin(self.bin_file)

    def hashes(self) -> dict[str, str]:
        return {f.name: file_sha256(f) for f in self.files or [self.bin_file]}


def _load_safetensors(file: Path) -> Weights:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    safetensors_index(file)
    try:
        try:
            return load_file(str(file))
        except TypeError:  # bf16 has no numpy dtype: go through torch
            from safetensors.torch import load_file as load_torch

            return {k: v.float().numpy() for k, v in load_torch(str(file)).items()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{file}: not a readable safetensors file ({str(exc)[:120]})") from exc


def _load_bin(file: Path) -> Weights:
    import torch

    try:
        with warnings.catch_warnings():  # what torch says about a malformed file is in its error
            warnings.simplefilter("ignore")
            state = torch.load(str(file), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, ValueError, OSError) as exc:
        raise CheckpointError(f"{file}: not a readable PyTorch checkpoint ({str(exc).splitlines()[0][:120]})") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{file}: not a state dict of tensors")
    return {str(k): v.float().numpy() for k, v in state.items()}


def load_checkpoint(source: str) -> LoadedModel:
    """Reads ``source`` (folder or Hub id) into a :class:`LoadedModel`, by the layout the
    family registry recognises in it."""
    folder = fetch(source)
    config = read_config(folder)
    tensors = _Tensors(folder)
    names = tensors.names()
    family, layout = families.checkpoint_layout(config, names, str(folder))
    fields = Fields(config, str(folder / "config.json"), CheckpointError)
    read = layout.read(Checkpoint(folder, fields, names, tensors.load))
    family.check(read.spec, read.weights, str(folder), CheckpointError)
    check_finite(read.weights, str(folder), CheckpointError)
    return LoadedModel(
        spec=read.spec,
        weights=read.weights,
        source=source,
        source_format="hf",
        notes=read.notes,
        files_sha256=tensors.hashes(),
        source_dtype=read.source_dtype or "fp32",
        layout=layout.name,
    )
