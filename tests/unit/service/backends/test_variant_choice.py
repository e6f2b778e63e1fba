"""Which variants the server may serve on this machine, and the start-up timing that picks one
(no model files: configurations and fake backends)."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest

from rerank.service.backends import loader
from rerank.service.backends.base import Batch
from rerank.service.backends.cpu_features import CpuFeatures
from rerank.service.model_folder import GATE_VERSION, ModelFolderConfig, PairTemplate, Variant

AMX = CpuFeatures("Xeon", amx_bf16=True, amx_int8=True, amx_tile=True, avx512_bf16=True, avx512_vnni=True, avx2=True)
ZEN5 = CpuFeatures("EPYC", avx512_bf16=True, avx512_vnni=True, avx_vnni=True, avx512f=True, avx2=True)
AVX2 = CpuFeatures("Haswell", avx2=True)

PASSED = {"version": GATE_VERSION, "passed": True}
FAILED = {"version": GATE_VERSION, "passed": False}
OLD_PASSED = {"spearman": 0.995, "same_top3": True, "passed": True}
"""What a format-2 folder recorded: the 13-probe gate, not the per-query one."""


def config(**variants: Variant) -> ModelFolderConfig:
    return ModelFolderConfig(
        name="m",
        architecture="bert",
        max_length=64,
        template=PairTemplate(((101, 0),), ((102, 0),), ((102, 1),)),
        type_ids_input=True,
        variants={"fp32": Variant("model.onnx", "fp32"), **variants},
    )


def ov(precision: str, gate: dict[str, object], file: str = "model.onnx") -> Variant:
    return Variant(file, precision, device="cpu", gate=dict(gate), runtime="openvino")


FOLDER = config(
    **{
        "fp32-fused": Variant("model.fused.onnx", "fp32", fused=True, gate=dict(PASSED)),
        "int8": Variant("model.int8.onnx", "int8", device="cpu", fused=True, gate=dict(FAILED)),
        "fp16": Variant("model.fp16.onnx", "fp16", device="cuda", fused=True, gate=dict(PASSED)),
        "ov-fp32": ov("fp32", PASSED),
        "ov-bf16": ov("bf16", PASSED),
        "ov-int8": ov("int8", PASSED, "model.ov-int8.onnx"),
    }
)


@pytest.fixture
def openvino_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loader, "runtime_available", lambda runtime: True)


@pytest.mark.usefixtures("openvino_installed")
def test_cpu_candidates_are_exact_or_gated_and_native() -> None:
    # fp16 is for CUDA, int8 failed its gate: neither is a CPU candidate.
    assert loader.candidate_variants(FOLDER, variant=None, device="cpu", cpu=AMX) == [
        "fp32-fused",
        "fp32",
        "ov-fp32",
        "ov-bf16",
        "ov-int8",
    ]
    assert loader.candidate_variants(FOLDER, variant=None, device="cpu", cpu=ZEN5)[-2:] == ["ov-bf16", "ov-int8"]
    # AVX2 only: bf16 would be emulated and int8 has no VNNI; only the exact graphs are timed.
    assert loader.candidate_variants(FOLDER, variant=None, device="cpu", cpu=AVX2) == ["fp32-fused", "fp32", "ov-fp32"]


LONG = dataclasses.replace(FOLDER, max_length=8192)
LONG_DECODER = dataclasses.replace(LONG, variants={k: v for k, v in LONG.variants.items() if k != "fp32-fused"})
"""A model reading 8,192 tokens, and one like a decoder's folder: no ONNX Runtime fused graph."""


@pytest.mark.usefixtures("openvino_installed")
def test_a_long_model_is_not_served_by_the_plain_graph_beside_another_exact_one() -> None:
    # Its attention holds every score tensor whole: 9 GB for one 8,192-token pair at bge-m3's shape.
    assert loader.candidate_variants(LONG, variant=None, device="cpu", cpu=AVX2) == ["fp32-fused", "ov-fp32"]
    assert loader.candidate_variants(LONG, variant="fp32", device="cpu", cpu=AVX2) == ["fp32"]  # pinned: served
    assert loader.candidate_variants(LONG_DECODER, variant=None, device="cpu", cpu=AVX2) == ["ov-fp32"]


