"""The conversion pipeline: source -> canonical weights -> ONNX -> verified model folder.

Nothing is written to the final folder until the graph has been checked against the reference
implementation on the probe pairs; the folder is assembled in a temporary sibling directory and
moved into place at the end.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from rerank.converters import families, gate_probes, onnx_graph
from rerank.converters.errors import CheckpointError, SourceError, VerificationError
from rerank.converters.families.base import ModelFamily
from rerank.converters.memory import release_memory
from rerank.converters.probes import probe_pairs
from rerank.converters.quiet import quiet_transformers
from rerank.converters.spec import LoadedModel
from rerank.converters.variants import build_fused, write_variants
from rerank.service.model_folder import (
    FORMAT_VERSION,
    PROMPT_FORMAT,
    ModelFolderConfig,
    PairTemplate,
    Variant,
    file_sha256,
    write_config,
)
from rerank.service.scoring import pair_ids, runs_natively, runtime_available, score_pairs, time_variants

TOLERANCE = 1e-4
"""Largest accepted |logit difference| between the fp32 graph and the reference."""

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Result:
    folder: Path
    max_abs_diff: float
    probes: int


CHECK_PAIRS = 6
"""Probe pairs whose scores every variant records, for the server's start-up check."""


def seal(
    work: Path,
    config: ModelFolderConfig,
    graph: dict[str, int],
    pairs: list[tuple[str, str]],
    fp32_scores: np.ndarray,
    progress: Progress,
) -> ModelFolderConfig:
    """Records what the server verifies before serving (:mod:`rerank.service.model_check`): the graph's
    facts, each variant's files' SHA-256, and each variant's scores on a few short probe pairs."""
    short = [i for i, (_, document) in enumerate(pairs) if len(document) < 300][:CHECK_PAIRS]
    check_pairs = [pairs[i] for i in short]
    variants = {}
    for key, variant in config.variants.items():
        files = [variant.file] + ([f"{variant.file}.data"] if (work / f"{variant.file}.data").exists() else [])
        sha256 = {name: file_sha256(work / name) for name in files}
        if key == "fp32":
            scores = [float(fp32_scores[i]) for i in short]
        else:
            scores = [float(s) for s in score_pairs(work, config, check_pairs, variant=variant)]
        variants[key] = dataclasses.replace(variant, sha256=sha256, probe_scores=scores)
    progress(f"seal: checksums and check scores of {len(variants)} graphs recorded")
    return dataclasses.replace(config, variants=variants, graph=graph, check_pairs=check_pairs)


def speed_table(work: Path, config: ModelFolderConfig, progress: Progress) -> dict[str, Any]:
    """Times the CPU variants this machine can run, as the server times its candidates; a
    server on the same CPU then chooses from this table instead of timing at start-up, so every
    replica and restart serves the same variant. Empty with fewer than two such variants."""
    keys = [
        key
        for key, v in config.variants.items()
        if v.device in ("any", "cpu") and runtime_available(v.runtime) and runs_natively(v)
    ]
    if len(keys) < 2:
        return {}
    table = time_variants(work, config, keys)
    timed = ", ".join(f"{key} {ms:.1f} ms" for key, ms in table["milliseconds"].items())
    progress(f"variants: timed on this CPU ({table['batch'][0]} x {table['batch'][1]}): {timed}")
    return table


def source_name(ref: str) -> str:
    """What clients are shown as the source: a Hub repo id as is, a local folder or file by its
    name only (a path on the build machine is nobody's business)."""
    path = Path(ref).expanduser()
    return path.name if path.exists() else ref


