"""Reads a Hugging Face checkpoint folder (or Hub repo) into canonical weights.

Supports every published layout of the six models, without executing any downloaded code
(``trust_remote_code`` is never used):

* XLM-R (``XLMRobertaForSequenceClassification``): bge-reranker-v2-m3, bce-reranker-base_v1;
* jina-reranker-v2's "flash" layout: XLM-R math under fused ``mixer.Wqkv`` names;
* BERT (``BertForSequenceClassification``);
* JinaBERT (jina-reranker-v1-*): ALiBi, GEGLU, BERT pooler;
* GTE "new" (gte-multilingual-reranker-base): RoPE, gated GELU, pooler;
* Qwen3-Reranker (``Qwen3ForCausalLM``): read by :mod:`rerank.converters.qwen3`.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import numpy as np

from rerank.converters.errors import CheckpointError
from rerank.converters.spec import EncoderSpec, LoadedModel, Weights, shared_fields
from rerank.service.model_folder import file_sha256


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
        return sum(_safetensors_elements(file) for file in files)
    bin_file = folder / "pytorch_model.bin"
    if bin_file.exists():
        return bin_file.stat().st_size // 4
    raise CheckpointError(f"{folder}: no model.safetensors or pytorch_model.bin")


def _safetensors_elements(file: Path) -> int:
    """Elements of every tensor in a safetensors file: its header is a u64 length and a JSON index."""
    try:
        with open(file, "rb") as handle:
            (size,) = struct.unpack("<Q", handle.read(8))
            if size > file.stat().st_size - 8:
                raise ValueError(f"a header of {size} bytes")
            header = json.loads(handle.read(size))
        return sum(math.prod(info["shape"]) for name, info in header.items() if name != "__metadata__")
    except (struct.error, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{file}: not a readable safetensors file ({exc})") from exc


def _load_safetensors(file: Path) -> Weights:
    from safetensors.numpy import load_file

    try:
        return load_file(str(file))
    except TypeError:  # bf16 has no numpy dtype: go through torch
        from safetensors.torch import load_file as load_torch

        return {k: v.float().numpy() for k, v in load_torch(str(file)).items()}


def _read_tensors(folder: Path) -> tuple[Weights, dict[str, str]]:
    files = sorted(folder.glob("*.safetensors"))
    if files:
        tensors: Weights = {}
        for file in files:
            tensors.update(_load_safetensors(file))
        return tensors, {f.name: file_sha256(f) for f in files}
    bin_file = folder / "pytorch_model.bin"
    if bin_file.exists():
        import torch

        state = torch.load(str(bin_file), map_location="cpu", weights_only=True)
        return {k: v.float().numpy() for k, v in state.items()}, {bin_file.name: file_sha256(bin_file)}
    raise CheckpointError(f"{folder}: no model.safetensors or pytorch_model.bin")


def _strip_prefix(tensors: Weights) -> Weights:
    """The tensors without the backbone prefix (``roberta.``, ``bert.``, ``new.``, ...), which is
    found by the word embeddings' name."""
    for key in tensors:
        if key.endswith("embeddings.word_embeddings.weight"):
            prefix = key[: -len("embeddings.word_embeddings.weight")]
            return {(k[len(prefix) :] if k.startswith(prefix) else k): v for k, v in tensors.items()}
    raise CheckpointError("no embeddings.word_embeddings.weight tensor: not a supported encoder")


def detect_family(config: dict, keys: set[str]) -> str:
    """Names the layout: ``xlm-roberta``, ``jina-v2``, ``bert``, ``jina-bert`` or ``gte``."""
    model_type = str(config.get("model_type", "")).lower()
    if any(".mixer.Wqkv." in k for k in keys):
        return "jina-v2"
    if model_type in ("new", "gte") or any(".up_gate_proj." in k for k in keys):
        return "gte"
    if any(".mlp.gated_layers." in k for k in keys) or config.get("position_embedding_type") == "alibi":
        return "jina-bert"
    if model_type in ("xlm-roberta", "roberta", "camembert"):
        return "xlm-roberta"
    if model_type == "bert":
        return "bert"
    raise CheckpointError(
        f"unsupported model_type {model_type!r} (architectures {config.get('architectures')}); "
        "supported: XLM-RoBERTa, BERT, JinaBERT, GTE-new, jina-reranker-v2, Qwen3-Reranker"
    )


def _take(t: Weights, key: str) -> np.ndarray:
    try:
        return np.asarray(t[key], dtype=np.float32)
    except KeyError:
        raise CheckpointError(f"missing tensor {key!r}") from None


def _check_one_logit(head_out: np.ndarray) -> None:
    if head_out.shape[0] != 1:
        raise CheckpointError(f"the classifier has {head_out.shape[0]} outputs; a reranker has exactly one")


