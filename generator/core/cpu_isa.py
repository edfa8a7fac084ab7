"""The CPU's instruction set, as far as INT8 kernels care, and the INT8 schemes that suit it.

ONNX Runtime's CPU kernels multiply 8-bit activations by 8-bit weights. On x86-64 without VNNI (AVX2,
or AVX-512 without VNNI) the U8S8 kernels (unsigned activations, signed weights; QDQ S8S8 runs on them
too) use ``VPMADDUBSW``, which adds two products into a saturating 16-bit integer: with full 8-bit
weights the sum can clip, and a model's outputs drift far from the float model. ONNX Runtime's
quantization guide gives the ways out: 7-bit weights (``reduce_range``), or U8U8 (unsigned weights),
whose kernels do not saturate. With VNNI (AVX-512 VNNI, AVX-VNNI, AMX) and on ARM64 there is no such
issue, and U8S8 / S8S8 are the formats to use (on AVX-512 U8S8 is also up to twice as fast as U8U8).

The ISA is read where ONNX Runtime reads it: from ``cpuid`` in this process (numpy's runtime
dispatch table, which also checks that the OS enables the AVX-512 registers), with the kernel's
``/proc/cpuinfo`` flags for AVX-VNNI and AMX, trusted only when they agree with ``cpuid`` on AVX2 and
AVX-512 (an emulator runs a CPU other than the host's that ``/proc/cpuinfo`` describes).
"""

from __future__ import annotations

import functools
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

#: INT8 classes: CPUs whose INT8 kernels behave alike (accuracy, and which format is fastest).
X86_VNNI, X86_AVX512, X86_AVX2, X86_SSE, ARM64, OTHER = (
    "x86-vnni",
    "x86-avx512",
    "x86-avx2",
    "x86-sse",
    "arm64",
    "other",
)
#: The classes whose U8S8 kernels saturate (``VPMADDUBSW``).
SATURATING = frozenset({X86_AVX512, X86_AVX2, X86_SSE})

# numpy's names for the features this module reads -> the kernel's /proc/cpuinfo spelling.
_NUMPY_NAMES = {
    "AVX2": "avx2",
    "AVX512F": "avx512f",
    "AVX512BW": "avx512bw",
    "AVX512VNNI": "avx512_vnni",
    "AVXVNNI": "avx_vnni",
    "AVX_VNNI": "avx_vnni",
    "AMX_INT8": "amx_int8",
    "ASIMD": "asimd",
    "ASIMDDP": "asimddp",
}
_FLAGS = frozenset(_NUMPY_NAMES.values())
_AGREE_ON = ("avx2", "avx512f")  # what both sources must say alike for /proc/cpuinfo to be this CPU's


@dataclass(frozen=True)
class CpuIsa:
    """The instruction-set facts of one CPU that decide how INT8 models run on it.

    Attributes:
        arch: ``x86_64``, ``aarch64`` or another ``platform.machine()`` name.
        features: The flags among avx2, avx512f, avx512bw, avx512_vnni, avx_vnni, amx_int8, asimd,
            asimddp that the CPU has.
    """

    arch: str
    features: frozenset[str]

    @property
    def int8_class(self) -> str:
        """``x86-vnni``, ``x86-avx512`` (no VNNI), ``x86-avx2``, ``x86-sse``, ``arm64`` or ``other``."""
        has = self.features.__contains__
        if self.arch == "x86_64":
            if has("avx512_vnni") or has("avx_vnni") or has("amx_int8"):
                return X86_VNNI
            if has("avx512f") and has("avx512bw"):
                return X86_AVX512
            return X86_AVX2 if has("avx2") else X86_SSE
        return ARM64 if self.arch == "aarch64" else OTHER

    def describe(self) -> str:
        """One line for messages: the architecture and the features found."""
        return f"{self.arch} ({', '.join(sorted(self.features)) or 'no AVX2, AVX-512, VNNI, AMX or ASIMD'})"


@dataclass(frozen=True)
class Int8Scheme:
    """How a model's tensors are quantized: the 8-bit types of activations and weights.

    Attributes:
        activations: ``U8`` or ``S8`` (dynamic quantization always computes U8 activations).
        weights: ``U8`` or ``S8``.
        reduce_range: Weights in 7 bits, so that ``VPMADDUBSW``'s 16-bit sums cannot saturate.
    """

    activations: Literal["U8", "S8"]
    weights: Literal["U8", "S8"]
    reduce_range: bool = False

    @property
    def name(self) -> str:
        """``U8S8``, ``U8U8``, ``S8S8 reduce_range``...: as the manifest records it."""
        return f"{self.activations}{self.weights}" + (" reduce_range" if self.reduce_range else "")

    @classmethod
    def parse(cls, name: str) -> Int8Scheme | None:
        """The scheme a manifest names, or ``None`` when the name is not one."""
        parts = str(name).split()
        kinds = parts[0] if parts else ""
        if len(kinds) != 4 or kinds[:2] not in ("U8", "S8") or kinds[2:] not in ("U8", "S8"):
            return None
        if parts[1:] not in ([], ["reduce_range"]):
            return None
        return cls(kinds[:2], kinds[2:], reduce_range=len(parts) == 2)  # type: ignore[arg-type]

    def saturates_on(self, int8_class: str) -> bool:
        """Whether ONNX Runtime runs this scheme on ``VPMADDUBSW`` with full 8-bit signed weights there."""
        return int8_class in SATURATING and self.weights == "S8" and not self.reduce_range


