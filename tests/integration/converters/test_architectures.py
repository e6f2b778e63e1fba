"""Every architecture, converted from its published checkpoint layout, scores like the
independent reference of its family (:mod:`tests.reference`): transformers (XLM-R, BERT, jina-v2
renamed to XLM-R), a numpy JinaBERT written from the published description, and GTE's remote
code restated in plain torch."""

from __future__ import annotations

import json
import random

import grpc
import numpy as np
import pytest
import torch

from rerank.converters.convert import convert
from rerank.converters.sources import load_source
from rerank.converters.testing.checkpoints import KINDS
from rerank.converters.testing.corpus import multilingual_strings
from rerank.service.backends.base import pad
from rerank.service.backends.onnx import OnnxBackend
from rerank.service.core.tokenization import PairEncoder
from rerank.service.model_folder import read_model_folder
from tests.reference import reference_scores
from tests.support import AUTH
from tests.support.servers import InProcessServer, server_settings


@pytest.fixture(scope="module")
def converted(checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("arch-models")
    for kind in KINDS:
        bundle = load_source(str(checkpoint(kind)), progress=lambda _: None)
        convert(bundle.loaded, name=kind, out_dir=out, source_folder=bundle.folder, progress=lambda _: None)
    return out


def _hf_tokenizer(folder):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False)


def sample_pairs(n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    texts = multilingual_strings(400, seed=seed)
    queries = [t for t in texts if 0 < len(t) < 40]
    pairs = [(rng.choice(queries), rng.choice(texts)) for _ in range(n)]
    pairs.append(("long", " ".join(texts[:40])))  # past 128 tokens: the truncation path where the window is 128
    return pairs


@pytest.mark.parametrize("kind", KINDS)
def test_batched_onnx_matches_reference(kind, converted, checkpoint):
    folder = converted / kind
    config = read_model_folder(folder)
    assert config.verification["max_abs_diff"] <= 1e-4
    pairs = sample_pairs(24, seed=KINDS.index(kind))
    encoder = PairEncoder(folder / "tokenizer.json", config.template, config.max_length)
    backend = OnnxBackend(folder, config, device="cpu")
    # One batch of varied lengths: padding must not leak into any score.
    encoded = [encoder.encode(q, [d]).pairs[0] for q, d in pairs]
    ours = backend.run(pad(encoded, config.template.pad_id, config.type_ids_input))
    expected = reference_scores(kind, checkpoint(kind), pairs)
    assert np.std(expected) > 0.1
    np.testing.assert_allclose(ours, expected, atol=1e-4, rtol=0)


def test_model_folder_records_provenance(converted):
    for kind in KINDS:
        data = json.loads((converted / kind / "rerank.json").read_text())
        assert data["source"]["format"] == "hf" and data["source"]["sha256"]
        assert data["spec"]["num_layers"] == 2
    assert json.loads((converted / "jina-v1" / "rerank.json").read_text())["spec"]["positions"] == "alibi"
    assert json.loads((converted / "gte" / "rerank.json").read_text())["spec"]["positions"] == "rope"


@pytest.fixture(scope="module")
def all_models_server(converted):
    with InProcessServer(server_settings(converted)) as server, grpc.insecure_channel(server.target) as channel:
        yield channel


def test_one_server_serves_every_architecture(all_models_server, checkpoint):
    from rerank.service.protocol import rerank_pb2, rerank_pb2_grpc

    stub = rerank_pb2_grpc.RerankServiceStub(all_models_server)
    cards = {c.id: c for c in stub.ListModels(rerank_pb2.ListModelsRequest(), metadata=AUTH, timeout=30).data}
    assert set(cards) == set(KINDS)
    assert {cards[k].architecture for k in KINDS} == {"xlm-roberta", "bert", "jina-bert", "gte"}
    assert cards["gte"].max_length == 8192 and cards["jina-v2"].max_length == 1024
    assert all(c.precision == "fp32" for c in cards.values())
    docs = ["the giant panda eats bamboo", "a red car", "熊猫吃竹子", ""]
    for kind in KINDS:
        request = rerank_pb2.RerankRequest(model=kind, query="what do pandas eat?")
        for d in docs:
            request.documents.add().string_value = d
        reply = stub.Rerank(request, metadata=AUTH, timeout=60)
        expected = reference_scores(kind, checkpoint(kind), [("what do pandas eat?", d) for d in docs])
        got = {r.index: r.relevance_score for r in reply.results}
        assert max(abs(got[i] - expected[i]) for i in range(len(docs))) <= 1e-4, kind


def test_sliding_windows_take_the_best_window(all_models_server, checkpoint):
    from rerank.service.protocol import rerank_pb2, rerank_pb2_grpc

    stub = rerank_pb2_grpc.RerankServiceStub(all_models_server)
    query = "panda"
    long_doc = " ".join(multilingual_strings(300, seed=7)[:150])
    request = rerank_pb2.RerankRequest(model="xlmr", query=query, long_documents="window")
    request.documents.add().string_value = long_doc
    request.documents.add().string_value = "short"
    reply = stub.Rerank(request, metadata=AUTH, timeout=60)
    by = {r.index: r for r in reply.results}
    assert by[0].windows > 1 and by[0].truncated_tokens == 0 and by[1].windows == 1
    # Independent windowing: HF tokens of the document, cut into windows of the room left.
    tok = _hf_tokenizer(checkpoint("xlmr"))
    doc_ids = tok(long_doc, add_special_tokens=False)["input_ids"]
    q_ids = tok(query, add_special_tokens=False)["input_ids"]
    room = 128 - 4 - len(q_ids)
    step = room - room // 4
    windows = [doc_ids[s : s + room] for s in range(0, max(1, len(doc_ids) - room + step), step)]
    assert by[0].windows == len(windows)
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(str(checkpoint("xlmr")), num_labels=1).eval()
    with torch.inference_mode():
        scores = [float(model(input_ids=torch.tensor([[0, *q_ids, 2, 2, *w, 2]])).logits[0, 0]) for w in windows]
    assert abs(by[0].relevance_score - max(scores)) <= 1e-4
    truncated = stub.Rerank(
        rerank_pb2.RerankRequest(model="xlmr", query=query, documents=request.documents), metadata=AUTH, timeout=60
    )
    cut = {r.index: r for r in truncated.results}[0]
    assert cut.windows == 1 and cut.truncated_tokens == len(doc_ids) - room
    assert abs(cut.relevance_score - scores[0]) <= 1e-4
