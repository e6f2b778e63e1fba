"""``rerank``: rank a file's lines for a query from the command line.

    rerank query "What is a panda?" docs.txt [--top-n 3] [--json] [--model NAME] [--target HOST:PORT]
    rerank models

The key comes from ``$RERANK_API_KEY``; the target from ``--target`` or ``$RERANK_TARGET``
(default ``localhost:50051``). ``docs.txt`` holds one document per line (blank lines skipped;
``-`` reads standard input). The table needs ``rich`` (``pip install 'rerank[cli]'``).
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

from rerank_client.client import RerankClient
from rerank_client.results import RerankResult

DEFAULT_TARGET = "localhost:50051"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rerank", description="Rank documents for a query with a rerank server.")
    parser.add_argument("--target", default=os.environ.get("RERANK_TARGET", DEFAULT_TARGET), help="host:port")
    parser.add_argument("--timeout", type=float, default=30.0, help="deadline in seconds (retries included)")
    commands = parser.add_subparsers(dest="command", required=True)
    query = commands.add_parser("query", help="rank the lines of a file for a query")
    query.add_argument("query")
    query.add_argument("documents", help="file of documents, one per line ('-': standard input)")
    query.add_argument("--top-n", type=int, default=None)
    query.add_argument("--model", default="", help="served model (default: the only one)")
    query.add_argument("--normalize", action="store_true", help="scores as sigmoid(logit)")
    query.add_argument("--json", action="store_true", help="print JSON instead of a table")
    commands.add_parser("models", help="list the served models")
    return parser


def read_documents(name: str) -> list[str]:
    text = sys.stdin.read() if name == "-" else Path(name).read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def print_table(result: RerankResult) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{result.model}: {len(result.results)} results, {result.prompt_tokens} tokens")
    table.add_column("rank", justify="right")
    table.add_column("index", justify="right")
    table.add_column("score", justify="right")
    table.add_column("document")
    for rank, r in enumerate(result.results, 1):
        table.add_row(str(rank), str(r.index), f"{r.score:.4f}", r.text or "")
    Console().print(table)


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
            )
    except grpc.RpcError as error:
        code = error.code().name if isinstance(error, grpc.Call) else "ERROR"
        details = error.details() if isinstance(error, grpc.Call) else str(error)
        print(f"rerank: {code}: {details}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"rerank: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(dataclasses.asdict(result), ensure_ascii=False))
    else:
        print_table(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
