"""Runs ``rerank-convert``'s ``main`` on many sources in one process, under an address-space limit.

``python -m tests.integration.converters.crafted_runner LIMIT OUT SOURCE...``: sets
``RLIMIT_AS`` to LIMIT bytes before anything is imported, then converts each SOURCE into OUT
through :func:`rerank.converters.cli.main` (the code path of the ``rerank-convert`` command),
its stdout and stderr (the file descriptors, so native libraries' output too) captured per
source. Prints one JSON line per source as soon as it is done: ``{"source", "status",
"output"}``, where status is main's return value or, for an exception that escaped it, its
type's name (which the real command would have shown as a traceback). Sharing the process
shares the start-up cost (Python, numpy, tokenizers, transformers) among all the sources.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import tempfile
import traceback


def convert(source: str, out: str) -> dict[str, object]:
    from rerank.converters import cli

    with tempfile.TemporaryFile() as capture:
        sys.stdout.flush()
        sys.stderr.flush()
        saved = os.dup(1), os.dup(2)
        os.dup2(capture.fileno(), 1)
        os.dup2(capture.fileno(), 2)
        try:
            status: object = cli.main([source, "--out", out, "--variants", "none"])
        except BaseException as exc:  # noqa: BLE001 -- what the real command would show as a traceback
            traceback.print_exc()
            status = type(exc).__name__
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
        capture.seek(0)
        output = capture.read().decode("utf-8", "replace")
    return {"source": source, "status": status, "output": output}


def main(argv: list[str]) -> None:
    limit, out, sources = int(argv[0]), argv[1], argv[2:]
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    for source in sources:
        print(json.dumps(convert(source, out)), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