def load_checkpoint(source: str) -> LoadedModel:
    """Reads ``source`` (folder or Hub id) into a :class:`LoadedModel`."""
    folder = fetch(source)
    config_path = folder / "config.json"
    if not config_path.exists():
        raise CheckpointError(f"{folder}: no config.json")
    config = json.loads(config_path.read_text())
    from rerank.converters import qwen3  # Qwen3-Reranker, a decoder: its own reader

    if qwen3.matches_checkpoint(config):
        return qwen3.load_checkpoint(folder, config, source)
    raw, hashes = _read_tensors(folder)
    t = _strip_prefix(raw)
    family = detect_family(config, set(raw))
    layers = int(config["num_hidden_layers"])
    hidden = int(config["hidden_size"])
    heads = int(config["num_attention_heads"])
    inter = int(config["intermediate_size"])
    w: Weights = {"emb.word": _take(t, "embeddings.word_embeddings.weight")}
    notes: list[str] = []

    def stack_qkv(p: str) -> tuple[np.ndarray, np.ndarray]:
        ws = [_take(t, f"{p}.{n}.weight") for n in ("query", "key", "value")]
        bs = [_take(t, f"{p}.{n}.bias") for n in ("query", "key", "value")]
        return np.concatenate(ws, 0), np.concatenate(bs, 0)

    if "embeddings.token_type_embeddings.weight" in t:
        w["emb.type"] = _take(t, "embeddings.token_type_embeddings.weight")
    if family in ("xlm-roberta", "bert", "jina-bert"):
        ln = "embeddings.LayerNorm"
    elif family == "jina-v2":
        ln = "emb_ln"
    else:
        ln = "embeddings.LayerNorm"
    w["emb.ln.w"], w["emb.ln.b"] = _take(t, f"{ln}.weight"), _take(t, f"{ln}.bias")

    for i in range(layers):
        o = f"L{i}."
        if family in ("xlm-roberta", "bert", "jina-bert"):
            p = f"encoder.layer.{i}"
            w[o + "qkv.w"], w[o + "qkv.b"] = stack_qkv(f"{p}.attention.self")
            w[o + "o.w"], w[o + "o.b"] = (
                _take(t, f"{p}.attention.output.dense.weight"),
                _take(t, f"{p}.attention.output.dense.bias"),
            )
            w[o + "attn_ln.w"], w[o + "attn_ln.b"] = (
                _take(t, f"{p}.attention.output.LayerNorm.weight"),
                _take(t, f"{p}.attention.output.LayerNorm.bias"),
            )
            if family == "jina-bert":
                w[o + "up.w"] = _take(t, f"{p}.mlp.gated_layers.weight")
                w[o + "down.w"], w[o + "down.b"] = _take(t, f"{p}.mlp.wo.weight"), _take(t, f"{p}.mlp.wo.bias")
                w[o + "ffn_ln.w"], w[o + "ffn_ln.b"] = (
                    _take(t, f"{p}.mlp.layernorm.weight"),
                    _take(t, f"{p}.mlp.layernorm.bias"),
                )
            else:
                w[o + "up.w"], w[o + "up.b"] = (
                    _take(t, f"{p}.intermediate.dense.weight"),
                    _take(t, f"{p}.intermediate.dense.bias"),
                )
                w[o + "down.w"], w[o + "down.b"] = (
                    _take(t, f"{p}.output.dense.weight"),
                    _take(t, f"{p}.output.dense.bias"),
                )
                w[o + "ffn_ln.w"], w[o + "ffn_ln.b"] = (
                    _take(t, f"{p}.output.LayerNorm.weight"),
                    _take(t, f"{p}.output.LayerNorm.bias"),
                )
        elif family == "jina-v2":
            p = f"encoder.layers.{i}"
            w[o + "qkv.w"], w[o + "qkv.b"] = _take(t, f"{p}.mixer.Wqkv.weight"), _take(t, f"{p}.mixer.Wqkv.bias")
            w[o + "o.w"], w[o + "o.b"] = _take(t, f"{p}.mixer.out_proj.weight"), _take(t, f"{p}.mixer.out_proj.bias")
            w[o + "attn_ln.w"], w[o + "attn_ln.b"] = _take(t, f"{p}.norm1.weight"), _take(t, f"{p}.norm1.bias")
            w[o + "up.w"], w[o + "up.b"] = _take(t, f"{p}.mlp.fc1.weight"), _take(t, f"{p}.mlp.fc1.bias")
            w[o + "down.w"], w[o + "down.b"] = _take(t, f"{p}.mlp.fc2.weight"), _take(t, f"{p}.mlp.fc2.bias")
            w[o + "ffn_ln.w"], w[o + "ffn_ln.b"] = _take(t, f"{p}.norm2.weight"), _take(t, f"{p}.norm2.bias")
        else:  # gte
            p = f"encoder.layer.{i}"
            w[o + "qkv.w"], w[o + "qkv.b"] = (
                _take(t, f"{p}.attention.qkv_proj.weight"),
                _take(t, f"{p}.attention.qkv_proj.bias"),
            )
            w[o + "o.w"], w[o + "o.b"] = (
                _take(t, f"{p}.attention.o_proj.weight"),
                _take(t, f"{p}.attention.o_proj.bias"),
            )
            w[o + "attn_ln.w"], w[o + "attn_ln.b"] = _take(t, f"{p}.attn_ln.weight"), _take(t, f"{p}.attn_ln.bias")
            w[o + "up.w"] = _take(t, f"{p}.mlp.up_gate_proj.weight")
            w[o + "down.w"], w[o + "down.b"] = (
                _take(t, f"{p}.mlp.down_proj.weight"),
                _take(t, f"{p}.mlp.down_proj.bias"),
            )
            w[o + "ffn_ln.w"], w[o + "ffn_ln.b"] = _take(t, f"{p}.mlp_ln.weight"), _take(t, f"{p}.mlp_ln.bias")

    if family in ("xlm-roberta", "jina-v2"):
        w["head.dense.w"], w["head.dense.b"] = (
            _take(raw, "classifier.dense.weight"),
            _take(raw, "classifier.dense.bias"),
        )
        w["head.out.w"], w["head.out.b"] = (
            _take(raw, "classifier.out_proj.weight"),
            _take(raw, "classifier.out_proj.bias"),
        )
        head = "roberta"
    else:
        w["head.dense.w"], w["head.dense.b"] = _take(t, "pooler.dense.weight"), _take(t, "pooler.dense.bias")
        w["head.out.w"], w["head.out.b"] = _take(raw, "classifier.weight"), _take(raw, "classifier.bias")
        head = "pooler"
    _check_one_logit(w["head.out.w"])

    eps = float(config.get("layer_norm_eps", 1e-12))
    pad_id = int(config.get("pad_token_id", 1) if config.get("pad_token_id") is not None else 1)
    max_pos = int(config.get("max_position_embeddings", 512))
    common = shared_fields(
        w, layers=layers, hidden=hidden, heads=heads, intermediate=inter, eps=eps, pad_id=pad_id, head=head
    )
    if family in ("xlm-roberta", "jina-v2"):
        w["emb.pos"] = _take(t, "embeddings.position_embeddings.weight")
        spec = EncoderSpec(
            family="xlm-roberta",
            max_length=max_pos - pad_id - 1,
            positions="learned",
            feed_forward="gelu",
            position_offset=pad_id + 1,
            positions_from_pad=True,
            **common,
        )
    elif family == "bert":
        w["emb.pos"] = _take(t, "embeddings.position_embeddings.weight")
        spec = EncoderSpec(
            family="bert",
            max_length=max_pos,
            positions="learned",
            feed_forward="gelu",
            type_ids_input=common["type_vocab"] > 1,
            **common,
        )
    elif family == "jina-bert":
        # JinaBERT's tokenizer (RoBERTa BPE) emits no token-type ids: every token has type 0.
        spec = EncoderSpec(family="jina-bert", max_length=max_pos, positions="alibi", feed_forward="geglu", **common)
    else:
        base, scale = gte_rope(config)
        spec = EncoderSpec(
            family="gte",
            max_length=max_pos,
            positions="rope",
            feed_forward="gelu-gated-second",
            rope_base=base,
            rope_position_scale=scale,
            **common,
        )
    act = str(config.get("hidden_act", "gelu"))
    if act not in ("gelu", "gelu_python"):
        raise CheckpointError(f"hidden_act {act!r} is not supported (only exact GELU)")
    return LoadedModel(
        spec=spec, weights=w, source=source, source_format="hf", notes=notes, files_sha256=hashes, layout=family
    )


def gte_rope(config: dict) -> tuple[float, float]:
    """(base, position scale) of GTE's RoPE, with its static NTK scaling folded in.

    The "new" implementation's static NTK scaling computes inverse frequencies from
    ``base * factor`` and divides them by ``factor ** (2 / d)``: the same as RoPE with base
    ``base * factor`` and positions divided by ``factor ** (2 / d)``, which is what this returns
    (transformers' ``linear`` rope type with that factor). Configs in transformers' own ``gte``
    format carry their final theta and, optionally, a linear factor.
    """
    params = config.get("rope_parameters") or {}
    scaling = config.get("rope_scaling") or {}
    theta = float(params.get("rope_theta", config.get("rope_theta", 160000.0)))
    kind = str(scaling.get("type", scaling.get("rope_type", "default")))
    if kind == "ntk":
        factor = float(scaling["factor"])
        d = int(config["hidden_size"]) // int(config["num_attention_heads"])
        return theta * factor, factor ** (2.0 / d)
    if params.get("rope_type") == "linear":
        return theta, float(params["factor"])
    return theta, 1.0