U8S8 = Int8Scheme("U8", "S8")
U8S8_REDUCED = Int8Scheme("U8", "S8", reduce_range=True)
U8U8 = Int8Scheme("U8", "U8")
S8S8 = Int8Scheme("S8", "S8")
S8S8_REDUCED = Int8Scheme("S8", "S8", reduce_range=True)

# In the order they are tried, after ONNX Runtime's quantization guide ("Data type selection"):
# U8S8 / S8S8 (QDQ's default) where they cannot saturate; on AVX-512 without VNNI, U8S8 with 7-bit
# weights (U8S8 is the fast kernel there); on AVX2 and older, U8U8 first (as fast as U8S8 there).
_SCHEMES: dict[str, dict[str, tuple[Int8Scheme, ...]]] = {
    "dynamic": {
        X86_VNNI: (U8S8, U8U8),
        X86_AVX512: (U8S8_REDUCED, U8U8),
        X86_AVX2: (U8U8, U8S8_REDUCED),
        X86_SSE: (U8U8, U8S8_REDUCED),
        ARM64: (U8S8, U8U8),
        OTHER: (U8S8, U8U8),
    },
    "static": {
        X86_VNNI: (S8S8, U8U8),
        X86_AVX512: (S8S8_REDUCED, U8U8),
        X86_AVX2: (U8U8, S8S8_REDUCED),
        X86_SSE: (U8U8, S8S8_REDUCED),
        ARM64: (S8S8, U8U8),
        OTHER: (S8S8, U8U8),
    },
}


def int8_schemes(mode: Literal["dynamic", "static"], int8_class: str) -> tuple[Int8Scheme, ...]:
    """The INT8 schemes to try for a quantization mode on a class of CPU, best first.

    Args:
        mode: ``dynamic`` or ``static``.
        int8_class: A :attr:`CpuIsa.int8_class`; an unknown one gets ONNX Runtime's defaults.
    """
    table = _SCHEMES[mode]
    return table.get(int8_class, table[OTHER])


def portability_warning(scheme_name: str, recorded_class: str | None, here: CpuIsa) -> str | None:
    """Why an INT8 model gated on one CPU may not keep its accuracy on this one, or ``None``.

    Args:
        scheme_name: The kept scheme as the manifest records it (``U8S8``, ``U8U8``...).
        recorded_class: The INT8 class of the CPU whose accuracy gate kept it (``None``: unknown).
        here: This CPU.
    """
    scheme = Int8Scheme.parse(scheme_name)
    if scheme is None or not scheme.saturates_on(here.int8_class):
        return None
    if recorded_class is not None and scheme.saturates_on(recorded_class):
        return None  # its gate ran on kernels that saturate alike
    checked = f"checked on an {recorded_class} CPU" if recorded_class else "checked on an unrecorded CPU"
    return (
        f"INT8 {scheme.name} was {checked}; this CPU is {here.int8_class} (no VNNI), where {scheme.name} "
        "kernels can saturate: rebuild here to re-run the accuracy gate (it picks U8U8 or 7-bit weights)"
    )


def parse_cpuinfo(text: str) -> frozenset[str]:
    """The flags this module reads, from ``/proc/cpuinfo`` (x86 ``flags``, ARM ``Features``)."""
    found: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            found.update(flag for flag in value.split() if flag in _FLAGS)
    return frozenset(found)


def merge_features(from_cpuid: frozenset[str] | None, from_cpuinfo: frozenset[str]) -> frozenset[str]:
    """This process's features: ``cpuid``'s, plus what only ``/proc/cpuinfo`` names when both agree.

    Args:
        from_cpuid: What numpy's runtime dispatch found (``None``: not available).
        from_cpuinfo: The kernel's flags (empty: not readable).
    """
    if from_cpuid is None:
        return from_cpuinfo
    if any((flag in from_cpuid) != (flag in from_cpuinfo) for flag in _AGREE_ON):
        return from_cpuid  # /proc/cpuinfo describes another CPU (the host of an emulator)
    return from_cpuid | from_cpuinfo


def _numpy_features() -> frozenset[str] | None:
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as table
    except ImportError:
        try:
            from numpy.core._multiarray_umath import __cpu_features__ as table
        except ImportError:
            return None
    return frozenset(
        _NUMPY_NAMES[name] for name, present in table.items() if present and name in _NUMPY_NAMES
    )


def _arch() -> str:
    machine = platform.machine().lower()
    return {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64"}.get(machine, machine)


@functools.cache
def detect() -> CpuIsa:
    """This machine's :class:`CpuIsa` (read once per process)."""
    try:
        cpuinfo = parse_cpuinfo(Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace"))
    except OSError:
        cpuinfo = frozenset()
    return CpuIsa(_arch(), merge_features(_numpy_features(), cpuinfo))
