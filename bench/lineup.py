"""The line-up: every peer's name bound to how it is built (ours, the library peers, the servers).

Apart from :mod:`bench.peers` so that the library peers (:mod:`bench.library_peers`), which build
on its base class, and the peers module do not import each other."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from bench import library_peers, model_card
from bench.models import BenchModel
from bench.peers import (
    OUR_VARIANTS,
    PEERS,
    Infinity,
    LlamaServer,
    OurServer,
    OursGrpc,
    OursRest,
    Peer,
    SentenceTransformers,
    Vllm,
    applicable,
)
from bench.workloads import WORKLOADS


def build(names: list[str], model: BenchModel, workdir: Path) -> list[Peer]:
    """Peers ``names`` for ``model`` (unknown names raise; those that do not score a model of its
    kind are left out: :func:`bench.peers.applicable`); gRPC and REST share their servers."""
    unknown = set(names) - set(PEERS)
    if unknown:
        raise ValueError(f"unknown peers {sorted(unknown)}; expected some of {PEERS}")
    servers = {variant: OurServer(model.models_dir, model.name, variant, workdir) for variant in OUR_VARIANTS.values()}
    auto = OurServer(model.models_dir, model.name, None, workdir)
    make: dict[str, Callable[[], Peer]] = {
        "grpc-auto": lambda: OursGrpc(auto, "grpc-auto"),
        "rest-auto": lambda: OursRest(auto, workdir, "rest-auto", WORKLOADS),
        **{peer: (lambda peer=peer: OursGrpc(servers[OUR_VARIANTS[peer]], peer)) for peer in OUR_VARIANTS},
        "rest-fp32": lambda: OursRest(servers["fp32-fused"], workdir, "rest-fp32", ("W3",)),
        "st-fp32": lambda: SentenceTransformers(model),
        **{
            name: (lambda name=name: model_card.ModelCardPeer(model, name.removeprefix("hf-")))
            for name in model_card.NAMES
        },
        **{name: (lambda name=name: library_peers.make(name, model, workdir)) for name in library_peers.NAMES},
        "infinity-fp32": lambda: Infinity(model, workdir),
        "vllm": lambda: Vllm(model, workdir),
        "vllm-fp32": lambda: Vllm(model, workdir, "float32"),
        "llama-f16": lambda: LlamaServer(model, "f16", workdir),
        "llama-q8_0": lambda: LlamaServer(model, "q8_0", workdir),
    }
    return [make[name]() for name in applicable(names, model.kind)]
