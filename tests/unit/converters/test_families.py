"""The family registry: one place recognises every source, and a new family plugs in by registering.

The source readers and the catalog consult :mod:`rerank.converters.families`; no module knows a
family by name. A toy family that is not an encoder (its own spec type, weight names and reader)
registered beside the real ones is found by the generic checkpoint and GGUF readers, and the
decoder family (Qwen3-Reranker) is known to them by its registration alone.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

# The converter's unit tests need its [convert] extra (not torch); without it they skip.
pytest.importorskip("gguf", reason="needs the [convert] extra")

from gguf import GGUFWriter
from safetensors.numpy import save_file

from rerank.converters import families
from rerank.converters.catalog import CATALOG
from rerank.converters.errors import CheckpointError, GgufError
from rerank.converters.families.base import (
    CatalogEntry,
    Checkpoint,
    CheckpointLayout,
    GgufLayout,
    ModelFamily,
    Read,
)
from rerank.converters.gguf_file import GgufFile
from rerank.converters.gguf_source import load_gguf, load_gguf_bundle
from rerank.converters.hf_checkpoint import load_checkpoint

XLMR_NAMES = frozenset(
    {"roberta.embeddings.word_embeddings.weight", "roberta.encoder.layer.0.attention.self.query.weight"}
)


def small_gguf(path: Path, architecture: str, layers: int, tensor: str, rows: int = 4) -> None:
    """A GGUF of ``architecture`` with a gpt2 tokenizer model and one [rows, 8] tensor."""
    writer = GGUFWriter(str(path), architecture)
    writer.add_uint32(f"{architecture}.block_count", layers)
    writer.add_string("tokenizer.ggml.model", "gpt2")
    writer.add_tensor(tensor, np.ones((rows, 8), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


QWEN3_NAMES = frozenset(
    {"model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight", "model.layers.0.mlp.gate_proj.weight"}
)


@pytest.mark.parametrize(
    ("config", "names", "layout"),
    [
        ({"model_type": "xlm-roberta"}, XLMR_NAMES, "xlm-roberta"),
        ({"model_type": "roberta"}, XLMR_NAMES, "xlm-roberta"),
        ({"architectures": ["XLMRobertaForSequenceClassification"]}, XLMR_NAMES, "xlm-roberta"),
        # jina-reranker-v2 declares xlm-roberta: its fused names decide.
        ({"model_type": "xlm-roberta"}, frozenset({"roberta.encoder.layers.0.mixer.Wqkv.weight"}), "jina-v2"),
        ({"model_type": "bert"}, frozenset({"bert.encoder.layer.0.attention.self.query.weight"}), "bert"),
        # JinaBERT declares bert: its ALiBi config or gated feed-forward decides.
        ({"model_type": "bert", "position_embedding_type": "alibi"}, frozenset(), "jina-bert"),
        ({"model_type": "bert"}, frozenset({"bert.encoder.layer.0.mlp.gated_layers.weight"}), "jina-bert"),
        ({"model_type": "new"}, frozenset(), "gte"),
        ({"model_type": "gte"}, frozenset(), "gte"),
        # Qwen3-Reranker, the decoder family: model_type, else its architecture.
        ({"model_type": "qwen3", "architectures": ["Qwen3ForCausalLM"]}, QWEN3_NAMES, "qwen3"),
        ({"architectures": ["Qwen3ForCausalLM"]}, QWEN3_NAMES, "qwen3"),
    ],
)
def test_checkpoint_layouts_are_recognised(config: dict[str, Any], names: frozenset[str], layout: str) -> None:
    assert families.checkpoint_layout(config, names, "ckpt")[1].name == layout


def test_unknown_and_ambiguous_checkpoints_are_refused() -> None:
    with pytest.raises(CheckpointError, match=r"ckpt: unsupported model_type 'llama'.*supported: xlm-roberta"):
        families.checkpoint_layout({"model_type": "llama"}, frozenset(), "ckpt")
    both = frozenset({"x.mixer.Wqkv.weight", "x.mlp.up_gate_proj.weight"})
    with pytest.raises(CheckpointError, match=r"several layouts \(jina-v2, gte\)"):
        families.checkpoint_layout({}, both, "ckpt")


@pytest.mark.parametrize(
    ("architecture", "tokenizer", "family"),
    [
        ("bert", "t5", "xlm-roberta"),
        ("bert", "bert", "bert"),
        ("bert", "gpt2", "bert"),
        ("jina-bert-v2", "gpt2", "jina-bert"),
        ("new", "t5", "gte"),
        ("qwen3", "gpt2", "qwen3"),
    ],
)
def test_gguf_layouts_are_recognised(architecture: str, tokenizer: str, family: str) -> None:
    assert families.gguf_layout(architecture, tokenizer, "f.gguf")[0].name == family


def test_unknown_gguf_architecture() -> None:
    with pytest.raises(GgufError, match=r"'llama' is not a supported reranker \(bert, jina-bert-v2, new, qwen3\)"):
        families.gguf_layout("llama", "gpt2", "f.gguf")


def test_the_registry_lists_every_family() -> None:
    assert [family.name for family in families.FAMILIES] == ["xlm-roberta", "bert", "jina-bert", "gte", "qwen3"]
    layouts = [layout.name for family in families.FAMILIES for layout in family.checkpoints]
    assert layouts == ["xlm-roberta", "jina-v2", "bert", "jina-bert", "gte", "qwen3"]
    assert [e.name for e in families.by_name("qwen3").catalog] == [
        "Qwen3-Reranker-0.6B",
        "Qwen3-Reranker-4B",
        "Qwen3-Reranker-8B",
    ]


def test_the_decoder_family_is_known_by_its_registration_alone(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Without its line in FAMILIES, nothing recognises Qwen3: neither reader, nor the catalog."""
    config = {"model_type": "qwen3", "architectures": ["Qwen3ForCausalLM"], "num_hidden_layers": 1}
    (tmp_path / "config.json").write_text(json.dumps(config))
    save_file({name: np.ones((4, 8), np.float32) for name in QWEN3_NAMES}, str(tmp_path / "model.safetensors"))
    small_gguf(tmp_path / "q.gguf", "qwen3", 1, "token_embd.weight")
    monkeypatch.setattr(families, "FAMILIES", tuple(f for f in families.FAMILIES if f.name != "qwen3"))
    with pytest.raises(CheckpointError, match="unsupported model_type 'qwen3'"):
        load_checkpoint(str(tmp_path))
    with pytest.raises(GgufError, match="'qwen3' is not a supported reranker"):
        load_gguf_bundle(GgufFile.open(tmp_path / "q.gguf"), progress=lambda _: None)
    assert not [e for e in families.catalog_entries() if e.architecture == "qwen3"]


