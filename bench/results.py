"""``bench/results/``: the latest run of each benchmark, and its index.

Every benchmark writes its record as ``<stem>.json`` (with ``date``, ``command`` and ``cpu``)
plus companions of the same stem (``.png``, ``.md``, ``.log``), overwriting the previous run:
git keeps the history, the folder keeps one current file per benchmark. :func:`write_index`
rewrites ``README.md`` there from the records themselves, so the index cannot drift.

``python -m bench.results`` rewrites the index.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
INDEX = "README.md"


def now() -> str:
    """The local time, as records carry it (``2026-12-06 14:05``)."""
    return dt.datetime.now().strftime("%Y-%m-%d %H:%M")


def save(stem: str, record: dict[str, Any], out: Path = RESULTS) -> Path:
    """Writes ``<out>/<stem>.json`` (``record`` must name its ``date``, ``command`` and ``cpu``)
    and refreshes the index; returns the path."""
    missing = {"date", "command", "cpu"} - set(record)
    if missing:
        raise ValueError(f"a results record needs {sorted(missing)}")
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{stem}.json"
    partial = path.with_suffix(".json.tmp")
    partial.write_text(json.dumps(record, indent=1, default=float) + "\n")
    partial.replace(path)
    write_index(out)
    return path


def _cpu(value: Any) -> str:
    return str(value.get("line", value.get("model", "?"))) if isinstance(value, dict) else str(value or "?")


def index_rows(out: Path = RESULTS) -> list[tuple[str, str, str, str]]:
    """(files, date, command, CPU) for every record in ``out``, by name."""
    rows = []
    for path in sorted(out.glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except ValueError:
            continue
        companions = sorted(p.name for p in out.glob(f"{path.stem}.*") if p.suffix not in (".json", ".tmp"))
        files = ", ".join(f"`{name}`" for name in [path.name, *companions])
        rows.append((files, str(record.get("date", "?")), str(record.get("command", "?")), _cpu(record.get("cpu"))))
    return rows


def write_index(out: Path = RESULTS) -> Path:
    """Rewrites ``<out>/README.md``: one row per record."""
    lines = [
        "# Benchmark results",
        "",
        "The latest run of each benchmark (older runs: `git log -p bench/results/`). Written by the",
        "benchmarks themselves; this index by `python -m bench.results`. Figures from a shared or busy",
        "machine are marked so in their record's notes.",
        "",
        "| files | date | command | CPU |",
        "|---|---|---|---|",
    ]
    lines += [f"| {files} | {date} | `{command}` | {cpu} |" for files, date, command, cpu in index_rows(out)]
    path = out / INDEX
    path.write_text("\n".join(lines) + "\n")
    return path


if __name__ == "__main__":
    print(write_index(Path(sys.argv[1]) if len(sys.argv) > 1 else RESULTS))