def test_the_plain_graph_alone_is_served(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loader, "runtime_available", lambda runtime: runtime == "onnxruntime")
    assert loader.candidate_variants(LONG_DECODER, variant=None, device="cpu", cpu=AVX2) == ["fp32"]


@pytest.mark.usefixtures("openvino_installed")
def test_failed_and_old_gates_are_never_chosen_unasked() -> None:
    folder = config(
        **{
            "ov-bf16": ov("bf16", FAILED),  # kept by --no-gate
            "int8": Variant("model.int8.onnx", "int8", device="cpu", gate=dict(OLD_PASSED)),  # format 2
        }
    )
    assert loader.candidate_variants(folder, variant=None, device="cpu", cpu=AMX) == ["fp32"]
    # ...but either serves when asked for by name.
    assert loader.candidate_variants(folder, variant="ov-bf16", device="cpu", cpu=AMX) == ["ov-bf16"]
    assert loader.candidate_variants(folder, variant="int8", device="cpu", cpu=AVX2) == ["int8"]


def test_without_openvino_only_onnx_runtime_variants(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loader, "runtime_available", lambda runtime: runtime == "onnxruntime")
    assert loader.candidate_variants(FOLDER, variant=None, device="cpu", cpu=AMX) == ["fp32-fused", "fp32"]
    with pytest.raises(ValueError, match="openvino"):
        loader.candidate_variants(FOLDER, variant="ov-bf16", device="cpu", cpu=AMX)


@pytest.mark.usefixtures("openvino_installed")
def test_pinned_and_unknown_variants() -> None:
    assert loader.candidate_variants(FOLDER, variant="fp32", device="cpu", cpu=AMX) == ["fp32"]
    with pytest.raises(ValueError, match="no variant 'ov-fp16'"):
        loader.candidate_variants(FOLDER, variant="ov-fp16", device="cpu", cpu=AMX)
    with pytest.raises(ValueError, match="runs on the CPU"):
        loader.candidate_variants(FOLDER, variant="ov-fp32", device="cuda", cpu=AMX)


@pytest.mark.usefixtures("openvino_installed")
def test_cuda_serves_fp16_only_when_it_passed_a_gate() -> None:
    assert loader.candidate_variants(FOLDER, variant=None, device="cuda") == ["fp16"]
    failed = config(
        **{
            "fp32-fused": Variant("model.fused.onnx", "fp32", fused=True),
            "fp16": Variant("model.fp16.onnx", "fp16", device="cuda", gate=dict(FAILED)),
        }
    )
    assert loader.candidate_variants(failed, variant=None, device="cuda") == ["fp32-fused"]
    old = config(fp16=Variant("model.fp16.onnx", "fp16", device="cuda", gate=dict(OLD_PASSED)))
    assert loader.candidate_variants(old, variant=None, device="cuda") == ["fp16"]


class Sleeper:
    """A backend whose every run takes ``seconds``."""

    def __init__(self, key: str, seconds: float, streams: int = 1) -> None:
        self.variant_key, self.seconds, self.streams = key, seconds, streams
        self.provider, self.precision = "fake", "fp32"
        self.shapes: list[tuple[int, ...]] = []

    def run(self, batch: Batch) -> np.ndarray:
        self.shapes.append(batch.input_ids.shape)
        time.sleep(self.seconds)
        return np.zeros(batch.input_ids.shape[0])

    def warm_up(self, most_tokens: int) -> None:
        pass


