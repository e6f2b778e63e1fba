"""bench.overload's figures read from the stack's log (no servers)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("onnx", reason="bench.models needs the [convert] extra")

from bench.overload import gateway_refusals


def test_envoys_own_time_is_read_for_the_429s_only(tmp_path: Path):
    lines = [
        "service | INFO serving",
        "envoy | " + json.dumps({"status": 429, "duration_ms": 12, "admission": "refused"}, separators=(",", ":")),
        "envoy | " + json.dumps({"status": 200, "duration_ms": 9000}, separators=(",", ":")),
        "envoy | " + json.dumps({"status": 429, "duration_ms": 3}, separators=(",", ":")),
        "envoy | " + json.dumps({"status": 429, "duration_ms": None}, separators=(",", ":")),  # a line Envoy cut short
        'envoy | {"status":429,"dur',
    ]
    log = tmp_path / "stack.log"
    log.write_text("\n".join(lines) + "\n")
    assert gateway_refusals(log) == [0.012, 0.003]
