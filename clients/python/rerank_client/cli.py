"""``rerank``: rank a file's lines for a query from the command line.

    rerank [--target HOST:PORT] query "What is a panda?" docs.txt [--top-n 3] [--json] [--model NAME]
    rerank [--target HOST:PORT] models

The key comes from ``$RERANK_API_KEY``. The target is the service's gRPC address (directly, or
Envoy's port, which carries gRPC too): ``--target``, else ``$RERANK_TARGET``, else
``localhost:$RERANK_GRPC_PORT`` (the port the service listens on; default 50051). ``docs.txt``
holds one document per line (blank lines skipped; ``-`` reads standard input). The table is
drawn with ``rich`` where it is installed (``pip install 'rerank[cli]'``), else as plain
columns. Errors are one line on stderr and exit status 1, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import grpc

from rerank_client.client import API_KEY_ENV, RerankClient
from rerank_client.results import RerankResult

DEFAULT_PORT = 50051


def default_target() -> str:
    """``$RERANK_TARGET``, else the service's port on this machine (``$RERANK_GRPC_PORT``, as the
    service reads it; default 50051)."""
    return os.environ.get("RERANK_TARGET") or f"localhost:{os.environ.get('RERANK_GRPC_PORT') or DEFAULT_PORT}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rerank",
        description="Rank documents for a query with a rerank server (API key: $RERANK_API_KEY).",
    )
    parser.add_argument(
        "--target",
        default=default_target(),
        help="the service's gRPC address, host:port, directly or through Envoy's port "
        "(default: $RERANK_TARGET, else localhost:$RERANK_GRPC_PORT, else localhost:50051; now %(default)s)",
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="deadline in seconds (retries included)")
    commands = parser.add_subparsers(dest="command", required=True)
    query = commands.add_parser("query", help="rank the lines of a file for a query")
    query.add_argument("query")
    query.add_argument("documents", help="file of documents, one per line ('-': standard input)")
    query.add_argument("--top-n", type=int, default=None)
    query.add_argument("--model", default="", help="served model (default: the only one)")
    query.add_argument("--normalize", action="store_true", help="scores as sigmoid(logit)")
    query.add_argument(
        "--instruction", default=None, help="the task in words, for a model that reads one (default: the model's own)"
    )
    query.add_argument("--json", action="store_true", help="print JSON instead of a table")
    commands.add_parser("models", help="list the served models")
    return parser


def read_documents(name: str) -> list[str]:
    text = sys.stdin.read() if name == "-" else Path(name).read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


COLUMNS = ("rank", "index", "score", "document")


def table_rows(result: RerankResult) -> list[tuple[str, str, str, str]]:
    return [(str(rank), str(r.index), f"{r.score:.4f}", r.text or "") for rank, r in enumerate(result.results, 1)]


def print_table(result: RerankResult) -> None:
    """The results as a table: ``rich``'s where it is installed, else plain columns."""
    title = f"{result.model}: {len(result.results)} results, {result.prompt_tokens} tokens"
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(plain_table(title, table_rows(result)))
        return
    table = Table(title=title)
    for column in COLUMNS:
        table.add_column(column, justify="left" if column == "document" else "right")
    for row in table_rows(result):
        table.add_row(*row)
    Console().print(table)


def plain_table(title: str, rows: list[tuple[str, str, str, str]]) -> str:
    """``rows`` under ``title`` and a header, the numbers right-aligned, each document whole on its line."""
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(COLUMNS[:3])]

    def line(row: tuple[str, ...]) -> str:
        return "  ".join(v.rjust(w) for v, w in zip(row[:3], widths, strict=True)) + "  " + row[3]

    return "\n".join([title, line(COLUMNS), *(line(row) for row in rows)])


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        with RerankClient(args.target, timeout=args.timeout) as client:
            if args.command == "models":
                for model in client.list_models():
                    print(f"{model.id}\t{model.architecture}\t{model.max_length}\t{model.precision}")
                return 0
            documents = read_documents(args.documents)
            result = client.rerank(
                args.query,
                documents,
                model=args.model,
                top_n=args.top_n,
                return_documents=True,
                normalize=args.normalize,
                instruction=args.instruction,
            )
    except grpc.RpcError as error:
        code = error.code().name if isinstance(error, grpc.Call) else "ERROR"
        details = error.details() if isinstance(error, grpc.Call) else str(error)
        hint = ""
        if code == "UNAUTHENTICATED" and not os.environ.get(API_KEY_ENV):
            hint = f" (set {API_KEY_ENV}; make serve stores a generated key in .rerank/api-key)"
        elif code == "UNAVAILABLE":
            hint = f" (is the service running at {args.target}? --target or $RERANK_TARGET names another)"
        print(f"rerank: {code}: {details}{hint}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as error:  # an unreadable file (ValueError: not UTF-8), a bad target
        print(f"rerank: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    try:
        if args.json:
            print(json.dumps(dataclasses.asdict(result), ensure_ascii=False))
        else:
            print_table(result)
        sys.stdout.flush()
    except BrokenPipeError:  # `rerank query ... | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
    return 0


if __name__ == "__main__":
    sys.exit(main())
