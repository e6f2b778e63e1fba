"""``rerank-serve`` / ``python -m service``: the gRPC reranking service, in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from service import __version__
from service.errors import ConfigurationError
from service.settings import parse

DESCRIPTION = "Serve cross-encoder rerankers over gRPC (rerank.v1.RerankService)."


def add_version(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def main(argv: Sequence[str] | None = None) -> int:
    settings, _ = parse("serve", argv, prog="rerank-serve", description=DESCRIPTION, add_arguments=add_version)
    configure_logging(settings.log_level)
    from service.server import serve  # after argument parsing: --help and --version stay fast

    try:
        asyncio.run(serve(settings))
    except ConfigurationError as exc:
        if settings.log_level == "debug":
            logging.getLogger("rerank").exception("start-up failed")
        print(f"rerank-serve: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
