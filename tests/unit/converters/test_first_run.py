"""What a first run is told when the source is wrong: a mistyped catalog name, no Hub access,
a missing .gguf file; and the served name a .gguf file gets."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rerank.converters import catalog, cli
from rerank.converters.catalog import CATALOG, resolve
from rerank.converters.errors import SourceError
from rerank.converters.hf_checkpoint import download_failed
from tests.support import REPO
from tests.support.processes import free_port

needs_convert = pytest.mark.skipif(bool(cli.missing_packages(("convert",))), reason="needs the [convert] extra")


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


def convert_offline(tmp_path: Path, source: str) -> str:
    """``rerank-convert source`` against a Hub that cannot be reached (a closed loopback port, an
    empty cache): the real huggingface_hub, its real error. The error line it prints."""
    env = {**os.environ, "HF_ENDPOINT": f"http://127.0.0.1:{free_port()}", "HF_HOME": str(tmp_path / "hf")}
    result = subprocess.run(
        [sys.executable, "-m", "rerank.converters.cli", source, "--out", str(tmp_path / "models")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("rerank-convert: error:")]
    assert "Traceback" not in result.stderr
    return line.removeprefix("rerank-convert: error: ")


@pytest.mark.parametrize("source", ["bge-reranker-v2-m3", "BAAI/bge-reranker-v2-m3"])
@needs_convert
def test_offline_says_so_in_whole_sentences_and_what_to_do(tmp_path: Path, source: str) -> None:
    message = convert_offline(tmp_path, source)
    assert message.startswith(
        "could not download 'BAAI/bge-reranker-v2-m3': this machine cannot reach the Hugging Face Hub, and the "
        "model is not in its local cache ("
    )
    assert "did you mean" not in message  # the name is right: the network is not
    # The library's own account, whole (it ends with a full stop), then the next steps.
    assert "Please check your internet connection and try again.)" in message
    assert message.endswith(
        "Offline, build the demo reranker (make serve MODEL=demo, or rerank-convert demo) or convert a checkpoint "
        "folder or .gguf file you have (make serve MODEL=/path/to/checkpoint, or rerank-convert /path/to/checkpoint)."
    )


@needs_convert
def test_offline_with_a_mistyped_repo_id_suggests_the_right_one(tmp_path: Path) -> None:
    message = convert_offline(tmp_path, "BAAI/bge-reranker-v2m3")
    assert message.startswith("could not download 'BAAI/bge-reranker-v2m3' (did you mean BAAI/bge-reranker-v2-m3?):")


def test_a_missing_or_gated_repository_says_what_to_do() -> None:
    httpx = pytest.importorskip("httpx")
    errors = pytest.importorskip("huggingface_hub.errors", reason="needs the [convert] extra")
    url = "https://huggingface.co/api/models/BAAI/bge-reranker-v2m3/revision/main"
    response = httpx.Response(401, request=httpx.Request("GET", url))
    missing = download_failed("BAAI/bge-reranker-v2m3", errors.RepositoryNotFoundError("401", response=response))
    assert missing == (
        "'BAAI/bge-reranker-v2m3' is not a repository on the Hugging Face Hub (did you mean BAAI/bge-reranker-v2-m3?), "
        "or it is private. Check the repo id (rerank-convert --list shows the supported models), or log in "
        "(hf auth login) for a private one."
    )
    gated = download_failed("someone/gated", errors.GatedRepoError("403", response=response))
    assert gated.startswith("'someone/gated' is a gated repository") and gated.endswith("then run this again.")


def test_the_name_typed_is_never_suggested() -> None:
    for entry in CATALOG.values():
        assert entry.name not in catalog.closest(entry.name)
        assert entry.hub_repo not in catalog.closest(entry.hub_repo)
    assert catalog.closest("baai/bge-reranker-v2-m3") == ["BAAI/bge-reranker-v2-m3"]  # case is a difference


def _last_error(capsys: pytest.CaptureFixture[str]) -> str:
    return capsys.readouterr().err.splitlines()[-1]


def test_a_missing_gguf_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("gguf", reason="needs the [convert] extra")
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
