"""Malformed model files end as one line naming the file and the problem, within bounded memory.

Over a hundred crafted files (:mod:`tests.integration.converters.crafted`: GGUF truncations at
every kind of field, counts and lengths far beyond the file, unknown types, absurd and
inconsistent sizes, unusable tokenizers; ``config.json`` with zero, negative, huge and mistyped
sizes; broken tensor files) are converted by ``rerank-convert``'s code path under a 1 GiB
address-space limit: all in one process (:mod:`~tests.integration.converters.crafted_runner`),
and a handful through the real command, each in a process of its own. Every one must exit with
status 1 and one error line, no traceback and no native panic.
"""

from __future__ import annotations

import json
import re
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from rerank.converters.sources import load_source
from tests.integration.converters.crafted import Case, base_gguf, checkpoint_cases, semantic_cases, structural_cases
from tests.support import REPO

LIMIT = 1 << 30
"""Address space of a conversion of a crafted file: the runtime needs ~0.8 GiB of it."""
PROGRESS = re.compile(r"\d\d:\d\d:\d\d ")
ERROR = "rerank-convert: error: "
REAL_COMMAND = (
    "the probe: a 2^62-element array in 96 bytes",
    "cut inside the first tensor_offset",
    "item_count tokenizer.ggml.tokens = 4611686018427387904",
    "zero heads",
    "heads not dividing the hidden size",
    "negative hidden size",
    "safetensors header length 2^62",
    "charsmap whose root leaves the trie",
)


@pytest.fixture(scope="module")
def bases(checkpoint, qwen3_checkpoint, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("bases")
    return {
        "gguf": base_gguf(checkpoint("xlmr"), out / "xlmr.gguf"),
        "xlmr": checkpoint("xlmr"),
        "gte": checkpoint("gte"),
        "qwen3": qwen3_checkpoint(),
    }


@pytest.fixture(scope="module")
def cases(bases, tmp_path_factory) -> list[Case]:
    out = tmp_path_factory.mktemp("crafted")
    crafted = structural_cases(bases["gguf"], out / "gguf")
    crafted += semantic_cases(bases["xlmr"], out / "semantic")
    crafted += checkpoint_cases(bases["xlmr"], bases["gte"], bases["qwen3"], out / "checkpoints")
    return crafted


def one_line_problem(case: Case, status: object, output: str) -> str | None:
    """What is wrong with how the conversion of ``case`` ended, or None."""
    lines = output.splitlines()
    errors = [line for line in lines if line.startswith(ERROR)]
    others = [line for line in lines if not line.startswith(ERROR) and not PROGRESS.match(line)]
    if status != 1:
        return f"status {status}"
    if len(errors) != 1 or lines[-1] != errors[0]:
        return f"{len(errors)} error lines"
    if others:
        return f"other output: {others[0][:200]}"
    if case.path.name not in errors[0]:
        return "the error does not name the file"
    return None


def test_the_bases_are_valid(bases) -> None:
    """Each case is one defect away from a file the converter reads."""
    for source in bases.values():
        assert load_source(str(source), progress=lambda _: None, check_memory=False).loaded.weights


def test_every_crafted_file_is_one_line(cases, tmp_path) -> None:
    assert len(cases) >= 100
    result = subprocess.run(
        [sys.executable, "-m", "tests.integration.converters.crafted_runner", str(LIMIT), str(tmp_path / "models")]
        + [str(case.path) for case in cases],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    done = [json.loads(line) for line in result.stdout.splitlines()]
    crashed = cases[len(done)].name if len(done) < len(cases) else None
    assert crashed is None, f"the runner died converting {crashed!r}: {result.stderr[-2000:]}"
    problems = {}
    for case, outcome in zip(cases, done, strict=True):
        problem = one_line_problem(case, outcome["status"], outcome["output"])
        if problem:
            problems[case.name] = f"{problem}\n    {outcome['output'].strip()[-600:]}"
    assert not problems, f"{len(problems)} of {len(cases)}:\n" + "\n".join(f"{k}: {v}" for k, v in problems.items())
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").iterdir())
    print(f"{len(cases)} crafted files, each one error line")


def _limited() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (LIMIT, LIMIT))


@pytest.mark.parametrize("name", REAL_COMMAND)
def test_through_the_real_command(name, cases, tmp_path) -> None:
    case = next(c for c in cases if c.name == name)
    command = Path(sys.executable).with_name("rerank-convert")
    result = subprocess.run(
        [str(command), str(case.path), "--out", str(tmp_path / "models")],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=_limited,
    )
    assert result.stdout == ""
    assert one_line_problem(case, result.returncode, result.stderr) is None, result.stderr
