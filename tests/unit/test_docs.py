"""The documentation names only what exists.

For the README, every page of ``docs/``, ``bench/README.md`` and ``deploy/README.md``: every
repository path written as code (a backticked path under a top-level folder, or a bare file name
with a source extension), every ``make`` target, every ``RERANK_*`` variable, every module of
ours (``rerank.service...``, ``bench.run``, ``tests.support``...) and every relative link, with
its ``#anchor``, must resolve. A renamed file, a removed setting or a moved heading then fails
here instead of misleading a reader.
"""

from __future__ import annotations

import ast
import dataclasses
import re
import shlex
import subprocess
from functools import cache
from pathlib import Path

import pytest

from rerank.service.settings import Settings, env_name
from tests.support import REPO

README_LIMIT = 250
"""The README says what rerank is, the two commands, a first call and where to read on."""

NOT_SETTINGS = {
    "RERANK_API_KEY": "the clients' key (rerank_client, the rerank command)",
    "RERANK_TARGET": "the rerank command's service address",
    "RERANK_FUZZ": "make fuzz's full run",
    "RERANK_FUZZ_SEED": "replays one fuzzing seed",
    "RERANK_PARITY": "make test-parity",
    "RERANK_TEST_IMAGE": "make test-container's image",
}
"""Environment variables the docs may name that are not the service's settings: the clients' and
the test suites' own. Each must still be read somewhere in the code (checked below)."""

SOURCE_SUFFIXES = {".py", ".md", ".sh", ".toml", ".proto", ".yaml", ".yml", ".lock", ".in", ".cfg"}
"""A bare backticked name with one of these suffixes must be a file of the repository (other
suffixes name runtime files, such as a model folder's ``rerank.json``)."""

