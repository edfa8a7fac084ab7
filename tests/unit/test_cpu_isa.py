"""The CPU's INT8 class, read from flags given here (never this machine's), the INT8 schemes chosen
for each class, and the warning for an INT8 model gated on one class and served on another."""

from __future__ import annotations

import platform

import pytest

from generator.core import cpu_isa
from generator.core.cpu_isa import (
    CpuIsa,
    Int8Scheme,
    int8_schemes,
    merge_features,
    parse_cpuinfo,
    portability_warning,
)

AVX2 = CpuIsa("x86_64", frozenset({"avx2"}))  # an AMD EPYC (Zen 2/3), Haswell .. Comet Lake
AVX512 = CpuIsa("x86_64", frozenset({"avx2", "avx512f", "avx512bw"}))  # Skylake-SP
AVX512_VNNI = CpuIsa("x86_64", frozenset({"avx2", "avx512f", "avx512bw", "avx512_vnni"}))  # Cascade Lake+
AVX_VNNI = CpuIsa("x86_64", frozenset({"avx2", "avx_vnni"}))  # Alder Lake, no AVX-512
SAPPHIRE_RAPIDS = CpuIsa("x86_64", frozenset({"avx2", "avx512f", "avx512bw", "avx512_vnni", "amx_int8"}))
SSE = CpuIsa("x86_64", frozenset())
GRAVITON = CpuIsa("aarch64", frozenset({"asimd", "asimddp"}))
CORTEX_A53 = CpuIsa("aarch64", frozenset({"asimd"}))
POWER = CpuIsa("ppc64le", frozenset())


@pytest.mark.parametrize(
    ("isa", "int8_class"),
    [
        (AVX2, "x86-avx2"),
        (AVX512, "x86-avx512"),
        (CpuIsa("x86_64", frozenset({"avx2", "avx512f"})), "x86-avx2"),  # no AVX512BW: AVX2 kernels
        (AVX512_VNNI, "x86-vnni"),
        (AVX_VNNI, "x86-vnni"),
        (SAPPHIRE_RAPIDS, "x86-vnni"),
        (SSE, "x86-sse"),
        (GRAVITON, "arm64"),
        (CORTEX_A53, "arm64"),
        (POWER, "other"),
    ],
)
def test_each_cpu_falls_in_its_int8_class(isa: CpuIsa, int8_class: str) -> None:
    assert isa.int8_class == int8_class


@pytest.mark.parametrize(
    ("isa", "dynamic", "static"),
    [
        (AVX2, ["U8U8", "U8S8 reduce_range"], ["U8U8", "S8S8 reduce_range"]),
        (SSE, ["U8U8", "U8S8 reduce_range"], ["U8U8", "S8S8 reduce_range"]),
        (AVX512, ["U8S8 reduce_range", "U8U8"], ["S8S8 reduce_range", "U8U8"]),
        (AVX512_VNNI, ["U8S8", "U8U8"], ["S8S8", "U8U8"]),
        (AVX_VNNI, ["U8S8", "U8U8"], ["S8S8", "U8U8"]),
        (GRAVITON, ["U8S8", "U8U8"], ["S8S8", "U8U8"]),
        (POWER, ["U8S8", "U8U8"], ["S8S8", "U8U8"]),
    ],
)
def test_each_class_tries_the_schemes_onnx_runtime_recommends(
    isa: CpuIsa, dynamic: list[str], static: list[str]
) -> None:
    assert [s.name for s in int8_schemes("dynamic", isa.int8_class)] == dynamic
    assert [s.name for s in int8_schemes("static", isa.int8_class)] == static


@pytest.mark.parametrize("isa", [AVX2, AVX512, AVX512_VNNI, AVX_VNNI, SSE, GRAVITON, POWER])
def test_no_class_tries_a_scheme_that_saturates_on_it(isa: CpuIsa) -> None:
    for mode in ("dynamic", "static"):
        schemes = int8_schemes(mode, isa.int8_class)
        assert schemes and not any(s.saturates_on(isa.int8_class) for s in schemes), (mode, schemes)
        assert all(s.activations == "U8" for s in int8_schemes("dynamic", isa.int8_class))


