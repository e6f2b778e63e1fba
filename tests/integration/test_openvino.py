"""The OpenVINO CPU backend and its variants, end to end on converted fixture models: runtime
parity against ONNX Runtime fp32, the converter writing and sealing ov-* variants, the server
serving and checking them, and /v1/models saying so."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest

from rerank.service.backends.base import Batch, pad
from rerank.service.backends.cpu_features import detect
from rerank.service.backends.loader import load_backend
from rerank.service.core.tokenization import PairEncoder
from rerank.service.model_folder import ModelFolderConfig, Variant, read_model_folder
from rerank.service.scoring import score_pairs
from tests.support import API_KEY, AUTH, REPO
from tests.support.processes import free_port
from tests.support.servers import start_service

pytest.importorskip("openvino")

DOCS = [
    "hi",
    "a panda is a bear",
    "the giant panda lives in the mountains of central China " * 6,
    "Большая панда",
    "熊猫吃竹子",
    "x " * 40,
    "what is a panda? it is a bear that eats bamboo",
]


def with_variant(config: ModelFolderConfig, key: str, precision: str, file: str = "model.onnx") -> ModelFolderConfig:
    variant = Variant(file, precision, device="cpu", runtime="openvino")
    return dataclasses.replace(config, variants={**config.variants, key: variant})


def batches(folder: Path, config: ModelFolderConfig) -> list[Batch]:
    """Different (pairs, length) shapes one after the other, and an unsorted batch."""
    encoder = PairEncoder(folder / "tokenizer.json", config.template, config.max_length)
    pairs = encoder.encode("what is a panda?", DOCS).pairs
    ordered = sorted(pairs, key=lambda p: len(p.ids))
    t = config.template.pad_id, config.type_ids_input
    return [pad(ordered[:2], *t), pad(ordered[2:], *t), pad(pairs, *t), pad(ordered[:1], *t)]


@pytest.mark.parametrize("name", ["bert-tiny", "xlmr-tiny"])
def test_fp32_matches_onnx_runtime_across_shapes(models_dir: Path, name: str) -> None:
    folder = models_dir / name
    config = with_variant(read_model_folder(folder), "probe-ov", "fp32")
    reference = load_backend(folder, config, variant="fp32", device="cpu", threads=2)
    ov = load_backend(folder, config, variant="probe-ov", device="cpu", threads=2)
    assert (ov.provider, ov.precision, ov.variant_key) == ("OpenVINO CPU", "fp32", "probe-ov")
    # Not OpenVINO's default, which is bf16 on a CPU with bf16 units.
    assert getattr(ov, "execution_precision", None) == "f32"
    ov.warm_up(8192)
    for batch in batches(folder, config):
        expected, got = reference.run(batch), ov.run(batch)
        assert got.dtype == np.float64 and got.shape == (batch.input_ids.shape[0],)
        assert np.max(np.abs(got - expected)) < 1e-5
    # Without token type ids the graph gets zeros, as ONNX Runtime's backend feeds it.
    b = batches(folder, config)[1]
    untyped = Batch(b.input_ids, b.attention_mask, None)
    assert np.max(np.abs(ov.run(untyped) - reference.run(untyped))) < 1e-5


def test_the_warm_up_runs_no_shape_over_the_micro_batch_size(models_dir: Path) -> None:
    """A slow model's micro-batches are cut small; warming it up on a larger shape cost start-up
    minutes and the scratch memory OpenVINO keeps for that shape (1.4 GB at 0.6B's shape)."""
    folder = models_dir / "bert-tiny"
    config = with_variant(read_model_folder(folder), "probe-ov", "fp32")
    ov = load_backend(folder, config, variant="probe-ov", device="cpu", threads=2)
    shapes: list[tuple[int, ...]] = []
    run = ov.run

    def recorded(batch: Batch) -> np.ndarray:
        shapes.append(batch.input_ids.shape)
        return run(batch)

    ov.run = recorded  # type: ignore[method-assign]
    for most in (10, 512, 100_000):
        shapes.clear()
        ov.warm_up(most)
        assert shapes[0] == (1, 16) and all(p * n <= max(most, 16) for p, n in shapes)
        assert len(shapes) == {10: 1, 512: 2, 100_000: 3}[most]


SHAPES_CHILD = """
import sys
from pathlib import Path
import numpy as np
from rerank.service.backends.base import Batch
from rerank.service.backends.openvino import OpenVinoBackend
from rerank.service.model_folder import Variant, read_model_folder
import dataclasses

folder = Path(sys.argv[1])
config = read_model_folder(folder)
variant = Variant("model.onnx", "fp32", device="cpu", runtime="openvino")
config = dataclasses.replace(config, variants={**config.variants, "probe-ov": variant})
backend = OpenVinoBackend(folder, config, variant="probe-ov", threads=2, streams=1)

def anonymous() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) // 1024
    raise RuntimeError("no RssAnon")

shapes = [(pairs, length) for pairs in range(1, 33) for length in range(20, 120, 7)]
np.random.default_rng(5).shuffle(shapes)
for pairs, length in shapes[:100]:
    backend.run(Batch.filled(pairs, length, 5))
settled = anonymous()
for pairs, length in shapes[100:400]:
    backend.run(Batch.filled(pairs, length, 5))
print(settled, anonymous())
"""


def test_new_shapes_do_not_grow_the_memory_without_bound(models_dir: Path) -> None:
    """The batcher pads to each micro-batch's longest pair, so a server meets thousands of
    (pairs, length) shapes; OpenVINO's CPU plugin and oneDNN below it keep memory for each shape
    they met (5,000 and 1,024 of them by default): 300 more shapes must not grow the process by
    tens of MB (47 MB here with oneDNN's left at its default, 70 with both)."""
    found = subprocess.run(
        [sys.executable, "-c", SHAPES_CHILD, str(models_dir / "xlmr-tiny")],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    settled, after = map(int, found.stdout.split())
    assert after - settled < 30, f"anonymous memory {settled} -> {after} MiB over 300 new shapes"


def test_two_streams_run_two_batches_at_once_with_the_same_scores(models_dir: Path) -> None:
    import concurrent.futures

    folder = models_dir / "xlmr-tiny"
    config = with_variant(read_model_folder(folder), "probe-ov", "fp32")
    reference = load_backend(folder, config, variant="fp32", device="cpu", threads=2)
    two = load_backend(folder, config, variant="probe-ov", device="cpu", threads=2, streams=2)
    one = load_backend(folder, config, variant="probe-ov", device="cpu", threads=2, streams=1)
    assert (two.streams, one.streams) == (2, 1)
    assert int(two.compiled.get_property("NUM_STREAMS")) == 2  # type: ignore[attr-defined]
    work = batches(folder, config) * 8
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        got = list(pool.map(two.run, work))  # two at once, each on its own infer request
    for batch, scores in zip(work, got, strict=True):
        assert np.max(np.abs(scores - reference.run(batch))) < 1e-5
        assert np.max(np.abs(scores - one.run(batch))) < 1e-5


def test_score_pairs_runs_a_variant_on_its_own_runtime_and_precision(models_dir: Path) -> None:
    folder = models_dir / "bert-tiny"
    config = with_variant(with_variant(read_model_folder(folder), "f", "fp32"), "b", "bf16")
    pairs = [("what is a panda?", d) for d in DOCS]
    exact = score_pairs(folder, config, pairs)
    f32 = score_pairs(folder, config, pairs, variant=config.variants["f"])
    bf16 = score_pairs(folder, config, pairs, variant=config.variants["b"])
    assert np.max(np.abs(f32 - exact)) < 1e-5
    # bf16 really ran (it is not f32 under another name), and it is still the same model.
    assert 1e-4 < np.max(np.abs(bf16 - exact)) < 0.5
    backend = load_backend(folder, config, variant="b", device="cpu", threads=2)
    assert getattr(backend, "execution_precision", None) == "bf16"


@pytest.fixture(scope="module")
def ov_models(checkpoint, tmp_path_factory) -> Path:
    """bert-tiny converted with the four OpenVINO variants, gate off (random weights)."""
    out = tmp_path_factory.mktemp("ov-models")
    command = [
        sys.executable,
        "-m",
        "rerank.converters.cli",
        str(checkpoint("bert")),
        "--name",
        "bert-ov",
        "--out",
        str(out),
    ]
    command += ["--variants", "ov-fp32,ov-bf16,ov-int8-dynamic,ov-int8", "--no-gate"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Statistics collection" not in result.stdout + result.stderr  # NNCF's progress bars are kept quiet
    return out


def test_the_converter_writes_gates_and_seals_openvino_variants(ov_models: Path) -> None:
    folder = ov_models / "bert-ov"
    data = json.loads((folder / "rerank.json").read_text())
    assert data["format"] == 3
    variants = data["variants"]
    assert set(variants) == {"fp32", "ov-fp32", "ov-bf16", "ov-int8-dynamic", "ov-int8"}
    assert variants["fp32"]["runtime"] == "onnxruntime"
    for key, precision, file in (
        ("ov-fp32", "fp32", "model.onnx"),
        ("ov-bf16", "bf16", "model.onnx"),
        ("ov-int8-dynamic", "int8", "model.int8-weights.onnx"),
        ("ov-int8", "int8", "model.ov-int8.onnx"),
    ):
        v = variants[key]
        assert (v["runtime"], v["precision"], v["device"], v["file"]) == ("openvino", precision, "cpu", file)
        assert set(v["sha256"]) == {file} and len(v["probe_scores"]) == len(data["check_pairs"])
        assert v["gate"]["version"] == 2 and v["gate"]["pairs"] >= 300
        assert v["gate"] == data["verification"]["variant_gates"][key]
    assert not (folder / "model.fused.onnx").exists()  # a stepping stone for ONNX Runtime's variants only
    # ov-fp32 is the reference graph on another runtime: the same scores; bf16 and int8 are not.
    assert variants["ov-fp32"]["gate"]["max_abs_diff"] < 1e-4 and variants["ov-fp32"]["gate"]["passed"]
    # The timing table a server on this CPU chooses from: every variant this CPU runs natively.
    cpu = detect()
    int8 = ["ov-int8-dynamic", "ov-int8"] if cpu.native_int8 else []
    native = {"fp32", "ov-fp32", *(["ov-bf16"] if cpu.native_bf16 else []), *int8}
    assert set(data["speed"]["milliseconds"]) == native
    assert data["speed"]["cpu"] == {"model": cpu.model, "flags": cpu.flags()}
    assert all(ms > 0 for ms in data["speed"]["milliseconds"].values())
    fp32_checks = np.asarray(variants["fp32"]["probe_scores"])
    assert np.max(np.abs(np.asarray(variants["ov-fp32"]["probe_scores"]) - fp32_checks)) < 1e-4
    for key in ("ov-int8-dynamic", "ov-int8"):
        assert np.max(np.abs(np.asarray(variants[key]["probe_scores"]) - fp32_checks)) > 1e-4, key


def held(op) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    """An operator of OpenVINO's runtime model: its layer type and the element type of what it
    holds (a product's weights: its second input; a lookup's table: its first)."""
    kind = op.get_rt_info()["layerType"].astype(str)
    port = 0 if kind == "Gather" else 1
    return kind, str(op.input(port).get_element_type()) if op.get_input_size() > port else ""


def test_int8_dynamic_is_held_in_int8(ov_models: Path) -> None:
    """OpenVINO keeps ov-int8-dynamic's weights in int8 (the point of it: no fp32 copy is
    built), in every layer product and the token table, and rounds the products' activations
    per the backend's group."""
    import onnx

    from rerank.service.backends.openvino import DYNAMIC_QUANTIZATION_GROUP

    folder = ov_models / "bert-ov"
    config = read_model_folder(folder)
    graph = onnx.load(str(folder / config.variants["ov-int8-dynamic"].file))
    stored = {n.output[0] for n in graph.graph.node if n.op_type == "DequantizeLinear"}
    products = sum(1 for n in graph.graph.node if n.op_type == "MatMul" and n.input[1] in stored)
    assert products >= 4  # a layer's query-key-value, output, up and down products at least
    backend = load_backend(folder, config, variant="ov-int8-dynamic", device="cpu", threads=2)
    ops = backend.compiled.get_runtime_model().get_ordered_ops()
    kinds = [held(op) for op in ops]
    assert sum(1 for kind, weights in kinds if kind == "FullyConnected" and "int8" in weights) == products
    assert any(kind == "Gather" and "int8" in table for kind, table in kinds)  # the token table
    assert backend.compiled.get_property("DYNAMIC_QUANTIZATION_GROUP_SIZE") == DYNAMIC_QUANTIZATION_GROUP


def card(port: int, name: str):  # type: ignore[no-untyped-def]
    from rerank.service.protocol import rerank_pb2, rerank_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = rerank_pb2_grpc.RerankServiceStub(channel)
        cards = stub.ListModels(rerank_pb2.ListModelsRequest(), metadata=AUTH, timeout=10).data
    return next(c for c in cards if c.id == name)


def test_a_pinned_openvino_variant_is_served_and_shown(ov_models: Path) -> None:
    data = json.loads((ov_models / "bert-ov" / "rerank.json").read_text())
    proc, port, _ = start_service(ov_models, "--variant", "ov-int8")
    try:
        shown = card(port, "bert-ov")
    finally:
        proc.stop(grace=20)
    assert (shown.variant, shown.runtime, shown.precision, shown.provider) == (
        "ov-int8",
        "openvino",
        "int8",
        "OpenVINO CPU",
    )
    assert shown.selection == "pinned by RERANK_VARIANT" and not shown.candidates
    figures = data["variants"]["ov-int8"]["gate"]
    assert shown.gate.passed == figures["passed"] and shown.gate.max_abs_diff == pytest.approx(figures["max_abs_diff"])
    assert shown.gate.pairs == figures["pairs"] and shown.gate.min_spearman == pytest.approx(figures["min_spearman"])
    cpu = detect()
    assert shown.cpu.model == cpu.model and list(shown.cpu.features) == cpu.flags()


def test_the_default_conversion_writes_openvino_variants_and_the_server_times_them(models_dir: Path) -> None:
    """What ``make serve`` runs, ``rerank-convert SOURCE --name N --out DIR`` with no flag, writes
    the OpenVINO variants that pass their gate (its install has OpenVINO), and the server, with
    nothing pinned, counts them among the candidates it serves the fastest of."""
    data = json.loads((models_dir / "bert-tiny" / "rerank.json").read_text())
    assert {"ov-fp32", "ov-bf16"} <= set(data["verification"]["variant_gates"])
    assert data["variants"]["ov-fp32"]["runtime"] == "openvino"  # exact: it always passes
    proc, port, _ = start_service(models_dir)
    try:
        shown = card(port, "bert-tiny")
    finally:
        proc.stop(grace=20)
    timed = {c.variant: c.milliseconds for c in shown.candidates}
    assert "ov-fp32" in timed
    assert shown.variant == min(timed, key=lambda key: timed[key])


def test_an_openvino_variant_that_scores_differently_is_refused(ov_models: Path, tmp_path: Path) -> None:
    # The check pairs a variant recorded at conversion are verified on its own runtime.
    from rerank.gateway.processes import Child

    folder = tmp_path / "models" / "bert-ov"
    shutil.copytree(ov_models / "bert-ov", folder)
    path = folder / "rerank.json"
    data = json.loads(path.read_text())
    data["variants"]["ov-bf16"]["probe_scores"] = [s + 1 for s in data["variants"]["ov-bf16"]["probe_scores"]]
    path.write_text(json.dumps(data))
    log = tmp_path / "serve.log"
    argv = [sys.executable, "-m", "rerank.service", "--models-dir", str(folder.parent), "--grpc-port", str(free_port())]
    child = Child("serve", [*argv, "--variant", "ov-bf16"], env={"RERANK_API_KEYS": API_KEY}, log_path=log).start()
    status = child.wait(120)
    if status is None:
        child.stop(grace=10)
    output = log.read_text()
    assert status == 1, output
    (line,) = [line for line in output.splitlines() if line.startswith("rerank-serve:")]
    assert "model.onnx" in line and "check pairs" in line and "Traceback" not in output
