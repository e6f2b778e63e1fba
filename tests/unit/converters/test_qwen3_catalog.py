"""The Qwen3-Reranker catalog entries: names resolve to the Hub repos, a near miss is suggested,
and ``--list`` states what a first run costs."""

from __future__ import annotations

import pytest

# The converter's unit tests need its [convert] extra (not torch); without it they skip.
pytest.importorskip("onnx", reason="needs the [convert] extra")

from rerank.converters import cli
from rerank.converters.catalog import CATALOG, resolve
from rerank.converters.errors import SourceError


@pytest.mark.parametrize("size", ["0.6B", "4B", "8B"])
def test_names_resolve_to_the_hub(size: str) -> None:
    entry = CATALOG[f"Qwen3-Reranker-{size}"]
    assert resolve(f"Qwen3-Reranker-{size}") == (f"Qwen/Qwen3-Reranker-{size}", entry)
    assert resolve(f"Qwen/Qwen3-Reranker-{size}")[1] is entry
    assert entry.architecture == "qwen3" and entry.max_length == 8192 and entry.gguf_repo


def test_a_near_miss_is_suggested() -> None:
    with pytest.raises(SourceError, match=r"did you mean Qwen3-Reranker-0\.6B"):
        resolve("qwen3-reranker-0.6")


def test_the_listing_states_the_first_run_cost(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--list"]) == 0
    out = capsys.readouterr().out
    for entry in CATALOG.values():
        if entry.architecture == "qwen3":
            assert f"    {entry.notes}" in out.splitlines()
            assert "takes an instruction" in entry.notes and "of memory" in entry.notes