def test_only_full_range_signed_weights_saturate_and_only_without_vnni() -> None:
    for int8_class in ("x86-avx2", "x86-avx512", "x86-sse"):
        assert Int8Scheme("U8", "S8").saturates_on(int8_class)
        assert Int8Scheme("S8", "S8").saturates_on(int8_class)
        assert not Int8Scheme("U8", "S8", reduce_range=True).saturates_on(int8_class)
        assert not Int8Scheme("U8", "U8").saturates_on(int8_class)
    for int8_class in ("x86-vnni", "arm64", "other"):
        assert not Int8Scheme("U8", "S8").saturates_on(int8_class)


@pytest.mark.parametrize("name", ["U8S8", "U8U8", "S8S8", "U8S8 reduce_range", "S8S8 reduce_range"])
def test_a_scheme_name_reads_back(name: str) -> None:
    assert Int8Scheme.parse(name).name == name


@pytest.mark.parametrize("name", ["", "INT8", "U8X8", "U8S8 reduce", "U8S8 reduce_range extra", "u8s8"])
def test_an_unknown_scheme_name_reads_as_none(name: str) -> None:
    assert Int8Scheme.parse(name) is None


X86_CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
flags\t\t: fpu vme sse sse2 ssse3 sse4_1 sse4_2 avx avx2 fma bmi2 avx512f avx512bw avx512_vnni
processor\t: 1
flags\t\t: fpu vme sse sse2 ssse3 sse4_1 sse4_2 avx avx2 fma bmi2 avx512f avx512bw avx512_vnni
"""
ARM_CPUINFO = """processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm asimddp
CPU implementer\t: 0x41
"""


def test_cpuinfo_flags_are_read_for_x86_and_arm() -> None:
    assert parse_cpuinfo(X86_CPUINFO) == {"avx2", "avx512f", "avx512bw", "avx512_vnni"}
    assert parse_cpuinfo(ARM_CPUINFO) == {"asimd", "asimddp"}
    assert parse_cpuinfo("") == frozenset()


def test_cpuinfo_adds_what_cpuid_does_not_report_when_both_describe_one_cpu() -> None:
    cpuid = frozenset({"avx2", "avx512f", "avx512bw", "avx512_vnni"})
    assert merge_features(cpuid, frozenset(cpuid | {"amx_int8", "avx_vnni"})) == cpuid | {
        "amx_int8",
        "avx_vnni",
    }
    # An emulator runs an AVX2 CPU on an AVX-512 host: /proc/cpuinfo is the host's, cpuid the guest's.
    host = frozenset({"avx2", "avx512f", "avx512bw", "avx_vnni", "amx_int8"})
    assert merge_features(frozenset({"avx2"}), host) == {"avx2"}
    # Without numpy's table, the kernel's flags are all there is.
    assert merge_features(None, host) == host


def test_an_int8_model_checked_where_its_kernels_do_not_saturate_is_flagged_on_one_where_they_do() -> None:
    warning = portability_warning("U8S8", "x86-vnni", AVX2)
    assert warning == (
        "INT8 U8S8 was checked on an x86-vnni CPU; this CPU is x86-avx2 (no VNNI), where U8S8 kernels can "
        "saturate: rebuild here to re-run the accuracy gate (it picks U8U8 or 7-bit weights)"
    )
    assert "checked on an arm64 CPU" in portability_warning("S8S8", "arm64", AVX512)
    assert "checked on an unrecorded CPU" in portability_warning("S8S8", None, AVX2)


@pytest.mark.parametrize(
    ("scheme", "recorded", "here"),
    [
        ("U8U8", "x86-vnni", AVX2),  # U8U8 never saturates
        ("U8S8 reduce_range", "x86-vnni", AVX2),  # 7-bit weights cannot saturate
        ("U8S8", "x86-vnni", AVX512_VNNI),  # VNNI here
        ("S8S8", "x86-vnni", GRAVITON),  # ARM here
        ("U8S8", "x86-avx512", AVX2),  # its gate ran on kernels that saturate alike
        ("not a scheme", "x86-vnni", AVX2),
    ],
)
def test_no_warning_where_the_accuracy_gate_still_holds(scheme: str, recorded: str, here: CpuIsa) -> None:
    assert portability_warning(scheme, recorded, here) is None


def test_this_machine_is_read_without_error_and_consistently() -> None:
    isa = cpu_isa.detect()
    assert isa is cpu_isa.detect()  # read once per process
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64"):
        assert isa.arch == "x86_64" and isa.int8_class.startswith("x86-")
        assert isa.features <= {"avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8"}
    assert isa.describe().startswith(isa.arch)
