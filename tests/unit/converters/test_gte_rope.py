"""GTE's fixed-NTK RoPE, as the converter translates it: config.json -> (base, position scale) ->
transformers' rope parameters. (Whether the translation scores right is the parity tests' job,
against the remote code's own formula in tests/reference.py.)"""

from __future__ import annotations

import math

from rerank.converters.families.gte import gte_rope, gte_rope_parameters
from rerank.converters.spec import EncoderSpec

NEW_CONFIG = {"rope_theta": 20000, "rope_scaling": {"type": "ntk", "factor": 8.0}, "hidden_size": 768}


def _spec(base: float, scale: float) -> EncoderSpec:
    return EncoderSpec(
        family="gte",
        num_layers=1,
        hidden=768,
        heads=12,
        intermediate=4,
        layer_norm_eps=1e-12,
        max_length=8192,
        positions="rope",
        feed_forward="gelu-gated-second",
        head="pooler",
        rope_base=base,
        rope_position_scale=scale,
    )


def test_ntk_folds_into_base_and_position_scale() -> None:
    base, scale = gte_rope({**NEW_CONFIG, "num_attention_heads": 12})
    assert base == 160000.0 and math.isclose(scale, 8.0 ** (2 / 64))


def test_unscaled_and_transformers_gte_configs() -> None:
    assert gte_rope({"rope_theta": 10000, "hidden_size": 64, "num_attention_heads": 4}) == (10000.0, 1.0)
    linear = {"rope_parameters": {"rope_type": "linear", "rope_theta": 160000.0, "factor": 1.07}}
    assert gte_rope(linear) == (160000.0, 1.07)


def test_transformers_rope_parameters() -> None:
    assert gte_rope_parameters(_spec(160000.0, 1.0)) == {"rope_type": "default", "rope_theta": 160000.0}
    assert gte_rope_parameters(_spec(160000.0, 1.07)) == {"rope_type": "linear", "rope_theta": 160000.0, "factor": 1.07}
