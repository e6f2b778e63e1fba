"""The checks a model folder passes before it is served.

A folder whose ``rerank.json`` disagrees with its graph, whose files are not the ones the
converter wrote, or whose graph does not score like it did at conversion is refused at start-up
with one line naming the file and the reason (:class:`~rerank.service.errors.ConfigurationError`), so
health never reports SERVING for a model that cannot answer. In order:

1. the configuration against the graph's facts the converter recorded: ``max_length`` fits the
   learned position table, the pad id and every special token are inside the vocabulary;
2. the tokenizer against the graph: its vocabulary fits the embedding table;
3. the SHA-256 of every file the chosen variant reads, as the converter recorded them (this is
   what ties the recorded graph facts to the file actually loaded);
4. a warm-up: the variant scores the recorded check pairs as it did at conversion.

Folders of format 1 (converted before these were recorded) skip 1, 3 and 4 with a warning.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from rerank.service.backends.base import Backend, pad
from rerank.service.core.tokenization import PairEncoder
from rerank.service.errors import ConfigurationError
from rerank.service.model_folder import CONFIG_NAME, ModelFolderConfig, Variant, file_sha256

log = logging.getLogger(__name__)

EXACT_TOLERANCE = 1e-3
"""Largest |Δ logit| accepted from an fp32 variant against its recorded probe scores (another
CPU's kernels move fp32 logits by ~1e-6)."""
REDUCED_TOLERANCE = 0.1
"""The same for reduced precision (fp16, bf16, int8), whose kernels differ more between
machines and devices. A wrong graph misses both by whole logits."""


def check_files(folder: Path, config: ModelFolderConfig, variant_key: str, *, verify_checksums: bool = True) -> None:
    """Checks 1-3, before the graph is loaded (a damaged file is refused, not handed to the
    runtime); raises :class:`ConfigurationError`."""
    config_file = folder / CONFIG_NAME
    if config.format < 2:
        log.warning("%s: format 1 folder: no checksums or probe scores to verify; reconvert it", config_file)
    check_graph_facts(config_file, config)
    check_tokenizer(folder / "tokenizer.json", config)
    if verify_checksums:
        check_checksums(folder, config.variants[variant_key])


def check_scores(folder: Path, config: ModelFolderConfig, backend: Backend) -> None:
    """Check 4, on the loaded backend; raises :class:`ConfigurationError`."""
    variant = config.variants[backend.variant_key]
    encoder = PairEncoder(folder / "tokenizer.json", config.template, config.max_length)
    check_probe_scores(folder / variant.file, config, variant, backend, encoder)


def check_graph_facts(config_file: Path, config: ModelFolderConfig) -> None:
    graph = config.graph
    vocab = graph.get("vocab_rows")
    if vocab is not None:
        template = config.template
        specials = [i for i, _ in template.prefix + template.middle + template.suffix] + [template.pad_id]
        outside = sorted({i for i in specials if not 0 <= i < vocab})
        if outside:
            raise ConfigurationError(
                f"{config_file}: token id {outside[0]} (pad or special token) is outside the graph's "
                f"vocabulary of {vocab} rows"
            )
    rows = graph.get("position_rows")
    if rows is not None:
        readable = rows - graph.get("position_offset", 0)
        if config.max_length > readable:
            raise ConfigurationError(
                f"{config_file}: max_length {config.max_length} is longer than the graph's position table "
                f"reads ({readable} positions)"
            )


def check_tokenizer(path: Path, config: ModelFolderConfig) -> None:
    vocab = config.graph.get("vocab_rows")
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # noqa: BLE001 - tokenizers raises its own exception type
        raise ConfigurationError(f"{path}: not a readable tokenizer ({exc})") from None
    size = tokenizer.get_vocab_size(with_added_tokens=True)
    if vocab is not None and size > vocab:
        raise ConfigurationError(f"{path}: the tokenizer has {size} tokens; the graph's vocabulary has {vocab} rows")


def check_checksums(folder: Path, variant: Variant) -> None:
    for name, expected in variant.sha256.items():
        path = folder / name
        if not path.is_file():
            raise ConfigurationError(f"{path}: missing (the converter recorded its checksum)")
        if file_sha256(path) != expected:
            raise ConfigurationError(
                f"{path}: SHA-256 differs from the one the converter recorded; the file is "
                "damaged or was replaced: reconvert the model"
            )


def check_probe_scores(
    path: Path, config: ModelFolderConfig, variant: Variant, backend: Backend, encoder: PairEncoder
) -> None:
    if not config.check_pairs or len(variant.probe_scores) != len(config.check_pairs):
        return
    scores = []
    for query, document in config.check_pairs:
        encoded = encoder.encode(query, [document])
        batch = pad(encoded.pairs, config.template.pad_id, config.type_ids_input)
        try:
            scores.append(float(backend.run(batch)[0]))
        except Exception as exc:
            raise ConfigurationError(f"{path}: the graph fails on the check pairs ({type(exc).__name__})") from exc
    tolerance = EXACT_TOLERANCE if variant.precision == "fp32" else REDUCED_TOLERANCE
    differences = np.abs(np.asarray(scores) - np.asarray(variant.probe_scores))
    worst = float(np.max(differences))
    if not np.isfinite(worst) or worst > tolerance:
        raise ConfigurationError(
            f"{path}: scores the check pairs up to {worst:.3g} logit away from its scores at conversion "
            f"(tolerance {tolerance:g}); the graph is not the one the converter verified"
        )
    log.info("%s: check pairs within %.1e of the converter's scores", path, worst)
