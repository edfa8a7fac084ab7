"""The GPUs of this machine, read with NVML (nvidia-ml-py), for ``--gpus all`` and for validation."""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Gpu:
    """One GPU as NVML reports it."""

    index: int
    name: str
    compute_capability: tuple[int, int]
    memory_bytes: int

    @property
    def cc(self) -> str:
        """Compute capability as Triton's ``cc_model_filenames`` keys spell it (``"8.0"``)."""
        return f"{self.compute_capability[0]}.{self.compute_capability[1]}"


class NvmlUnavailable(RuntimeError):
    """NVML cannot be used here (no NVIDIA driver, or nvidia-ml-py missing)."""


def detect_gpus() -> list[Gpu]:
    """Every GPU NVML sees, in index order.

    Raises:
        NvmlUnavailable: no NVIDIA driver (or NVML library) on this machine.
    """
    try:
        import pynvml
    except ImportError as exc:
        raise NvmlUnavailable("nvidia-ml-py is not installed (pip install nvidia-ml-py)") from exc
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        raise NvmlUnavailable(f"no NVIDIA driver found ({exc})") from None
    try:
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = pynvml.nvmlDeviceGetName(handle)
            major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle).total
            gpus.append(
                Gpu(index, name.decode() if isinstance(name, bytes) else name, (major, minor), int(memory))
            )
        return gpus
    finally:
        pynvml.nvmlShutdown()
