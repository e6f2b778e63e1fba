"""What a first run is told when the source is wrong: a mistyped catalog name, no Hub access,
a missing .gguf file; and the served name a .gguf file gets."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

# The converter's unit tests need its [convert] extra (not torch); without it they skip.
pytest.importorskip("onnx", reason="needs the [convert] extra")

from rerank.converters import catalog, cli
from rerank.converters.catalog import CATALOG, resolve
from rerank.converters.errors import CheckpointError, SourceError
from rerank.converters.hf_checkpoint import fetch
from tests.support import REPO


def test_catalog_names_and_repo_ids_resolve() -> None:
    assert resolve("bge-reranker-v2-m3") == ("BAAI/bge-reranker-v2-m3", CATALOG["bge-reranker-v2-m3"])
    assert resolve("BAAI/bge-reranker-v2-m3")[1] is CATALOG["bge-reranker-v2-m3"]
    assert resolve("someone/some-reranker") == ("someone/some-reranker", None)
    assert resolve("x-Q8_0.gguf") == ("x-Q8_0.gguf", None)  # the file check comes later, with its own error


def test_an_unknown_name_suggests_the_closest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SourceError, match=r"did you mean bge-reranker-v2-m3 or bce-reranker-base_v1\?") as error:
        resolve("bge-reranker-v2")
    assert "rerank-convert --list" in str(error.value)
    with pytest.raises(SourceError, match=r"did you mean jina-reranker-v2-base-multilingual"):
        resolve("JINA-reranker-v2")
    with pytest.raises(SourceError) as error:
        resolve("xyzzy")
    assert "did you mean" not in str(error.value)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my-checkpoint").mkdir()
    assert resolve("my-checkpoint") == ("my-checkpoint", None)  # a local folder is not a name


def test_offline_download_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    def offline(*args: object, **kwargs: object) -> str:
        raise OSError("We couldn't connect to 'https://huggingface.co'.\nCheck your connection.")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(CheckpointError) as error:
        fetch("BAAI/bge-reranker-v2m3")
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("could not download 'BAAI/bge-reranker-v2m3' from the Hugging Face Hub (OSError: We")
    assert "(did you mean BAAI/bge-reranker-v2-m3?)" in message
    assert "rerank-convert /path/to/checkpoint" in message and "make serve MODEL=/path/to/checkpoint" in message
    assert "rerank-convert --list" in message


def _last_error(capsys: pytest.CaptureFixture[str]) -> str:
    return capsys.readouterr().err.splitlines()[-1]


def test_a_missing_gguf_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([str(tmp_path / "absent.gguf")]) == 1
    assert _last_error(capsys) == f"rerank-convert: error: {tmp_path / 'absent.gguf'}: no such GGUF file"
    (tmp_path / "text.gguf").write_text("not a GGUF")
    assert cli.main([str(tmp_path / "text.gguf")]) == 1
    assert _last_error(capsys).startswith(f"rerank-convert: error: {tmp_path / 'text.gguf'}: not a readable GGUF")


def test_unknown_name_through_the_cli(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["gte-multilingual-reranker"]) == 1
    assert _last_error(capsys).startswith(
        "rerank-convert: error: 'gte-multilingual-reranker' is neither a supported model's name "
        "(did you mean gte-multilingual-reranker-base?)"
    )


@pytest.mark.parametrize(
    ("source", "name"),
    [
        ("/models/bge-reranker-v2-m3-Q8_0.gguf", "bge-reranker-v2-m3-Q8_0"),
        ("jina.v1.F16.GGUF", "jina-v1-F16"),
        ("./checkpoints/my.reranker/", "my-reranker"),
        ("someone/some-reranker", "some-reranker"),
    ],
)
def test_served_name(source: str, name: str) -> None:
    assert cli.served_name(source, None) == name


def test_served_name_of_a_catalog_entry() -> None:
    assert cli.served_name("BAAI/bge-reranker-v2-m3", CATALOG["bge-reranker-v2-m3"]) == "bge-reranker-v2-m3"


@pytest.mark.parametrize(
    ("model", "name"),
    [("/data/bge-reranker-v2-m3-f16.gguf", "bge-reranker-v2-m3-f16"), ("/data/ckpt/", "ckpt"), ("BAAI/bge-x", "bge-x")],
)
def test_makefile_name(model: str, name: str) -> None:
    """``make serve MODEL=...`` serves a .gguf file under its name without the suffix."""
    dry_run = subprocess.run(
        ["make", "-n", "--no-print-directory", "-C", str(REPO), "model", f"MODEL={model}", "MODELS_DIR=/nowhere"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f'--name "{name}"' in dry_run


def test_closest_uses_repo_ids_for_repo_ids() -> None:
    assert catalog.closest("jinaai/jina-reranker-v1-turbo") == [
        "jinaai/jina-reranker-v1-turbo-en",
        "jinaai/jina-reranker-v1-tiny-en",
    ]
