"""Helpers the tests share, a module per job, and the values every test uses (the repository's
root, the test API keys, the example query and documents).

* ``processes``: free loopback ports, a process's children and environment;
* ``servers``: the service as a subprocess or in this process (:class:`~tests.support.servers.InProcessServer`);
* ``stand_in``: a model without weights (a real tokenizer, a word-overlap backend), and a gated one
  for the batcher;
* ``waiting``: waiting for a state instead of for time;
* ``calls``: requests and what the faces answer, compared;
* ``conversions``: the real converter CLI, and a converted folder's scores;
* ``certificates``, ``containers`` (Docker), ``otlp`` (a trace collector), ``prometheus`` (parsing
  an exposition), ``load`` (load generation), ``stack`` (``rerank-stack`` as a process), ``redis`` (a
  Redis server), ``limits`` (per-key limits raced by processes sharing a store), ``edge`` (the edge's check).

Imported by the test modules and by the conftest files, never the other way round, and no test
module imports another (``tests/unit/test_import_rules.py`` enforces both). Torch-free, like
every import in it: the unit tests use it too.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
API_KEY = "test-key-0123456789"
OTHER_KEY = "second-key-abcdef"
AUTH = (("authorization", f"Bearer {API_KEY}"),)
"""gRPC metadata carrying :data:`API_KEY`."""

QUERY = "What is a panda?"
DOCS = [
    "hi",
    "it is a bear",
    "The giant panda (Ailuropoda melanoleuca), sometimes called a panda bear or simply panda, "
    "is a bear species endemic to China.",
    "Пан­да — млекопитающее. 熊猫 是 中国 的 动物。",
    "",
]
"""The panda example, a Cyrillic and CJK mix with a soft hyphen, and an empty document."""
