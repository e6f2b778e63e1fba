"""Model folders are checked before they serve: a folder that disagrees with its graph, a damaged
or replaced file, a graph that does not score as it did at conversion — each is refused at
start-up with one line naming the file and the reason, and the process exits non-zero."""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from rerank.gateway.processes import Child, grpc_serving
from tests.support import API_KEY
from tests.support.processes import free_port


@pytest.fixture
def folder(models_dir, tmp_path) -> Path:
    """A fresh copy of the converted bert-tiny folder, to break."""
    shutil.copytree(models_dir / "bert-tiny", tmp_path / "models" / "bert-tiny")
    return tmp_path / "models" / "bert-tiny"


def edit_config(folder: Path, change: Callable[[dict], None]) -> None:
    path = folder / "rerank.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def serve(folder: Path, *extra: str) -> tuple[int | None, str]:
    """Starts rerank-serve on ``folder``'s models directory; returns its exit status (None if it
    started serving) and its output."""
    log = folder.parent.parent / "serve.log"
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "rerank.service",
        "--models-dir",
        str(folder.parent),
        "--grpc-port",
        str(port),
        *extra,
    ]
    child = Child("serve", argv, env={"RERANK_API_KEYS": API_KEY}, log_path=log).start()
    # Until it refuses (exits) or serves (reports SERVING): a check runs before the port opens.
    deadline = time.monotonic() + 120
    while child.poll() is None and not grpc_serving(port) and time.monotonic() < deadline:
        time.sleep(0.1)
    status = child.poll()
    if status is None:
        child.stop(grace=10)
    return status, log.read_text()


def refusal(output: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith("rerank-serve:")]
    assert len(lines) == 1, output
    assert "Traceback" not in output, output
    return lines[0]


def test_the_converter_records_what_the_checks_need(folder):
    data = json.loads((folder / "rerank.json").read_text())
    assert data["format"] == 3  # 3: variants name their runtime
    assert data["graph"]["vocab_rows"] > 0 and data["graph"]["position_rows"] > data["max_length"] - 1
    assert len(data["check_pairs"]) == 6
    for variant in data["variants"].values():
        assert set(variant["sha256"]) == {variant["file"]}
        assert len(variant["probe_scores"]) == 6


def test_max_length_beyond_the_position_table_is_refused(folder):
    edit_config(folder, lambda d: d.update(max_length=d["graph"]["position_rows"] + 1))
    status, output = serve(folder)
    assert status == 1
    line = refusal(output)
    assert str(folder / "rerank.json") in line and "position table" in line


def test_a_pad_id_outside_the_vocabulary_is_refused(folder):
    edit_config(folder, lambda d: d["template"].update(pad_id=d["graph"]["vocab_rows"] + 5))
    status, output = serve(folder)
    assert status == 1
    assert "outside the graph's vocabulary" in refusal(output)


def test_a_damaged_graph_file_is_refused(folder):
    variant = json.loads((folder / "rerank.json").read_text())["variants"]["fp32-fused"]["file"]
    path = folder / variant
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # truncated
    # Pinned: the server checks the variants it loads, and with the converter's timing table (this
    # CPU's) it loads only the fastest, which need not be fp32-fused.
    status, output = serve(folder, "--variant", "fp32-fused")
    assert status == 1
    line = refusal(output)
    assert str(path) in line and "SHA-256" in line


def test_a_damaged_variant_is_refused_when_chosen_and_ignored_when_not(folder):
    path = folder / "model.fp16.onnx"
    path.write_bytes(b"\0" * 100)
    status, output = serve(folder, "--variant", "fp16")
    assert status == 1 and "SHA-256" in refusal(output)
    status, output = serve(folder)  # the default variant does not read it
    assert status is None, output


def test_a_replaced_graph_that_scores_differently_is_refused(folder, models_dir):
    # Another model's graph, with its checksum updated as a careless copy would: only the
    # check pairs can tell.
    other = models_dir / "xlmr-tiny" / "model.fused.onnx"
    shutil.copy(other, folder / "model.fused.onnx")

    def rechecksum(d: dict) -> None:
        from rerank.service.model_folder import file_sha256

        d["variants"]["fp32-fused"]["sha256"] = {"model.fused.onnx": file_sha256(folder / "model.fused.onnx")}

    edit_config(folder, rechecksum)
    status, output = serve(folder, "--variant", "fp32-fused", "--verify-checksums", "--insecure-no-auth")
    assert status == 1
    line = refusal(output)
    assert "model.fused.onnx" in line and ("check pairs" in line)


def test_debug_shows_the_traceback(folder):
    edit_config(folder, lambda d: d.update(max_length=d["graph"]["position_rows"] + 1))
    status, output = serve(folder, "--log-level", "debug")
    assert status == 1 and "Traceback" in output


def test_a_sound_folder_serves(folder):
    status, output = serve(folder)
    assert status is None, output
    assert "check pairs within" in output
