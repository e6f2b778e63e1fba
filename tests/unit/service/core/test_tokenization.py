"""The pair encoder's arithmetic: framing, truncation, and the sliding windows of ``long_documents="window"``.

The tokenizer is built in code with one token per word, and the document's words are its own
positions (``"0 1 2 ..."``), so every scored token says where in the document it came from.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from rerank.service.core.tokenization import PairEncoder
from rerank.service.errors import QueryTooLong
from tests.support.stand_in import BERT_LIKE, FIRST_WORD_ID, word_tokenizer

SPECIALS = 3  # [CLS] query [SEP] document [SEP]
QUERY = "q"  # one token


@pytest.fixture(scope="module")
def tokenizer_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tokenizer") / "tokenizer.json"
    word_tokenizer(["q", *(str(i) for i in range(1000))]).save(str(path))
    return path


def encoder_with_room(tokenizer_file: Path, room: int) -> PairEncoder:
    """An encoder whose pairs leave ``room`` document tokens beside :data:`QUERY`."""
    return PairEncoder(tokenizer_file, BERT_LIKE, max_length=room + SPECIALS + 1)


def document(n: int) -> str:
    return " ".join(str(i) for i in range(n))


def positions(ids: list[int]) -> list[int]:
    """Document positions of a pair's document tokens (``"0"`` has the first id after ``q``)."""
    first = FIRST_WORD_ID + 1
    return [i - first for i in ids]


def document_part(pair_ids: list[int]) -> list[int]:
    """The ids between ``[CLS] q [SEP]`` and the final ``[SEP]``."""
    return pair_ids[SPECIALS : len(pair_ids) - 1]


def windows_of(tokenizer_file: Path, room: int, n: int) -> list[list[int]]:
    encoded = encoder_with_room(tokenizer_file, room).encode(QUERY, [document(n)], "window")
    assert encoded.truncated_tokens == [0]  # nothing is cut when windows cover the document
    assert encoded.windows == [len(encoded.pairs)]
    return [positions(document_part(p.ids.tolist())) for p in encoded.pairs]


# Hand-worked: room 27 leaves an overlap of 6 (25 %, rounded down), so windows start every 21 tokens.
@pytest.mark.parametrize(
    ("n", "starts"),
    [
        (1, [0]),
        (27, [0]),  # fits exactly: one window
        (28, [0, 21]),  # one token over: a second window, [21, 28)
        (48, [0, 21]),  # [21, 48) ends exactly at the end
        (49, [0, 21, 42]),
        (100, [0, 21, 42, 63, 84]),
    ],
)
def test_window_starts(tokenizer_file: Path, n: int, starts: list[int]) -> None:
    windows = windows_of(tokenizer_file, 27, n)
    assert [w[0] for w in windows] == starts
    assert windows[-1][-1] == n - 1  # the last window ends at the document's end


@pytest.mark.parametrize("room", [1, 2, 3, 4, 5, 8, 13, 27, 64])
def test_windows_cover_every_token_with_a_quarter_overlap(tokenizer_file: Path, room: int) -> None:
    for n in range(1, 3 * room + 7):
        windows = windows_of(tokenizer_file, room, n)
        assert all(w == list(range(w[0], w[0] + len(w))) for w in windows), "a window is not a contiguous span"
        assert all(len(w) <= room for w in windows)
        assert all(len(w) == room for w in windows[:-1]), "only the last window may be short"
        assert windows[0][0] == 0 and windows[-1][-1] == n - 1
        covered = sorted({p for w in windows for p in w})
        assert covered == list(range(n)), f"room {room}, {n} tokens: not every token is scored"
        for before, after in itertools.pairwise(windows):
            assert before[-1] - after[0] + 1 == room // 4, f"room {room}: overlap is not 25 % rounded down"

        # As few windows as that overlap allows: one fewer could not reach the end.
        def reach(count: int, room: int = room) -> int:
            return room + (count - 1) * (room - room // 4)

        assert n <= reach(len(windows)) and (len(windows) == 1 or n > reach(len(windows) - 1))


def test_every_pair_fits_the_model(tokenizer_file: Path) -> None:
    encoder = encoder_with_room(tokenizer_file, 10)
    for mode in ("truncate", "window"):
        encoded = encoder.encode(QUERY, [document(n) for n in (0, 1, 10, 11, 95)], mode)
        assert max(len(p.ids) for p in encoded.pairs) == encoder.max_length
        assert [p.document for p in encoded.pairs] == sorted(p.document for p in encoded.pairs)


def test_truncate_keeps_the_head_and_counts_the_rest(tokenizer_file: Path) -> None:
    encoded = encoder_with_room(tokenizer_file, 10).encode(QUERY, [document(4), document(10), document(25)])
    assert encoded.windows == [1, 1, 1]
    assert encoded.truncated_tokens == [0, 0, 15]
    assert [positions(document_part(p.ids.tolist())) for p in encoded.pairs] == [
        list(range(4)),
        list(range(10)),
        list(range(10)),
    ]


def test_window_mode_leaves_short_documents_alone(tokenizer_file: Path) -> None:
    short = encoder_with_room(tokenizer_file, 10).encode(QUERY, ["", document(3), document(10)], "window")
    assert short.windows == [1, 1, 1] and short.truncated_tokens == [0, 0, 0]
    assert [len(document_part(p.ids.tolist())) for p in short.pairs] == [0, 3, 10]


def test_pair_framing_and_type_ids(tokenizer_file: Path) -> None:
    encoder = encoder_with_room(tokenizer_file, 10)
    (pair,) = encoder.encode("q 7", [document(2)]).pairs
    q, seven = FIRST_WORD_ID, FIRST_WORD_ID + 1 + 7
    assert pair.ids.tolist() == [2, q, seven, 3, FIRST_WORD_ID + 1, FIRST_WORD_ID + 2, 3]
    assert pair.type_ids.tolist() == [0, 0, 0, 0, 1, 1, 1]
    assert pair.ids.dtype == pair.type_ids.dtype == "int64"


def test_usage_counts_every_scored_token(tokenizer_file: Path) -> None:
    encoded = encoder_with_room(tokenizer_file, 27).encode(QUERY, [document(100), document(5)], "window")
    # Five windows of the long document (27, 27, 27, 27, 16 tokens), one of the short one.
    assert encoded.total_tokens == 5 * (SPECIALS + 1) + 4 * 27 + 16 + (SPECIALS + 1) + 5


def test_a_query_that_leaves_no_room_is_refused(tokenizer_file: Path) -> None:
    encoder = PairEncoder(tokenizer_file, BERT_LIKE, max_length=8)
    assert len(encoder.encode("q 1 2 3", ["4 5"]).pairs[0].ids) == 8  # one document token fits
    with pytest.raises(QueryTooLong) as refused:
        encoder.encode("q 1 2 3 4", ["5"])
    assert refused.value.field == "query" and refused.value.reason == "QUERY_TOO_LONG"
    assert "5 tokens" in refused.value.message and "at most 8" in refused.value.message
