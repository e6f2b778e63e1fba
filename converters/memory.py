"""Keeping a large conversion inside the machine's memory.

Before any weights are read, :func:`check_fits` compares the conversion's estimated peak
resident memory with what the kernel says is available, and refuses a conversion that cannot
fit, instead of letting the kernel kill it minutes later.

The estimate is linear in the checkpoint's parameter count: a baseline for the runtime alone
(Python, torch, transformers, ONNX Runtime), plus several float32 copies of the weights (the
reader's, the ONNX graph's, the reference model's, ONNX Runtime's session, the variants'
rewrites) alive at the peak. Both constants are fitted to the peak RSS of whole
``rerank-convert`` runs from 0.27 M to 568 M parameters (docs/performance.md, "Conversion").
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
from collections.abc import Callable
from pathlib import Path

from rerank.converters.errors import InsufficientMemoryError

BYTES_PER_PARAMETER = 28
"""Peak resident bytes per checkpoint parameter, above :data:`BASELINE_BYTES` (see above)."""
BASELINE_BYTES = 550_000_000
"""What any conversion holds whatever the model (the runtime alone, rounded up)."""
MEMINFO = Path("/proc/meminfo")


def release_memory() -> None:
    """Collects garbage and hands freed heap back to the OS: a bge-m3 graph is 2.3 GB, and the
    allocator would otherwise keep each freed copy's pages, adding up past the machine's memory."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def estimated_peak_bytes(parameters: int) -> int:
    """The peak resident memory of converting a checkpoint of ``parameters`` parameters."""
    return BASELINE_BYTES + BYTES_PER_PARAMETER * parameters


def available_bytes(meminfo: Path = MEMINFO) -> int | None:
    """``MemAvailable`` (what can be allocated without swapping), or None where the kernel does
    not say (not Linux)."""
    try:
        text = meminfo.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key == "MemAvailable":
            amount, _, unit = value.strip().partition(" ")
            return int(amount) * (1024 if unit.strip().lower() == "kb" else 1)
    return None


def _gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB"


def check_fits(parameters: int, progress: Callable[[str], None], *, available: int | None = None) -> None:
    """Raises :class:`InsufficientMemoryError` when a conversion of ``parameters`` parameters is
    estimated to need more memory than is available (``available``: default, MemAvailable)."""
    needed = estimated_peak_bytes(parameters)
    if available is None:
        available = available_bytes()
    if available is None:
        progress(f"memory: {parameters / 1e6:.3g}M parameters, about {_gb(needed)} at the peak (available: unknown)")
        return
    progress(f"memory: {parameters / 1e6:.3g}M parameters, about {_gb(needed)} at the peak; {_gb(available)} available")
    if needed > available:
        raise InsufficientMemoryError(
            f"converting {parameters / 1e6:.3g}M parameters needs about {_gb(needed)} of memory at its peak, "
            f"but only {_gb(available)} is available (MemAvailable); free some memory, or pass "
            "--skip-memory-check to try anyway"
        )