MODULE_ROOTS = {
    "rerank.service": "service",
    "rerank.gateway": "gateway",
    "rerank.converters": "converters",
    "rerank_client": "clients/python/rerank_client",
    "tests": "tests",
    "bench": "bench",
}
MODULE = re.compile(
    r"(?<![\w./-])(?:rerank\.(?:service|gateway|converters)|rerank_client|tests|bench)(?:\.[a-z_][a-z0-9_]*)*(?![\w/-])"
)
SETTING = re.compile(r"\bRERANK_[A-Z][A-Z0-9_]*")
FENCE = re.compile(r"^ *(```|~~~)[^\n]*\n.*?^ *\1 *$", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$", re.MULTILINE)
MAKE_TARGET = re.compile(r"^([A-Za-z0-9_.-]+(?:[ \t]+[A-Za-z0-9_.-]+)*)[ \t]*::?(?!=)", re.MULTILINE)


def documents() -> list[Path]:
    docs = sorted((REPO / "docs").glob("*.md"))
    return [REPO / "README.md", *docs, REPO / "bench" / "README.md", REPO / "deploy" / "README.md"]


DOCS = documents()


def _id(path: Path) -> str:
    return str(path.relative_to(REPO))


@dataclasses.dataclass
class Page:
    """A markdown file split into what the checks read."""

    path: Path
    text: str
    prose: str
    """The text without fenced blocks and code spans (where links and headings live)."""
    spans: list[str]
    """Inline code spans."""
    blocks: list[str]
    """Fenced code blocks, without their fences."""

    @classmethod
    def read(cls, path: Path) -> Page:
        text = path.read_text(encoding="utf-8")
        blocks = [m.group(0).split("\n", 1)[1].rsplit("\n", 1)[0] for m in FENCE.finditer(text)]
        outside = FENCE.sub("", text)
        spans = [m.group(2).strip() for m in CODE_SPAN.finditer(outside)]
        return cls(path, text, CODE_SPAN.sub("", outside), spans, blocks)

    def code(self) -> list[str]:
        """Every piece of code: each span, and each line of each block."""
        return self.spans + [line for block in self.blocks for line in block.splitlines()]


@cache
def repository_files() -> frozenset[str]:
    """Paths of the checkout's files, tracked or not yet (but not ignored)."""
    try:
        listing = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("needs a git checkout")
    return frozenset(line for line in listing.splitlines() if (REPO / line).exists())


@cache
def top_level() -> frozenset[str]:
    return frozenset(p.split("/", 1)[0] for p in repository_files())


@cache
def file_names() -> frozenset[str]:
    return frozenset(p.rsplit("/", 1)[-1] for p in repository_files())


def named_path(token: str) -> str | None:
    """``token`` as a repository path the docs claim exists, or None if it is not one."""
    token = token.strip("'\"()[],;:")
    token = token.removeprefix("./")
    if not token or "://" in token or token[0] in "/~$<-" or re.search(r"[*<>{}…=]|\.\.\.", token):
        return None
    if "/" in token:
        return token if token.split("/", 1)[0] in top_level() else None
    return token if Path(token).suffix in SOURCE_SUFFIXES else None


def missing_paths(page: Page) -> list[str]:
    missing = []
    for piece in page.code():
        for token in piece.split():
            path = named_path(token)
            if path is None:
                continue
            exists = (REPO / path).exists() if "/" in path else path in file_names()
            if not exists:
                missing.append(path)
    return missing


@cache
def make_targets() -> frozenset[str]:
    makefile = (REPO / "Makefile").read_text()
    return frozenset(t for m in MAKE_TARGET.finditer(makefile) for t in m.group(1).split())


def named_targets(line: str) -> list[str]:
    """The targets of each ``make`` command in a line of shell."""
    try:
        words = shlex.split(line, comments=True)
    except ValueError:
        words = line.split()
    targets, in_make = [], False
    for word in words:
        if word in {";", "&&", "||", "|"} or word.endswith(";"):
            in_make = False
        elif word == "make":
            in_make = True
        elif in_make and re.fullmatch(r"[A-Za-z0-9_.][A-Za-z0-9_./-]*", word):
            targets.append(word)
    return targets


def missing_targets(page: Page) -> list[str]:
    return [t for piece in page.code() for t in named_targets(piece) if t not in make_targets()]


@cache
def settings() -> frozenset[str]:
    return frozenset(env_name(f) for f in dataclasses.fields(Settings))


def unknown_settings(page: Page) -> list[str]:
    return sorted({n for n in SETTING.findall(page.text) if n not in settings() and n not in NOT_SETTINGS})


def defines(module: Path, name: str) -> bool:
    """Whether ``module`` binds ``name`` at its top level."""
    tree = ast.parse(module.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and node.name == name:
            return True
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                return True
        if isinstance(node, ast.Import | ast.ImportFrom) and any(
            (a.asname or a.name.split(".")[0]) == name for a in node.names
        ):
            return True
    return False


def resolves(module: str) -> bool:
    """Whether a dotted name of ours is a module (or a name defined in one)."""
    root = next(r for r in sorted(MODULE_ROOTS, key=len, reverse=True) if module == r or module.startswith(r + "."))
    here = REPO / MODULE_ROOTS[root]
    rest = module[len(root) :].lstrip(".").split(".") if module != root else []
    for i, part in enumerate(rest):
        if (here / part).is_dir():
            here = here / part
        elif (here / f"{part}.py").is_file():
            attributes = rest[i + 1 :]
            return not attributes or defines(here / f"{part}.py", attributes[0])
        else:
            init = here / "__init__.py"
            return init.is_file() and defines(init, part)
    return here.is_dir()


def unknown_modules(page: Page) -> list[str]:
    names = {m.group(0) for piece in page.code() for m in MODULE.finditer(piece)}
    return sorted(n for n in names if not resolves(n))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


@cache
def anchors(path: Path) -> frozenset[str]:
    seen: dict[str, int] = {}
    found = set()
    for m in HEADING.finditer(Page.read(path).prose):
        base = slug(m.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return frozenset(found)


def resolves_link(page: Page, target: str) -> bool:
    """Whether a relative link reaches a file of the repository (and its heading, with ``#``)."""
    path, _, anchor = target.partition("#")
    resolved = (page.path.parent / path).resolve() if path else page.path
    if not resolved.exists() or not resolved.is_relative_to(REPO):
        return False
    return not anchor or (resolved.suffix == ".md" and anchor in anchors(resolved))


def broken_links(page: Page) -> list[str]:
    external = re.compile(r"[a-z][a-z0-9+.-]*:")  # http(s), mailto: not this test's business
    return [t for t in LINK.findall(page.prose) if not external.match(t) and not resolves_link(page, t)]


def test_every_page_is_checked():
    assert REPO / "README.md" in DOCS
    assert len(DOCS) > 4 and all(p.is_file() for p in DOCS)


def test_readme_stays_short():
    lines = (REPO / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= README_LIMIT, f"README.md has {lines} lines: move detail into docs/"


CHECKS = {
    "paths": missing_paths,
    "make targets": missing_targets,
    "settings": unknown_settings,
    "modules": unknown_modules,
    "links": broken_links,
}
"""What each check reports for a page: the names it finds that do not exist."""


@pytest.mark.parametrize("check", CHECKS)
@pytest.mark.parametrize("path", DOCS, ids=_id)
def test_pages_name_what_exists(path, check):
    assert CHECKS[check](Page.read(path)) == [], f"{_id(path)} names {check} that do not exist"


def test_the_variables_that_are_not_settings_are_read_by_the_code():
    code = [p for p in repository_files() if Path(p).suffix in {".py", ".sh", ".js"} or p == "Makefile"]
    text = "\n".join((REPO / p).read_text(encoding="utf-8", errors="replace") for p in code)
    unused = [n for n in NOT_SETTINGS if not re.search(rf"\b{n}\b", text)]
    assert unused == [], "no longer read: remove them from NOT_SETTINGS and the docs"
    assert not set(NOT_SETTINGS) & settings()


def test_the_checks_see_what_they_check():
    """Each check finds what a page with one mistake of its kind has, so none passes by seeing nothing."""
    prose = "[a](../README.md#no-such-heading) [b](missing.md) [c](api.md#errors) RERANK_NO_SUCH RERANK_API_KEYS"
    page = Page(
        REPO / "docs" / "example.md",
        prose,
        prose,
        [
            "service/no_such_module.py",
            "service/settings.py",
            "no_such_file.py",
            "rerank.json",
            "make serve",
            "make no-such-target",
            "rerank.service.core.no_such_module",
            "rerank.service.settings.markdown_table",
        ],
        ["make test MODEL=x   # make lint", "python -m bench.no_such_bench"],
    )
    assert missing_paths(page) == ["service/no_such_module.py", "no_such_file.py"]
    assert missing_targets(page) == ["no-such-target"]
    assert unknown_modules(page) == ["bench.no_such_bench", "rerank.service.core.no_such_module"]
    assert unknown_settings(page) == ["RERANK_NO_SUCH"]
    assert broken_links(page) == ["../README.md#no-such-heading", "missing.md"]
    assert (
        slug("Text Embeddings Inference: POST /rerank and `tei.v1`")
        == "text-embeddings-inference-post-rerank-and-teiv1"
    )
