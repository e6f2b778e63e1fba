"""User input quoted back in an error message is bounded."""

from __future__ import annotations

import pytest

from rerank.service.errors import QUOTE_LIMIT, quote


@pytest.mark.parametrize("value", ["", "x", "it's", "熊猫", "a\nb", "y" * QUOTE_LIMIT])
def test_short_input_is_its_repr(value: str) -> None:
    assert quote(value) == repr(value)


def test_long_input_is_cut_and_its_length_told() -> None:
    value = "z" * (QUOTE_LIMIT + 1)
    assert quote(value) == repr("z" * QUOTE_LIMIT) + f"... ({QUOTE_LIMIT + 1} characters)"
    huge = quote("\n" * 4_000_000)
    assert len(huge) < 2 * QUOTE_LIMIT + 40  # escaped characters count twice in the repr
    assert huge.endswith("... (4000000 characters)")


def test_the_limit_can_be_chosen() -> None:
    assert quote("abcdef", limit=3) == "'abc'... (6 characters)"