def test_the_catalog_is_the_families_entries() -> None:
    entries = [entry for family in families.FAMILIES for entry in family.catalog]
    assert list(CATALOG.values()) == entries and len(CATALOG) == len(entries)
    assert all(entry.architecture in {f.name for f in families.FAMILIES} for entry in entries)


# --- a family that is not an encoder -------------------------------------------------------------


@dataclass(frozen=True)
class ToySpec:
    family: str
    num_layers: int
    hidden: int
    max_length: int
    pad_id: int = 0
    type_ids_input: bool = False

    def to_json(self) -> dict:
        return asdict(self)


def _toy_checkpoint(ck: Checkpoint) -> Read:
    weights = {"lm_head": np.asarray(ck.load()["lm_head.weight"], dtype=np.float32)}
    spec = ToySpec("toy", ck.config.integer("num_hidden_layers"), weights["lm_head"].shape[1], 32)
    return Read(spec, weights, ["read by the toy family"])


def _toy_gguf(f: GgufFile) -> Read:
    weights = {"lm_head": f.tensors()["output.weight"]}
    return Read(ToySpec("toy", int(f.key("block_count")), weights["lm_head"].shape[1], 32), weights)


def _checked(spec: Any, weights: dict[str, np.ndarray], where: str, error: type[Exception]) -> None:
    if weights["lm_head"].shape[1] != spec.hidden:
        raise error(f"{where}: bad lm_head")


def _unused(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("not reached by reading")


TOY = ModelFamily(
    name="toy",
    checkpoints=(CheckpointLayout("toy", _toy_checkpoint, model_types=("toy",), architectures=("ToyForCausalLM",)),),
    ggufs=(GgufLayout("toy", _toy_gguf, _unused, tokenizer_models=("gpt2",)),),
    build_graph=_unused,
    graph_facts=_unused,
    pair_template=_unused,
    check=_checked,
    reference=_unused,
    catalog=(CatalogEntry("toy-reranker", "toy/reranker", "toy/reranker-GGUF", "toy", "1M", 32, "mit"),),
)


@pytest.fixture
def with_toy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(families, "FAMILIES", (*families.FAMILIES, TOY))


def test_a_registered_family_reads_checkpoints(with_toy: None, tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "toy", "num_hidden_layers": 3}))
    save_file({"lm_head.weight": np.ones((5, 8), np.float32)}, str(tmp_path / "model.safetensors"))
    loaded = load_checkpoint(str(tmp_path))
    assert loaded.spec == ToySpec("toy", 3, 8, 32) and loaded.layout == "toy"
    assert loaded.notes == ["read by the toy family"] and families.of(loaded) is TOY
    assert "toy-reranker" in [entry.name for entry in families.catalog_entries()]


def test_a_registered_family_reads_ggufs(with_toy: None, tmp_path: Path) -> None:
    small_gguf(tmp_path / "toy.gguf", "toy", 2, "output.weight", rows=5)
    loaded = load_gguf(GgufFile.open(tmp_path / "toy.gguf"))
    assert loaded.spec == ToySpec("toy", 2, 8, 32) and families.of(loaded) is TOY
