"""Checks a SentencePiece ``precompiled_charsmap`` before the tokenizers library reads it.

The charsmap (XLM-R's normalisation table, in GGUF metadata or a ``tokenizer.json``) is a u32
trie size, a darts-clone double-array trie of u32 units, and a blob of NUL-terminated UTF-8
replacement strings. The tokenizers library indexes the trie without bounds checks while it
normalises text: a crafted table passes its constructor and then panics (a Rust panic, not a
Python exception) on some input, at conversion or, worse, in the service. So every path
through the trie that any input can take is walked here first, and a table where one leaves
the trie or points outside the strings is refused.
"""

from __future__ import annotations

import struct

import numpy as np

MAX_UNITS = 1 << 24
"""Trie units accepted (XLM-R's table has 44,800)."""


def charsmap_problem(data: bytes) -> str | None:
    """What is wrong with the charsmap ``data``, or None when every lookup stays in bounds."""
    if len(data) < 4:
        return f"{len(data)} bytes, too short for its trie size"
    (trie_bytes,) = struct.unpack_from("<I", data)
    units = trie_bytes // 4
    if not 0 < units <= MAX_UNITS or 4 + 4 * units > len(data):
        return f"a trie of {trie_bytes} bytes in {len(data)}"
    array = np.frombuffer(data, dtype="<u4", count=units, offset=4).astype(np.int64)
    strings = data[4 + 4 * units :]
    try:
        strings.decode("utf-8")
    except UnicodeDecodeError:
        return "replacement strings that are not UTF-8"
    # Where a replacement may start: any byte of valid UTF-8 but a continuation byte, or the end.
    boundaries = np.append(np.frombuffer(strings, dtype=np.uint8) & 0xC0 != 0x80, True)

    offsets = (array >> 10) << ((array & (1 << 9)) >> 6)
    labels = array & ((1 << 31) | 0xFF)
    has_leaf = (array >> 8) & 1 == 1
    values = array & ((1 << 31) - 1)
    keys = np.arange(1, 256, dtype=np.int64)  # a NUL byte ends a lookup
    seen = np.zeros(units, dtype=bool)
    frontier = np.array([offsets[0]], dtype=np.int64)
    while frontier.size:
        if frontier.max() >= units:
            return "a trie node outside the trie"
        frontier = frontier[~seen[frontier]]
        seen[frontier] = True
        steps = (frontier[:, None] ^ keys[None, :]).ravel()
        if steps.size and steps.max() >= units:
            return "a trie edge outside the trie"
        taken = steps[labels[steps] == np.tile(keys, frontier.size)]
        following = taken ^ offsets[taken]
        if following.size and following.max() >= units:
            return "a trie node outside the trie"
        leaves = following[has_leaf[taken]]
        found = values[leaves]
        if found.size and (found.max() > len(strings) or not boundaries[found].all()):
            return "a replacement outside the replacement strings"
        frontier = np.unique(following)
    return None