def write_tokenizer(source_folder: Path | None, tokenizer: Tokenizer | None, out: Path) -> Tokenizer:
    """Writes ``out/tokenizer.json``: the rebuilt ``tokenizer``, or the checkpoint's own.

    For a checkpoint, the tokenizer is the one transformers builds (``AutoTokenizer``), not the
    checkpoint's ``tokenizer.json`` read raw: transformers 5 assembles XLM-R's pipeline in code
    (whitespace split, then Metaspace), and where an older ``tokenizer.json`` disagrees (a
    trailing space becoming a ``▁`` token) the reference is what transformers does.
    """
    if tokenizer is None:
        from transformers import AutoTokenizer

        assert source_folder is not None
        try:
            with quiet_transformers():
                hf_tokenizer = AutoTokenizer.from_pretrained(str(source_folder), trust_remote_code=False)
        except (OSError, ValueError) as exc:  # what transformers raises for missing or unreadable files
            raise CheckpointError(f"{source_folder}: transformers cannot build its tokenizer: {exc}") from exc
        tokenizer = Tokenizer.from_str(hf_tokenizer.backend_tokenizer.to_str())
    tokenizer.no_truncation()
    tokenizer.no_padding()
    tokenizer.save(str(out / "tokenizer.json"))
    return tokenizer


def served_template(tokenizer: Tokenizer, loaded: LoadedModel, family: ModelFamily) -> PairTemplate:
    """How the service lays a pair out in tokens, refusing a tokenizer whose ids the model cannot
    embed, that has no padding token, or whose pairs the family cannot lay out (the source's
    tokenizer and weights are not trusted to agree)."""
    size, rows = tokenizer.get_vocab_size(with_added_tokens=True), family.graph_facts(loaded)["vocab_rows"]
    if size > rows:
        raise SourceError(f"{loaded.source}: the tokenizer has {size} tokens but the model embeds only {rows}")
    if tokenizer.id_to_token(loaded.spec.pad_id) is None:
        raise SourceError(f"{loaded.source}: the padding token id {loaded.spec.pad_id} is not in the tokenizer")
    try:
        return family.pair_template(tokenizer, loaded.spec)
    except SourceError as exc:
        raise SourceError(f"{loaded.source}: {exc}") from exc


def check_prompt_ids(
    work: Path, config: ModelFolderConfig, pairs: list[tuple[str, str]], expected: list[list[int]]
) -> None:
    """Refuses a model folder whose pair encoder does not give exactly ``expected`` (the model
    card's token ids) for each pair, naming the first pair and position that differ."""
    for n, (ours, theirs) in enumerate(zip(pair_ids(work, config, pairs), expected, strict=True)):
        if ours != theirs:
            at = next(
                (k for k, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b), min(len(ours), len(theirs))
            )
            raise VerificationError(
                f"probe #{n}: the model folder's tokens differ from the model card's at position {at} "
                f"({len(ours)} vs {len(theirs)} tokens). Nothing was written."
            )


