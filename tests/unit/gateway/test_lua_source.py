"""Envoy's Lua scripts come from the package's .lua files: every constant a file declares is set
from the configuration, and a constant the renderer and the file disagree on is an error at
render time, not a Lua error in Envoy."""

from __future__ import annotations

import pytest

from rerank.gateway.envoy_config.lua_source import literal, script, source


def test_each_declared_constant_is_set_and_the_files_comment_is_left_out() -> None:
    code = script("default", LIST_FIELDS={"/x": "items"})
    assert code.startswith('local LIST_FIELDS = {["/x"] = "items"}\n')
    assert "BEGIN CONSTANTS" in source("default") and "BEGIN CONSTANTS" not in code
    assert "function top_level_value" in code


@pytest.mark.parametrize("constants", [{}, {"LIST_FIELDS": {}, "EXTRA": 1}, {"LIST_FIELD": {}}])
def test_a_constant_missing_or_unknown_is_refused(constants: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="declares the constants"):
        script("default", **constants)


def test_values_become_lua_literals() -> None:
    assert literal({"a": [1, True, None]}) == '{["a"] = {1, true, nil}}'
    assert literal('say "hi"\\\n') == '"say \\"hi\\"\\\\\\010"'
