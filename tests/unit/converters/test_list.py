"""``rerank-convert --list`` never cuts the model names: users copy them, whatever the terminal's
width, and from a pipe."""

from __future__ import annotations

import fcntl
import os
import struct
import subprocess
import sys
import termios

import pytest

from rerank.converters import cli
from rerank.converters.catalog import CATALOG
from tests.support import REPO


def assert_whole_names(output: str) -> None:
    lines = [line.rstrip() for line in output.splitlines()]
    for entry in CATALOG.values():
        assert entry.name in lines, entry.name
        assert f"    hub:  {entry.hub_repo}" in lines, entry.hub_repo
        assert f"    gguf: {entry.gguf_repo}" in lines, entry.gguf_repo
    assert "…" not in output


def test_in_process(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("COLUMNS", "40")
    assert cli.main(["--list"]) == 0
    assert_whole_names(capsys.readouterr().out)


@pytest.mark.parametrize("columns", ["40", "200"])
def test_piped(columns: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "rerank.converters.cli", "--list"],
        cwd=REPO,
        env={**os.environ, "COLUMNS": columns},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert_whole_names(result.stdout)
    assert result.stderr == ""


def test_in_a_narrow_terminal() -> None:
    """A real 40-column pseudo-terminal, as a user's narrow window."""
    leader, follower = os.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 40, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    process = subprocess.Popen(
        [sys.executable, "-m", "rerank.converters.cli", "--list"], cwd=REPO, env=env, stdout=follower, stderr=follower
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # EIO: the terminal's other side is closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert process.wait(timeout=60) == 0
    assert_whole_names(b"".join(chunks).decode().replace("\r\n", "\n"))
