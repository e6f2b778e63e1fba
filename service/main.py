"""``rerank-serve`` / ``python -m service``: start the gRPC reranking server."""

from __future__ import annotations

import asyncio
import logging
import sys

from service.settings import parse


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = parse(argv)
    from service.server import serve  # after argument parsing: --help stays fast

    asyncio.run(serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
