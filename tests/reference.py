"""Independent reference scores for the tests: transformers, straight from the checkpoint.

Deliberately shares no code with the converter or the service.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np


@functools.lru_cache(maxsize=8)
def _load(folder: str):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=1).float().eval()
    return AutoTokenizer.from_pretrained(folder), model


def transformers_scores(folder: Path, query: str, documents: list[str], max_length: int | None = None) -> np.ndarray:
    """Logits of ``AutoModelForSequenceClassification`` for each (query, document), one pair at a time."""
    import torch

    tokenizer, model = _load(str(folder))
    limit = max_length or (
        model.config.max_position_embeddings
        - (model.config.pad_token_id + 1 if model.config.model_type == "xlm-roberta" else 0)
    )
    out = []
    with torch.inference_mode():
        for doc in documents:
            # List form, as sentence-transformers' CrossEncoder calls it: an empty document is then
            # still a pair (a bare string pair with "" collapses to a single sequence).
            enc = tokenizer([query], [doc], truncation="only_second", max_length=limit, return_tensors="pt")
            out.append(float(model(**enc).logits.reshape(-1)[0]))
    return np.asarray(out)
