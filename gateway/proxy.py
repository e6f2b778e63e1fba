"""``rerank-gateway``: Envoy alone, configured from the settings table.

The container image's gateway role: renders Envoy's configuration for the ``gateway`` settings
(upstreams from ``RERANK_UPSTREAMS``, e.g. ``svc1:50051,svc2:50051`` on a container network or
a Kubernetes headless Service's name) and then replaces itself with Envoy (``exec``), so Envoy
is the process that gets the orchestrator's signals. ``--print-config`` prints the
configuration instead; ``--inline-descriptor`` puts the descriptor set into it, for a
configuration that does not depend on the image's file layout. With
``RERANK_UPSTREAMS=rerank-grpc:50051`` that is what ``deploy/kubernetes``'s ConfigMap holds
(:mod:`rerank.gateway.kubernetes` writes it; a test checks that they agree).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from rerank.gateway.descriptor import descriptor_set, inline_descriptor_set
from rerank.gateway.envoy import envoy_binary, envoy_log_level, write_config
from rerank.gateway.envoy_config.bootstrap import render, to_yaml
from rerank.service import __version__
from rerank.service.settings import parse

DESCRIPTION = "Run Envoy alone in front of rerank services, configured from the settings."


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--print-config", action="store_true", help="print the rendered configuration and exit")
    parser.add_argument(
        "--inline-descriptor",
        action="store_true",
        help="embed the descriptor set in the configuration instead of naming its file",
    )


def main(argv: Sequence[str] | None = None) -> int:
    settings, args = parse("gateway", argv, prog="rerank-gateway", description=DESCRIPTION, add_arguments=_arguments)
    descriptor = inline_descriptor_set() if args.inline_descriptor else descriptor_set()
    try:
        if args.print_config:
            sys.stdout.write(to_yaml(render(settings, descriptor=descriptor)))
            return 0
        config = write_config(settings, settings.state_dir / "envoy.yaml", descriptor=descriptor)
    except ValueError as exc:
        print(f"rerank-gateway: {exc}", file=sys.stderr)
        return 2
    binary = str(envoy_binary())
    os.execv(binary, [binary, "-c", str(config), "--log-level", envoy_log_level(settings.log_level)])
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
