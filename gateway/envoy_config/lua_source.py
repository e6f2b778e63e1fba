"""Envoy's Lua scripts, read from this package's ``lua/`` files with their constants set.

A script's constants are the ``local NAME = value`` lines between ``-- BEGIN CONSTANTS`` and
``-- END CONSTANTS`` after its leading comment (which documents them; the file's own values are
examples, so that it runs and lints as it is). :func:`script` sets each to a configured value,
written as a Lua literal from Python data: no Lua code is built from strings here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from importlib import resources

BEGIN = "-- BEGIN CONSTANTS\n"
END = "-- END CONSTANTS\n"
_CONSTANT = re.compile(r"^local (\w+) = .*$", re.MULTILINE)


def source(name: str) -> str:
    """The text of ``lua/<name>.lua`` as shipped."""
    return (resources.files(__package__) / "lua" / f"{name}.lua").read_text(encoding="utf-8")


def script(name: str, **constants: object) -> str:
    """``lua/<name>.lua`` as Envoy runs it: each constant set to its value in ``constants`` (every
    constant the file declares must be given, and only those: a :class:`ValueError` otherwise),
    without the file's leading comment and the block's markers."""
    text = source(name)
    _, begin, rest = text.partition(BEGIN)
    block, end, tail = rest.partition(END) if begin else ("", "", text)
    declared = _CONSTANT.findall(block)
    if (begin and not end) or sorted(declared) != sorted(constants) or len(set(declared)) != len(declared):
        raise ValueError(f"lua/{name}.lua declares the constants {declared}; given {sorted(constants)}")
    block = _CONSTANT.sub(lambda m: f"local {m[1]} = {literal(constants[m[1]])}", block)
    return block + tail if begin else _without_leading_comment(text)


def _without_leading_comment(text: str) -> str:
    lines = text.splitlines(keepends=True)
    while lines and lines[0].startswith("--"):
        lines.pop(0)
    return "".join(lines)


def literal(value: object) -> str:
    """``value`` (a string, number, bool, None, a sequence or a mapping of them) as a Lua literal."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + "".join(_char(c) for c in value) + '"'
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"[{literal(k)}] = {literal(v)}" for k, v in value.items()) + "}"
    if isinstance(value, Sequence):
        return "{" + ", ".join(literal(v) for v in value) + "}"
    raise TypeError(f"no Lua literal for {value!r}")


def _char(c: str) -> str:
    if c in '"\\':
        return "\\" + c
    if " " <= c <= "~":
        return c
    return "".join(f"\\{b:03d}" for b in c.encode())
