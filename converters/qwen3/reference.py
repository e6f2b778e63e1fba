"""The model card's scoring, to prove a converted Qwen3-Reranker exact.

The model card tokenizes ``prefix`` and ``suffix`` alone, each pair's middle text
(:func:`rerank.converters.qwen3.prompt.middle`) with ``truncation="longest_first"`` to
``max_length - len(prefix) - len(suffix)``, and reads the causal LM's logits for ``yes`` and
``no`` at the last position. Here each pair is scored alone (no padding) in float32, and the
score is the raw ``logit(yes) - logit(no)`` (the card's probability is its sigmoid).

* A checkpoint folder: transformers' ``AutoModelForCausalLM`` and ``AutoTokenizer``, loaded by
  transformers itself from the folder, independent of our weight reader.
* A GGUF file: transformers' ``Qwen3Model`` given the weights our reader produced, and the LM
  head's two rows the file holds, with the tokenizer rebuilt from the file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rerank.converters.errors import ConversionError
from rerank.converters.qwen3.prompt import NO, PREFIX, SUFFIX, YES, middle
from rerank.converters.qwen3.spec import Qwen3Spec
from rerank.converters.spec import LoadedModel


def model_card_ids(
    tokenizer: Any, pairs: Sequence[tuple[str, str]], max_length: int, instruction: str | None = None
) -> list[list[int]]:
    """Each pair's token ids exactly as the model card builds them (``process_inputs``)."""
    prefix = tokenizer.encode(PREFIX, add_special_tokens=False)
    suffix = tokenizer.encode(SUFFIX, add_special_tokens=False)
    texts = [middle(q, d, instruction) for q, d in pairs]
    middles = tokenizer(
        texts,
        padding=False,
        truncation="longest_first",
        return_attention_mask=False,
        max_length=max_length - len(prefix) - len(suffix),
    )["input_ids"]
    return [prefix + list(ids) + suffix for ids in middles]


class _Backbone:
    """transformers' ``Qwen3Model`` plus two LM-head rows: what a GGUF holds (llama.cpp's
    converter keeps only the ``yes``/``no`` rows of an untied head)."""

    def __init__(self, loaded: LoadedModel) -> None:
        import torch
        from transformers import Qwen3Config, Qwen3Model

        spec: Qwen3Spec = loaded.spec  # type: ignore[assignment]
        w = loaded.weights
        config = Qwen3Config(
            vocab_size=int(w["emb.word"].shape[0]),
            hidden_size=spec.hidden,
            intermediate_size=spec.intermediate,
            num_hidden_layers=spec.num_layers,
            num_attention_heads=spec.heads,
            num_key_value_heads=spec.kv_heads,
            head_dim=spec.head_dim,
            max_position_embeddings=spec.max_length,
            rms_norm_eps=spec.rms_norm_eps,
            rope_parameters={"rope_type": "default", "rope_theta": spec.rope_base},
            attention_bias=spec.attention_bias,
            hidden_act="silu",
        )
        state = {"embed_tokens.weight": w["emb.word"], "norm.weight": w["norm"]}
        for i in range(spec.num_layers):
            p, o = f"layers.{i}.", f"L{i}."
            state |= {
                p + "input_layernorm.weight": w[o + "attn_norm"],
                p + "self_attn.q_norm.weight": w[o + "q_norm"],
                p + "self_attn.k_norm.weight": w[o + "k_norm"],
                p + "post_attention_layernorm.weight": w[o + "ffn_norm"],
            }
            for name in ("q", "k", "v", "o"):
                state[f"{p}self_attn.{name}_proj.weight"] = w[f"{o}{name}.w"]
                if f"{o}{name}.b" in w:
                    state[f"{p}self_attn.{name}_proj.bias"] = w[f"{o}{name}.b"]
            for name in ("gate", "up", "down"):
                state[f"{p}mlp.{name}_proj.weight"] = w[f"{o}{name}.w"]
        self.model = Qwen3Model(config).float().eval()
        missing, unexpected = self.model.load_state_dict(
            {k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in state.items()}, strict=False
        )
        if missing or unexpected:
            raise ConversionError(f"the reference model does not take these weights: {missing=} {unexpected=}")
        self.head = torch.from_numpy(np.array(w["head.w"], dtype=np.float32))  # rows (no, yes)

    def __call__(self, ids: list[int]) -> float:
        import torch

        hidden = self.model(input_ids=torch.tensor([ids])).last_hidden_state[0, -1]
        no, yes = (self.head @ hidden).tolist()
        return float(yes) - float(no)


class _CausalLM:
    """transformers' ``AutoModelForCausalLM`` from the checkpoint folder, in float32."""

    def __init__(self, folder: Path, tokenizer: Any) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        self.model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
        self.yes = tokenizer.convert_tokens_to_ids(YES)
        self.no = tokenizer.convert_tokens_to_ids(NO)

    def __call__(self, ids: list[int]) -> float:
        import torch

        logits = self.model(input_ids=torch.tensor([ids])).logits[0, -1]
        return float(logits[self.yes]) - float(logits[self.no])


def reference(folder: Path | None, loaded: LoadedModel, tokenizer: Any) -> tuple[Any, str]:
    """The scoring function (token ids -> score logit) and its name."""
    import transformers

    if folder is not None:
        return _CausalLM(folder, tokenizer), f"transformers {transformers.__version__} (AutoModelForCausalLM)"
    return _Backbone(loaded), f"transformers {transformers.__version__} (Qwen3Model + the file's yes/no rows)"


def hf_tokenizer(folder: Path | None, tokenizer: Any) -> Any:
    """transformers' tokenizer: the folder's own, or one wrapping a tokenizer rebuilt from a file."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if folder is not None:
        return AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer)


def reference_scores(
    loaded: LoadedModel, folder: Path | None, tokenizer: Any, pairs: Sequence[tuple[str, str]]
) -> tuple[np.ndarray, list[list[int]], str]:
    """The model card's score logits for ``pairs`` (float64, each pair alone), the token ids it
    scored, and the reference's name. ``tokenizer``: the ``tokenizers`` one written to the model
    folder (used only where there is no checkpoint folder to read transformers' own from)."""
    import torch

    hf = hf_tokenizer(folder, tokenizer)
    score, name = reference(folder, loaded, hf)
    ids = model_card_ids(hf, pairs, loaded.spec.max_length)
    with torch.inference_mode():
        scores = [score(row) for row in ids]
    return np.asarray(scores, dtype=np.float64), ids, name
