"""CPU feature detection from /proc/cpuinfo text."""
# ruff: noqa: E501 - a real /proc/cpuinfo flags line is one long line

from __future__ import annotations

from pathlib import Path

from rerank.service.backends.cpu_features import CpuFeatures, detect, parse_cpuinfo, read

SAPPHIRE_RAPIDS = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu vme sse sse2 avx avx2 fma avx512f avx512dq avx512bw avx512vl avx512_vnni avx512_bf16 avx_vnni amx_bf16 avx512_fp16 amx_tile amx_int8 arch_lbr
bugs\t\t: spectre_v1

processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu
"""

ZEN5_NO_AMX = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC
flags\t\t: fpu sse2 avx f16c avx2 avx512f avx512dq avx_vnni avx512_bf16 avx512vbmi avx512_vnni avx512_bitalg
"""

HASWELL = """processor : 0
model name : Intel(R) Xeon(R) CPU E5-2680 v3 @ 2.50GHz
flags : fpu sse2 avx fma avx2 bmi2
"""

ARM = """processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp bf16 i8mm
CPU implementer\t: 0x41
"""


def test_amx_machine():
    f = parse_cpuinfo(SAPPHIRE_RAPIDS)
    assert f.model == "Intel(R) Xeon(R) Platinum 8480+"
    assert f.amx and f.amx_bf16 and f.amx_int8 and f.amx_tile
    assert f.native_bf16 and f.native_int8 and f.avx512f and f.avx2
    assert "AMX-BF16" in f.flags() and "(no AMX)" not in f.summary()


def test_zen5_has_bf16_and_vnni_but_no_amx():
    f = parse_cpuinfo(ZEN5_NO_AMX)
    assert (f.amx, f.amx_bf16, f.amx_tile) == (False, False, False)
    assert f.avx512_bf16 and f.avx512_vnni and f.avx_vnni and f.avx512f
    assert f.native_bf16 and f.native_int8
    assert f.summary() == "AMD EPYC: AVX-512 BF16, AVX-512 VNNI, AVX-VNNI, AVX-512F, AVX2 (no AMX)"
    data = f.to_json()
    assert data["amx"] is False and data["native_bf16"] is True and data["model"] == "AMD EPYC"


def test_avx2_only_machine_has_no_fast_low_precision():
    f = parse_cpuinfo(HASWELL)
    assert f.avx2 and not f.avx512f
    assert not f.native_bf16 and not f.native_int8


def test_flag_must_match_whole_word():
    # "avx512_bf16x" or a flag inside another name must not count.
    f = parse_cpuinfo("model name : X\nflags : avx512_bf16x amx_tilex notavx2\n")
    assert not f.avx512_bf16 and not f.amx_tile and not f.avx2


def test_non_x86_and_unreadable_fall_back_to_nothing(tmp_path: Path):
    arm = parse_cpuinfo(ARM, source="fake")
    assert not any([arm.amx, arm.native_bf16, arm.native_int8, arm.avx2])
    assert "no x86 'flags' line" in arm.source
    missing = read(tmp_path / "nope")
    assert isinstance(missing, CpuFeatures) and "unreadable" in missing.source and not missing.avx2
    (tmp_path / "cpuinfo").write_text(ZEN5_NO_AMX)
    assert read(tmp_path / "cpuinfo").avx512_bf16


def test_detect_on_this_machine_does_not_raise():
    f = detect()
    assert isinstance(f.model, str) and f is detect()
