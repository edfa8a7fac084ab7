"""The ``image`` step on Triton's DALI backend: the same preprocessing as ``image.py`` as a serialized
DALI pipeline (``model.dali``).

The pipeline decodes on the GPU (``fn.decoders.image`` on the ``mixed`` device), resizes to a fixed size
(``fn.resize``, the aspect ratio not kept, with bilinear, nearest or bicubic interpolation) and normalises
and lays out (``fn.crop_mirror_normalize``). It does not do the Python step's shortest-edge resize, centre
crop, TensorFlow resize or other filters: the catalogue refuses those settings with ``backend: dali``
(``image_settings.dali_problems``). DALI's decoder drops an alpha channel rather than compositing it onto
white, and its resize is its own, so its pixels are close to the Python step's, not equal. Triton's DALI
backend takes the encoded bytes as a UINT8 tensor with dims [-1] (one padded byte array per batch row), not
as TYPE_STRING. ``nvidia.dali`` is imported only when a pipeline is written.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

from generator.core.errors import MissingDependencyError

#: What to install for DALI; see NVIDIA DALI's installation guide for the CUDA variants.
INSTALL_HINT = (
    "pip install --extra-index-url https://pypi.nvidia.com nvidia-dali-cuda120 "
    "(or use the image step's backend: python)"
)
INPUT = "image"
OUTPUT = "pixel_values"


def dali_available() -> bool:
    """Whether ``nvidia.dali`` can be imported (checked without importing it)."""
    try:
        return importlib.util.find_spec("nvidia.dali") is not None
    except (ImportError, ValueError):
        return False


def missing_dali() -> MissingDependencyError:
    """The error for ``backend: dali`` without DALI installed, naming the install command."""
    return MissingDependencyError(
        f"the image step's backend: dali needs NVIDIA DALI (nvidia.dali) to write model.dali; {INSTALL_HINT}"
    )


def write_pipeline(
    path: Path,
    max_batch_size: int,
    *,
    size: Sequence[int],
    channels: int,
    resample: str,
    scale: float,
    mean: Sequence[float],
    std: Sequence[float],
    layout: str,
    dtype: str,
) -> None:
    """Serialize the preprocessing pipeline for batches of up to ``max_batch_size`` images to ``path``.

    ``resample`` is bilinear, nearest or bicubic. The mean and std are in scaled units (``(pixel * scale - mean) / std``); DALI's
    ``crop_mirror_normalize`` computes ``(pixel - mean') / std'``, so ``mean' = mean / scale`` and
    ``std' = std / scale``.

    Raises:
        MissingDependencyError: DALI is not installed.
    """
    try:
        from nvidia.dali import fn, pipeline_def, types
    except ImportError:
        raise missing_dali() from None

    interpolation = {
        "bilinear": types.INTERP_LINEAR,
        "nearest": types.INTERP_NN,
        "bicubic": types.INTERP_CUBIC,
    }[resample]

    @pipeline_def(batch_size=max(1, max_batch_size), num_threads=4, device_id=0)
    def preprocess():  # type: ignore[no-untyped-def]
        encoded = fn.external_source(name=INPUT, device="cpu", dtype=types.UINT8)
        images = fn.decoders.image(
            encoded, device="mixed", output_type=types.RGB if channels == 3 else types.GRAY
        )
        images = fn.resize(images, resize_y=int(size[0]), resize_x=int(size[1]), interp_type=interpolation)
        return fn.crop_mirror_normalize(
            images,
            dtype=types.FLOAT16 if dtype == "FP16" else types.FLOAT,
            output_layout="CHW" if layout == "NCHW" else "HWC",
            mean=[m / scale for m in mean],
            std=[s / scale for s in std],
            name=OUTPUT,
        )

    path.parent.mkdir(parents=True, exist_ok=True)
    preprocess().serialize(filename=str(path))
