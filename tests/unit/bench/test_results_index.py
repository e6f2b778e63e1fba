"""bench/results/: one record per benchmark, and an index written from the records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.results import save, write_index


def test_save_replaces_the_previous_run_and_indexes_it_with_its_companions(tmp_path: Path) -> None:
    record = {"date": "2026-12-01 10:00", "command": "python -m bench.run --models minilm-ce", "cpu": {"line": "Xeon"}}
    save("bench-minilm-ce", {**record, "figure": 1}, tmp_path)
    (tmp_path / "bench-minilm-ce.png").write_bytes(b"png")
    save("bench-minilm-ce", {**record, "date": "2026-12-02 11:00", "figure": 2}, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md", "bench-minilm-ce.json", "bench-minilm-ce.png"]
    assert json.loads((tmp_path / "bench-minilm-ce.json").read_text())["figure"] == 2
    index = (tmp_path / "README.md").read_text()
    assert (
        "| `bench-minilm-ce.json`, `bench-minilm-ce.png` | 2026-12-02 11:00 | "
        "`python -m bench.run --models minilm-ce` | Xeon |" in index
    )


def test_a_record_must_say_when_how_and_on_what_cpu(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cpu"):
        save("x", {"date": "today", "command": "python -m bench.x"}, tmp_path)
    assert not (tmp_path / "x.json").exists()


def test_the_index_in_the_tree_lists_every_record_there() -> None:
    results = Path(__file__).resolve().parents[3] / "bench" / "results"
    committed = (results / "README.md").read_text()
    assert committed == write_index_text(results)


def write_index_text(results: Path) -> str:
    """What write_index would write for ``results``, without writing it."""
    import shutil
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "results"
        shutil.copytree(results, copy)
        return write_index(copy).read_text()
