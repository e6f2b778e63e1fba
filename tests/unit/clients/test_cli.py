"""The ``rerank`` command against the real server (in process, stand-in models): where it finds
the service, a table with or without ``rich``, and errors as one line, never a traceback."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from rerank_client import cli
from tests.support import API_KEY
from tests.support.servers import InProcessServer


@pytest.fixture
def documents(tmp_path: Path) -> str:
    path = tmp_path / "docs.txt"
    path.write_text("the red car\n\nthe giant panda eats bamboo\na bear\n")
    return str(path)


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RERANK_API_KEY", API_KEY)
    monkeypatch.delenv("RERANK_TARGET", raising=False)
    monkeypatch.delenv("RERANK_GRPC_PORT", raising=False)


def test_without_rich_the_table_is_plain_columns(
    stand_in_server: InProcessServer,
    documents: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for module in ("rich", "rich.console", "rich.table"):
        monkeypatch.setitem(sys.modules, module, None)  # import fails, as where rich is not installed
    assert cli.main(["--target", stand_in_server.target, "query", "giant panda", documents, "--model", "alpha"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    lines = captured.out.splitlines()
    assert lines[0].startswith("alpha: 3 results, ")
    assert lines[1].split() == ["rank", "index", "score", "document"]
    assert lines[2].split()[:2] == ["1", "1"] and lines[2].endswith("  the giant panda eats bamboo")
    assert len(lines) == 5


def test_the_port_the_service_listens_on_is_the_default_target(
    stand_in_server: InProcessServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RERANK_GRPC_PORT", str(stand_in_server.port))
    assert cli.default_target() == f"localhost:{stand_in_server.port}"
    assert cli.main(["--timeout", "10", "models"]) == 0
    assert [line.split("\t")[0] for line in capsys.readouterr().out.splitlines()] == ["alpha", "beta"]
    monkeypatch.setenv("RERANK_TARGET", "elsewhere:1")
    assert cli.default_target() == "elsewhere:1"


def test_help_says_where_the_target_comes_from(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--target" in text and "$RERANK_TARGET" in text and "$RERANK_GRPC_PORT" in text


def test_errors_are_one_line(
    stand_in_server: InProcessServer,
    documents: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    target = ["--target", stand_in_server.target]
    assert cli.main([*target, "query", "panda", str(tmp_path / "absent.txt")]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"rerank: [Errno 2] No such file or directory: '{tmp_path}/absent.txt'"
    ]
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    assert cli.main([*target, "query", "panda", str(tmp_path / "latin1.txt")]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("rerank: 'utf-8' codec can't decode")
    monkeypatch.delenv("RERANK_API_KEY")
    assert cli.main([*target, "query", "panda", documents]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("rerank: UNAUTHENTICATED: ") and line.endswith(
        "(set RERANK_API_KEY; make serve stores a generated key in .rerank/api-key)"
    )


def test_the_instruction_is_sent(
    stand_in_server: InProcessServer, documents: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--instruction`` reaches the service: the stand-in encoders refuse it, as every model
    without a prompt does (the client's own mapping: ``rerank_request``)."""
    from rerank_client.client import rerank_request

    fields = {"model": "alpha", "top_n": None, "return_documents": False, "normalize": False}
    assert not rerank_request("panda", ["a"], **fields).HasField("instruction")
    assert rerank_request("panda", ["a"], **fields, instruction="find it").instruction == "find it"
    query = ["--target", stand_in_server.target, "query", "panda", documents, "--model", "alpha"]
    assert cli.main([*query, "--instruction", "find the bear"]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("rerank: INVALID_ARGUMENT: this model takes no instruction")
    assert cli.main(query) == 0
