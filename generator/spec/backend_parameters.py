"""The ``parameters`` Triton's ONNX Runtime and PyTorch backends read, and the values they take.

A config holds every parameter as a string (``string_value``). At load time the backend parses the
ones it knows: a thread count that is not a number (``x``, ``nan``, ``true``) makes it refuse the
model, one past the range of a C++ ``int`` ends the server (``std::stoi`` throws), and one with a
number in front (``4x``) is read as that number. The other keys are free for the user's own use (a
Python model reads any), so only these are typed, each as strictly as the backend reads it at best.

The keys are those of the backends of Triton 2.51: ONNX Runtime's session and memory options and its
older CUDA options (read for GPU instances), and the PyTorch backend's switches and thread counts.
``ENABLE_NVFUSER`` left the PyTorch backend in Triton 23.12; it is reported as having no effect.
The embedded server's stand-in backend (``generator/backends``) reads ``intra_op_thread_count``,
``inter_op_thread_count`` and ``execution_mode`` (for TorchScript models too) and fails to load on a
value that is not an integer, like the native ONNX Runtime backend.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

INT_MAX = 2**31 - 1
SIZE_MAX = 2**64 - 1

ONNXRUNTIME = "ONNX Runtime"
PYTORCH = "PyTorch"


@dataclass(frozen=True)
class KnownParameter:
    """A parameter one backend reads.

    Attributes:
        backend: The backend that reads it (``ONNX Runtime``, ``PyTorch``).
        accepts: What it takes, as a message says it.
        valid: Whether a value (the config's text) reads as meant.
    """

    backend: str
    accepts: str
    valid: Callable[[str], bool]


_INTEGER = re.compile(r"-?[0-9]+")


def _whole(low: int, high: int) -> Callable[[str], bool]:
    return lambda text: bool(_INTEGER.fullmatch(text)) and low <= int(text) <= high


def _one_of(*values: str, ignore_case: bool = False) -> Callable[[str], bool]:
    accepted = {v.lower() for v in values} if ignore_case else set(values)
    return lambda text: (text.lower() if ignore_case else text) in accepted


_THREADS = f"a whole number of threads from 0 (its own choice) to {INT_MAX}"
_SWITCH = "true or false (also on/off, 1/0)"
_threads = _whole(0, INT_MAX)
_switch = _one_of("true", "false", "on", "off", "1", "0", ignore_case=True)
_zero_or_one = _one_of("0", "1")


def _onnxruntime(accepts: str, valid: Callable[[str], bool]) -> KnownParameter:
    return KnownParameter(ONNXRUNTIME, accepts, valid)


def _pytorch(accepts: str, valid: Callable[[str], bool]) -> KnownParameter:
    return KnownParameter(PYTORCH, accepts, valid)


#: Parameter name -> what its backend takes (names are case-sensitive; the two backends' do not overlap).
KNOWN: dict[str, KnownParameter] = {
    "intra_op_thread_count": _onnxruntime(_THREADS, _threads),
    "inter_op_thread_count": _onnxruntime(_THREADS, _threads),
    "execution_mode": _onnxruntime("0 (sequential) or 1 (parallel)", _zero_or_one),
    "enable_mem_arena": _onnxruntime(_SWITCH, _switch),
    "enable_mem_pattern": _onnxruntime(_SWITCH, _switch),
    "session.use_device_allocator_for_initializers": _onnxruntime("0 or 1", _zero_or_one),
    "cudnn_conv_algo_search": _onnxruntime(
        "0 (exhaustive), 1 (heuristic) or 2 (default)", _one_of("0", "1", "2")
    ),
    "gpu_mem_limit": _onnxruntime(f"a whole number of bytes up to {SIZE_MAX}", _whole(0, SIZE_MAX)),
    "arena_extend_strategy": _onnxruntime("0 (next power of two) or 1 (same as requested)", _zero_or_one),
    "do_copy_in_default_stream": _onnxruntime("0 or 1", _zero_or_one),
    "DISABLE_OPTIMIZED_EXECUTION": _pytorch(_SWITCH, _switch),
    "INFERENCE_MODE": _pytorch(_SWITCH, _switch),
    "DISABLE_CUDNN": _pytorch(_SWITCH, _switch),
    "ENABLE_WEIGHT_SHARING": _pytorch(_SWITCH, _switch),
    "ENABLE_CACHE_CLEANING": _pytorch(_SWITCH, _switch),
    "ENABLE_TENSOR_FUSER": _pytorch(_SWITCH, _switch),
    "ENABLE_JIT_PROFILING": _pytorch(_SWITCH, _switch),
    "ENABLE_JIT_EXECUTOR": _pytorch(_SWITCH, _switch),
    "INTRA_OP_THREAD_COUNT": _pytorch(_THREADS, _threads),
    "INTER_OP_THREAD_COUNT": _pytorch(_THREADS, _threads),
}
#: Parameters a backend no longer reads -> since when.
REMOVED = {"ENABLE_NVFUSER": "the PyTorch backend no longer reads it (removed in Triton 23.12)"}


def config_text(value: str | int | float | bool) -> str:
    """A spec's parameter value as config.pbtxt holds it (booleans as ``true``/``false``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def shown(text: str) -> str:
    """A value quoted for a one-line message."""
    return f"'{text}'" if text.isprintable() else repr(text)


def problem(key: str, text: str) -> str | None:
    """Why the backend that reads ``key`` refuses or misreads the value ``text``; None if it reads it as
    written, or if no backend knows ``key`` (then it is the user's own).

    The message says what the backend takes, e.g. ``must be a whole number of threads from 0 (its own
    choice) to 2147483647 for the ONNX Runtime backend (got 'x')``.
    """
    if key in REMOVED:
        return f"{REMOVED[key]}, so it has no effect; remove it"
    known = KNOWN.get(key)
    if known is None or known.valid(text):
        return None
    return f"must be {known.accepts} for the {known.backend} backend (got {shown(text)})"