def convert(
    loaded: LoadedModel,
    *,
    name: str,
    out_dir: Path,
    source_folder: Path | None,
    tokenizer: Tokenizer | None = None,
    licence: str = "",
    progress: Progress = print,
    force: bool = False,
    variants: tuple[str, ...] = (),
    enforce_gate: bool = True,
) -> Result:
    """Writes ``out_dir/name`` for ``loaded`` after verifying it against its family's reference
    implementation (:attr:`~rerank.converters.families.base.ModelFamily.reference`) on the probe
    pairs, plus the optimised ``variants`` (:mod:`rerank.converters.variants`) that pass their accuracy gate.

    ``loaded.weights`` is emptied once every graph is on disk: a large model is never held
    twice while the variants are derived."""
    final = out_dir / name
    if final.exists() and not force:
        raise FileExistsError(f"{final} exists; pass --force to replace it")
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=out_dir))
    work.chmod(0o755)  # mkdtemp makes it private; a model folder is meant to be shared
    try:
        spec, family = loaded.spec, families.of(loaded)
        progress("tokenizer: writing tokenizer.json")
        tok = write_tokenizer(source_folder, tokenizer, work)
        template = served_template(tok, loaded, family)
        progress(
            f"graph: building {spec.family} ({spec.num_layers} layers x {spec.hidden}) as ONNX opset {onnx_graph.OPSET}"
        )
        model = family.build_graph(spec, loaded.weights, graph_name=name)
        onnx_graph.save(model, work / "model.onnx")
        del model
        release_memory()
        config = ModelFolderConfig(
            name=name,
            architecture=spec.family,
            max_length=spec.max_length,
            template=template,
            type_ids_input=spec.type_ids_input,
            variants={"fp32": Variant(file="model.onnx", precision="fp32")},
            source={
                "ref": loaded.source,
                "name": source_name(loaded.source),
                "format": loaded.source_format,
                "dtype": loaded.source_dtype,
                "sha256": loaded.files_sha256,
                "converted_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            },
            spec=spec.to_json(),
            notes=tuple(loaded.notes),
            licence=licence,
            opset=onnx_graph.OPSET,
            format=PROMPT_FORMAT if template.prompt is not None else FORMAT_VERSION,
        )
        write_config(work, config)

        pairs = probe_pairs(spec.max_length)
        progress(f"verify: scoring {len(pairs)} probe pairs with ONNX Runtime")
        ours = score_pairs(work, config, pairs)
        progress("verify: scoring them with the reference implementation")
        release_memory()
        with quiet_transformers():  # its weight-loading bars and notices are not our user's business
            if family.prompt_ids is not None:
                check_prompt_ids(work, config, pairs, family.prompt_ids(loaded, source_folder, tok, pairs))
            theirs, reference_name = family.reference(loaded, source_folder, tok, pairs)
        release_memory()
        diff = float(np.max(np.abs(ours - theirs)))
        progress(f"verify: max |Δ logit| = {diff:.3e} over {len(pairs)} probes (tolerance {TOLERANCE:g})")
        if not np.isfinite(diff) or diff > TOLERANCE:
            worst = int(np.argmax(np.abs(ours - theirs)))
            raise VerificationError(
                f"the ONNX graph differs from the reference by {diff:.3e} (> {TOLERANCE:g}); worst probe #{worst}: "
                f"onnx {ours[worst]:.6f} vs reference {theirs[worst]:.6f}. Nothing was written."
            )
        if variants and family.fusions is not None:
            build_fused(work, loaded, progress)
        graph = family.graph_facts(loaded)
        # Every graph that needs the weights is on disk: let them go before the variants need memory.
        loaded.weights.clear()
        release_memory()
        kept: dict[str, Variant] = {}
        figures: dict[str, dict[str, Any]] = {}
        gate: dict[str, Any] = {}
        if variants:
            gate_pairs, groups = gate_probes.gate_pairs()
            progress(f"variants: scoring {len(gate_pairs)} gate pairs ({len(set(groups))} queries) with the fp32 graph")
            reference = score_pairs(work, config, gate_pairs)
            gate = {"pairs": len(gate_pairs), "queries": len(set(groups)), "reference": "onnxruntime fp32 model.onnx"}
            kept, figures = write_variants(
                work,
                config,
                variants,
                lambda variant: score_pairs(work, config, gate_pairs, variant=variant),
                reference,
                groups,
                enforce_gate=enforce_gate,
                progress=progress,
            )
        config = dataclasses.replace(
            config,
            variants={**config.variants, **kept},
            verification={
                "reference": reference_name,
                "probes": len(pairs),
                "max_abs_diff": diff,
                "tolerance": TOLERANCE,
                "gate": gate,
                "variant_gates": figures,
                "variant_gate_enforced": enforce_gate,
            },
        )
        config = dataclasses.replace(config, speed=speed_table(work, config, progress))
        config = seal(work, config, graph, pairs, ours, progress)
        write_config(work, config)
        if final.exists():
            shutil.rmtree(final)
        work.rename(final)
        progress(f"done: {final}")
        return Result(final, diff, len(pairs))
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
