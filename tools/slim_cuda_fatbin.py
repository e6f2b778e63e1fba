"""Keep one GPU architecture's machine code in a CUDA shared library, zeroing the rest.

``onnxruntime-gpu`` ships ``libonnxruntime_providers_cuda.so`` with SASS for six
architectures (sm_75 ... sm_120): 218 MB of its 284 MB. A machine with one kind of GPU loads
only its own architecture's cubin, so the others can be zeroed in place: the ELF layout and
every fatbin header stay as they are (the driver still parses them), but the payloads
compress to nothing. Used to ship the CUDA provider to a Hopper test machine as a ~70 MB
archive instead of 255 MB (``tools/pack_onnxruntime_gpu.sh``).

    python tools/slim_cuda_fatbin.py LIB.so            # list architectures and sizes
    python tools/slim_cuda_fatbin.py LIB.so --keep 90  # rewrite LIB.so keeping sm_90 only

Fatbin layout (as parsed and checked here; a mismatch aborts without writing): the
``.nv_fatbin`` section is a run of fatbins, each a 16-byte header (magic 0xBA55ED50, version,
header size, payload size) followed by entries, each with its own header (kind, version,
header size, padded payload size, ..., SM version at byte 28). A fatbin is only pruned if it
holds an ELF entry for the kept architecture, so nothing loses its only code.
"""

from __future__ import annotations

import argparse
import struct
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

FATBIN_MAGIC = 0xBA55ED50
KIND_ELF = 2


@dataclass(frozen=True)
class Entry:
    offset: int
    kind: int
    header_size: int
    padded_size: int
    sm: int


def fatbin_section(path: Path) -> tuple[int, int]:
    """(file offset, size) of ``.nv_fatbin``, read with readelf."""
    out = subprocess.run(["readelf", "-S", "-W", str(path)], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        if "] .nv_fatbin " in line:
            fields = line.split("]", 1)[1].split()
            return int(fields[3], 16), int(fields[4], 16)
    raise SystemExit(f"{path}: no .nv_fatbin section")


def parse(data: bytes, start: int, size: int) -> list[list[Entry]]:
    """Every fatbin's entries; raises ValueError where the layout is not the expected one."""
    fatbins: list[list[Entry]] = []
    pos, end = start, start + size
    while pos < end:
        magic, _version, header_size, fat_size = struct.unpack_from("<IHHQ", data, pos)
        if magic != FATBIN_MAGIC:
            if data[pos] == 0:  # alignment padding between fatbins
                pos += 1
                continue
            raise ValueError(f"unexpected bytes at {pos:#x}")
        entry, fat_end = pos + header_size, pos + header_size + fat_size
        entries = []
        while entry < fat_end:
            kind, _v, entry_header, padded = struct.unpack_from("<HHII", data, entry)
            (sm,) = struct.unpack_from("<I", data, entry + 28)
            entries.append(Entry(entry, kind, entry_header, padded, sm))
            entry += entry_header + padded
        if entry != fat_end:
            raise ValueError(f"fatbin at {pos:#x}: entries end at {entry:#x}, header says {fat_end:#x}")
        fatbins.append(entries)
        pos = fat_end
    return fatbins


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("library", type=Path)
    parser.add_argument("--keep", type=int, help="SM version to keep, e.g. 90 for H100/H200")
    args = parser.parse_args()
    data = bytearray(args.library.read_bytes())
    offset, size = fatbin_section(args.library)
    fatbins = parse(data, offset, size)
    sizes = Counter()
    for entries in fatbins:
        for e in entries:
            sizes[("elf" if e.kind == KIND_ELF else f"kind{e.kind}", e.sm)] += e.padded_size
    print(f"{args.library.name}: {len(fatbins)} fatbins, {size / 1e6:.1f} MB")
    for (kind, sm), n in sorted(sizes.items(), key=lambda kv: kv[0][1]):
        print(f"  sm_{sm} {kind}: {n / 1e6:.1f} MB")
    if args.keep is None:
        return 0
    zeroed = 0
    for entries in fatbins:
        if not any(e.kind == KIND_ELF and e.sm == args.keep for e in entries):
            continue
        for e in entries:
            if e.sm != args.keep:
                body = e.offset + e.header_size
                data[body : body + e.padded_size] = bytes(e.padded_size)
                zeroed += e.padded_size
    args.library.write_bytes(data)
    print(f"kept sm_{args.keep}; zeroed {zeroed / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
