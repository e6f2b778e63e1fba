"""What the CPU's matrix and vector units can do, read once at start-up.

The fast CPU variants depend on instructions that only some CPUs have: bf16 matrix products
run on AMX tiles (Intel Sapphire Rapids and later) and, far more slowly, as AVX-512 BF16 dot
products (Cooper Lake, AMD Zen 4/5); int8 on AMX-INT8 and on VNNI (AVX-512 VNNI or the
VEX-coded AVX-VNNI). Without them, a runtime emulates bf16 (slower than fp32) and int8 falls back to
AVX2's ``vpmaddubsw`` pairs. :func:`detect` reads the flags the kernel reports in
``/proc/cpuinfo``; elsewhere (macOS, Windows, a container without ``/proc``) every flag is
``False`` and ``source`` says why, so callers fall back to fp32 rather than guess.

The service shows :meth:`CpuFeatures.to_json` in ``/v1/models`` and logs :meth:`summary`.
"""

from __future__ import annotations

import functools
import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

CPUINFO = Path("/proc/cpuinfo")

# Record field -> the flag's name in /proc/cpuinfo (Linux's arch/x86 names).
_FLAGS = {
    "amx_bf16": "amx_bf16",
    "amx_int8": "amx_int8",
    "amx_tile": "amx_tile",
    "avx512_bf16": "avx512_bf16",
    "avx512_vnni": "avx512_vnni",
    "avx_vnni": "avx_vnni",
    "avx512f": "avx512f",
    "avx2": "avx2",
}
_LABELS = {
    "amx_bf16": "AMX-BF16",
    "amx_int8": "AMX-INT8",
    "amx_tile": "AMX-TILE",
    "avx512_bf16": "AVX-512 BF16",
    "avx512_vnni": "AVX-512 VNNI",
    "avx_vnni": "AVX-VNNI",
    "avx512f": "AVX-512F",
    "avx2": "AVX2",
}


@dataclass(frozen=True)
class CpuFeatures:
    """The CPU's model name and the feature flags that decide which variants pay."""

    model: str
    amx_bf16: bool = False
    amx_int8: bool = False
    amx_tile: bool = False
    avx512_bf16: bool = False
    avx512_vnni: bool = False
    avx_vnni: bool = False
    avx512f: bool = False
    avx2: bool = False
    source: str = CPUINFO.as_posix()
    """Where the flags came from, or why there are none."""

    @property
    def amx(self) -> bool:
        """AMX tiles usable for bf16 and int8 matrix products."""
        return self.amx_tile and (self.amx_bf16 or self.amx_int8)

    @property
    def native_bf16(self) -> bool:
        """bf16 dot products in hardware (AMX-BF16 or AVX-512 BF16): bf16 can beat fp32."""
        return self.amx_bf16 or self.avx512_bf16

    @property
    def native_int8(self) -> bool:
        """int8 dot products accumulating in int32 in one instruction (AMX-INT8 or VNNI)."""
        return self.amx_int8 or self.avx512_vnni or self.avx_vnni

    def flags(self) -> list[str]:
        """The labels of the flags present, strongest first (``AMX-BF16``, ..., ``AVX2``)."""
        return [label for name, label in _LABELS.items() if getattr(self, name)]

    def summary(self) -> str:
        """One line for the start-up log, e.g. ``AMD EPYC: AVX-512 BF16, AVX-512 VNNI, ... (no AMX)``."""
        flags = self.flags()
        listed = ", ".join(flags) if flags else "none of AMX, AVX-512, AVX-VNNI, AVX2"
        return f"{self.model}: {listed}{'' if self.amx else ' (no AMX)'}"

    def to_json(self) -> dict[str, Any]:
        """Every flag, the derived ``amx`` / ``native_bf16`` / ``native_int8``, model and source."""
        data = asdict(self)
        data.update(amx=self.amx, native_bf16=self.native_bf16, native_int8=self.native_int8)
        return data


def parse_cpuinfo(text: str, source: str = CPUINFO.as_posix()) -> CpuFeatures:
    """Reads the first processor's ``model name`` and ``flags`` from ``/proc/cpuinfo`` text.

    (The kernel reports the same flags for every core of a machine.)
    """
    model = ""
    flags: set[str] | None = None
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip().lower()
        if key == "model name" and not model:
            model = value.strip()
        elif key == "flags" and flags is None:
            flags = set(value.split())
        if model and flags is not None:
            break
    if flags is None:
        return CpuFeatures(
            model=model or platform.processor() or platform.machine() or "unknown",
            source=f"{source}: no x86 'flags' line",
        )
    return CpuFeatures(
        model=model or "unknown", source=source, **{field: flag in flags for field, flag in _FLAGS.items()}
    )


def read(path: Path = CPUINFO) -> CpuFeatures:
    """The features of the CPU described by ``path`` (``/proc/cpuinfo``), or none if unreadable."""
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return CpuFeatures(
            model=platform.processor() or platform.machine() or "unknown",
            source=f"{path}: unreadable ({exc.__class__.__name__}); features unknown",
        )
    return parse_cpuinfo(text, source=path.as_posix())


@functools.cache
def detect() -> CpuFeatures:
    """This machine's CPU features (read once per process)."""
    return read()
