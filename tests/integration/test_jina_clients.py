"""A real third-party client of Jina's rerank API, unchanged but for its base URL: Haystack's
``JinaRanker`` (``jina-haystack``) against ``/v1/rerank`` through the real Envoy ranks as the
API does and carries our scores (the model's logits)."""

from __future__ import annotations

import os

import pytest

from tests.support import API_KEY
from tests.support.calls import best_first, jina_logits

os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")  # no usage reports from the test

from haystack import Document  # after the telemetry switch
from haystack.utils import Secret
from haystack_integrations.components.rankers.jina import JinaRanker

QUERY = "What is a panda?"
TEXTS = [
    "hi",
    "it is a bear",
    "The giant panda (Ailuropoda melanoleuca) is a bear species endemic to China.",
    "Пан­да — млекопитающее. 熊猫 是 中国 的 动物。",
]


@pytest.mark.parametrize("top_k", [None, 2])
def test_haystack_jina_ranker(stack, rest, top_k):
    ranker = JinaRanker(
        model="bert-tiny", api_key=Secret.from_token(API_KEY), base_url=f"{stack.rest}/v1/rerank", top_k=top_k
    )
    documents = [Document(content=t, meta={"i": i}) for i, t in enumerate(TEXTS)]
    ranked = ranker.run(query=QUERY, documents=documents)["documents"]
    logits = jina_logits(rest, "bert-tiny", QUERY, TEXTS)
    assert [d.meta["i"] for d in ranked] == best_first(logits)[: top_k or len(TEXTS)]
    assert [d.score for d in ranked] == [logits[d.meta["i"]] for d in ranked]
    assert len({round(v, 4) for v in logits.values()}) == len(TEXTS)  # the order check can fail
