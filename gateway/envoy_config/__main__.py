"""``python -m rerank.gateway.envoy_config``: the repository's ``envoy.yaml`` on stdout."""

import sys

from rerank.gateway.envoy_config.bootstrap import render_default

sys.stdout.write(render_default())
