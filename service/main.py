"""``rerank-serve`` / ``python -m rerank.service``: the gRPC reranking service, in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence

from rerank.service import __version__
from rerank.service.errors import ConfigurationError
from rerank.service.settings import parse
from rerank.service.telemetry import logs

DESCRIPTION = "Serve cross-encoder rerankers over gRPC (rerank.v1.RerankService)."


def add_version(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")


def main(argv: Sequence[str] | None = None) -> int:
    settings, _ = parse("serve", argv, prog="rerank-serve", description=DESCRIPTION, add_arguments=add_version)
    logs.configure(settings.log_level, settings.log_format)
    if settings.metrics_dir is not None:
        # prometheus_client picks its multiprocess mode from this variable when it is imported
        # (by rerank.service.server, below); --metrics-dir must reach it the same way.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(settings.metrics_dir)
        settings.metrics_dir.mkdir(parents=True, exist_ok=True)
    from rerank.service.server import serve  # after argument parsing: --help and --version stay fast

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
