"""``rerank-convert``: build a verified ONNX model folder from a checkpoint or a GGUF file.

The only place where the converter's errors become an exit status: a
:class:`~rerank.converters.errors.ConversionError` (or an existing model folder) is one line on stderr,
``rerank-convert: error: ...``, and exit status 1; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from rerank.converters.catalog import CATALOG, CatalogEntry, resolve
from rerank.converters.errors import ConversionError
from rerank.converters.variants import DEFAULT as DEFAULT_VARIANTS
from rerank.converters.variants import KNOWN as KNOWN_VARIANTS

PROG = "rerank-convert"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Convert a cross-encoder reranker (Hugging Face checkpoint, Hub repo id, catalog name, "
        "or GGUF file) into a verified ONNX model folder.",
    )
    p.add_argument("source", nargs="?", help="catalog name, Hub repo id, local checkpoint folder, or .gguf file")
    p.add_argument("--name", help="served model name (default: the catalog name, or the folder's or file's name)")
    p.add_argument("--out", type=Path, default=Path("models"), help="models directory (default: models)")
    p.add_argument("--force", action="store_true", help="replace an existing model folder")
    p.add_argument(
        "--variants",
        default=",".join(DEFAULT_VARIANTS),
        help=f"optimised graphs to add, comma-separated, or 'none' (default: {','.join(DEFAULT_VARIANTS)})",
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
    variants = (
        () if a.variants.strip().lower() == "none" else tuple(v.strip() for v in a.variants.split(",") if v.strip())
    )
    if set(variants) - set(KNOWN_VARIANTS):
        p.error(
            f"--variants: unknown {sorted(set(variants) - set(KNOWN_VARIANTS))}; known: {', '.join(KNOWN_VARIANTS)}"
        )

    try:
        return _convert(a, variants)
    except (ConversionError, FileExistsError) as exc:
        if a.debug:
            raise
        print(f"{PROG}: error: {one_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; nothing was written", file=sys.stderr)
        return 130


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
            f"    gguf: {e.gguf_repo}"
        )
    header = f"Supported rerankers ({PROG} NAME, or a Hub repo id, checkpoint folder or .gguf file):"
    return "\n\n".join([header, *blocks])


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


def _convert(a: argparse.Namespace, variants: tuple[str, ...]) -> int:
    from rich.console import Console
    from rich.markup import escape

    from rerank.converters.convert import convert
    from rerank.converters.sources import load_source

    # Progress on stderr, one whole line per message (soft_wrap: not folded at a pipe's assumed
    # 80 columns), with the spinner's status line on a terminal only.
    console = Console(stderr=True, soft_wrap=True, highlight=False)
    source, entry = resolve(a.source)
    name = a.name or served_name(source, entry)
    with console.status(f"reading {source}") as status:

        def progress(message: str) -> None:
            console.print(f"[dim]{time.strftime('%H:%M:%S')}[/] {escape(message)}")
            status.update(escape(message))

        bundle = load_source(source, progress=progress, check_memory=not a.skip_memory_check)
        result = convert(
            bundle.loaded,
            name=name,
            out_dir=a.out,
            source_folder=bundle.folder,
            tokenizer=bundle.tokenizer,
            licence=entry.licence if entry else "",
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