def test_the_fastest_candidate_wins_and_every_one_is_timed_alike() -> None:
    backends = {"a": Sleeper("a", 0.03), "b": Sleeper("b", 0.005), "c": Sleeper("c", 0.02)}
    choice = loader.time_candidates(backends, FOLDER)  # type: ignore[arg-type]
    assert choice.key == "b" and "fastest of 3" in choice.reason
    assert set(choice.milliseconds) == {"a", "b", "c"}
    assert choice.milliseconds["b"] < choice.milliseconds["c"] < choice.milliseconds["a"]
    assert choice.milliseconds["b"] >= 5.0
    for backend in backends.values():  # one untimed run, then the rounds, on the same batch
        assert backend.shapes == [(loader.TIMING_PAIRS, FOLDER.max_length)] * (1 + loader.TIMING_ROUNDS)


def test_one_candidate_is_not_timed() -> None:
    only = Sleeper("fp32", 0.0)
    choice = loader.time_candidates({"fp32": only}, FOLDER, pinned=True)  # type: ignore[dict-item]
    assert (choice.key, choice.reason, choice.milliseconds, only.shapes) == ("fp32", "pinned by RERANK_VARIANT", {}, [])


def test_timing_stops_after_two_rounds_once_over_its_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loader, "TIMING_BUDGET_SECONDS", 0.0)
    backends = {"a": Sleeper("a", 0.02), "b": Sleeper("b", 0.0)}  # a margin a busy machine cannot erase
    choice = loader.time_candidates(backends, FOLDER)  # type: ignore[arg-type]
    assert choice.key == "b"
    assert [len(b.shapes) for b in backends.values()] == [1 + loader.MIN_ROUNDS] * 2


def with_table(milliseconds: dict[str, float], cpu: CpuFeatures = ZEN5) -> ModelFolderConfig:
    import dataclasses

    table = {"cpu": loader.cpu_signature(cpu), "batch": [32, 64], "threads": 2, "milliseconds": milliseconds}
    return dataclasses.replace(FOLDER, speed=table)


def test_the_converters_timing_table_decides_on_the_cpu_it_was_measured_on() -> None:
    folder = with_table({"fp32-fused": 9.0, "fp32": 8.0, "ov-fp32": 6.0, "ov-bf16": 3.0})
    choice = loader.table_choice(folder, ["fp32-fused", "fp32", "ov-fp32"], ZEN5)
    assert choice is not None and choice.key == "ov-fp32" and "timing table" in choice.reason
    assert choice.milliseconds == {"fp32-fused": 9.0, "fp32": 8.0, "ov-fp32": 6.0}  # candidates only
    # Another CPU, or a candidate the table did not time: measure at start-up instead.
    assert loader.table_choice(folder, ["fp32-fused", "ov-fp32"], AMX) is None
    assert loader.table_choice(folder, ["fp32", "ov-int8"], ZEN5) is None
    assert loader.table_choice(folder, ["fp32"], ZEN5) is None  # nothing to choose
    assert loader.table_choice(FOLDER, ["fp32-fused", "fp32"], ZEN5) is None  # no table (older folders)
    tie = with_table({"fp32-fused": 5.0, "fp32": 5.0})
    assert loader.table_choice(tie, ["fp32-fused", "fp32"], ZEN5).key == "fp32-fused"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("platform", "machine", "says"),
    [
        ("linux", "ppc64le", "OpenVINO has no package for linux ppc64le on PyPI, so models run on ONNX Runtime only"),
        ("linux", "x86_64", "OpenVINO is not installed, so models run on ONNX Runtime only; install it"),
    ],
)
def test_the_log_says_why_the_cpu_serves_without_openvino(
    monkeypatch: pytest.MonkeyPatch, platform: str, machine: str, says: str
) -> None:
    monkeypatch.setattr(loader.sys, "platform", platform)
    monkeypatch.setattr(loader.platform, "machine", lambda: machine)
    if loader.runtime_available("openvino"):
        assert loader.runtime_note("cpu") is None
    monkeypatch.setattr(loader, "runtime_available", lambda runtime: runtime == "onnxruntime")
    note = loader.runtime_note("cpu")
    assert note is not None and note.startswith(says) and "\n" not in note
    assert loader.runtime_note("cuda") is None  # OpenVINO runs on the CPU only: nothing is missed there
