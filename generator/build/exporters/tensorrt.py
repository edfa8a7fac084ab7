"""ONNX to a serialized TensorRT engine (``model.plan``, ``platform: tensorrt_plan``).

The model is first exported to ONNX by its framework's exporter; TensorRT's ONNX parser reads that,
and the builder makes an engine with a workspace limit, FP16 / INT8 flags (INT8 calibrated from real
samples) and one optimization profile derived from the spec: batch min 1, opt the largest preferred
batch size, max ``max_batch_size``; other dynamic axes from the model's ``shapes`` (else
``tensorrt.shapes``; see :mod:`generator.build.input_values`). When the target GPUs
span several compute capabilities, one plan is built per capability (on a GPU of it) and Triton picks
through ``cc_model_filenames``. Where TensorRT or a GPU is missing this fails with an error naming
what is missing; it never writes a placeholder.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from generator.build.exporters.base import ExportContext, ExportResult
from generator.build.input_values import POINTS, InputTensor, axis_sizes, fill, index_ranges
from generator.build.runners import (
    DeviceBuffers,
    check_cuda_call,
    cuda_runtime,
    import_tensorrt,
    onnx_runner,
    plan_runner,
)
from generator.core.errors import ExportError
from generator.core.signature import Signature, read_plan_signature
from generator.core.triton import DEFAULT_MODEL_FILENAMES, TENSORRT_PLATFORM, resolve_max_batch_size
from generator.spec.models import ModelSpec, TensorRT

log = logging.getLogger(__name__)

MODEL_FILENAME = DEFAULT_MODEL_FILENAMES[TENSORRT_PLATFORM]
Shapes = dict[str, tuple[list[int], list[int], list[int]]]


def optimization_profile(model: ModelSpec, onnx_signature: Signature, max_batch_size: int) -> Shapes:
    """(min, opt, max) shape of every input: batch 1 / largest preferred size / ``max_batch_size``.

    Non-batch dims come from the ONNX file; dynamic ones (-1) take their range from the model's
    ``shapes`` entry (which wins), else ``tensorrt.shapes``, else the entry of another input with as many
    dynamic axes (``attention_mask`` grows with ``input_ids``).

    Raises:
        ExportError: an input has a dynamic dimension without a range.
        SpecError: a range does not fit its input (rank, a fixed axis), or names no input.
    """
    preferred = model.dynamic_batching.preferred_batch_size if model.dynamic_batching else []
    opt_batch = min(max(preferred), max_batch_size) if preferred else max_batch_size
    tensors = [
        InputTensor(t.name, t.dtype, tuple(t.shape[1:] if max_batch_size > 0 else t.shape))
        for t in onnx_signature.inputs
    ]
    sizes = axis_sizes(model.name, model, tensors, defaults=False)
    shapes: Shapes = {}
    for tensor in tensors:
        rest = list(tensor.dims)
        if -1 in rest and tensor.name not in sizes:
            raise ExportError(
                f"model '{model.name}': input '{tensor.name}' has dynamic dims {rest}; give their range in "
                f"shapes.{tensor.name} (min/opt/max of the -1 axes, without the batch axis)"
            )
        low, mid, high = (fill(rest, sizes[tensor.name][p]) if -1 in rest else rest for p in POINTS)
        if max_batch_size > 0:
            shapes[tensor.name] = ([1, *low], [opt_batch, *mid], [max_batch_size, *high])
        else:
            shapes[tensor.name] = (low, mid, high)
    return shapes


def plan_filenames(compute_capabilities: Sequence[str]) -> dict[str, str]:
    """Plan file per compute capability: ``model.plan`` for one, ``model_sm80.plan``... for several."""
    unique = sorted(set(compute_capabilities))
    if len(unique) <= 1:
        return dict.fromkeys(unique, MODEL_FILENAME)
    return {cc: f"model_sm{cc.replace('.', '')}.plan" for cc in unique}


def _calibration_batches(path: Path, names: list[str], batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    data = np.load(path)
    missing = [n for n in names if n not in data]
    if missing:
        raise ExportError(
            f"calibration data {path} has no array for input(s) {', '.join(missing)}; key them by input name"
        )
    count = min(len(data[n]) for n in names)
    for start in range(0, count - batch_size + 1, batch_size):
        yield {n: np.ascontiguousarray(data[n][start : start + batch_size]) for n in names}


def _calibrator(trt: Any, path: Path, names: list[str], batch_size: int, cache: Path) -> Any:
    """An entropy calibrator fed from an .npz of real samples, keyed by input name."""

    class Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            super().__init__()
            self.batches = _calibration_batches(path, names, batch_size)
            self.buffers = DeviceBuffers()

        def get_batch_size(self) -> int:
            return batch_size

        def get_batch(self, tensor_names: list[str]) -> list[int] | None:
            batch = next(self.batches, None)
            if batch is None:
                return None
            self.buffers.close()
            return [self.buffers.upload(batch[name]) for name in tensor_names]

        def read_calibration_cache(self) -> bytes | None:
            return cache.read_bytes() if cache.exists() else None

        def write_calibration_cache(self, data: Any) -> None:
            cache.write_bytes(bytes(data))

    return Calibrator()


def build_plan(
    onnx_path: Path, shapes: Shapes, settings: TensorRT, calibration: Path | None, name: str
) -> bytes:
    """Build a serialized engine from an ONNX file on the current GPU.

    Raises:
        ExportError: TensorRT cannot parse the ONNX or build the engine; the message carries its reason.
    """
    trt = import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        reasons = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"model '{name}': TensorRT cannot parse the ONNX export: {reasons}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_bytes)
    profile = builder.create_optimization_profile()
    for tensor, (low, mid, high) in shapes.items():
        profile.set_shape(tensor, low, mid, high)
    config.add_optimization_profile(profile)
    if settings.precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    if settings.precision == "int8":
        assert calibration is not None
        config.set_flag(trt.BuilderFlag.INT8)
        cache = onnx_path.with_suffix(".calibration")
        config.int8_calibrator = _calibrator(
            trt, calibration, list(shapes), settings.calibration_batch_size, cache
        )
        config.set_calibration_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"model '{name}': TensorRT failed to build the engine; its log above says why")
    return bytes(serialized)


class TensorRTExporter:
    """Exports to ONNX with the model's framework, then builds TensorRT plan(s) from it."""

    framework = "tensorrt"

    def __init__(self, context: ExportContext | None = None) -> None:
        self.context = context or ExportContext()

    def _target_gpus(self) -> list[Any]:
        from generator.core.gpus import NvmlUnavailable, detect_gpus

        try:
            gpus = list(self.context.gpus) or detect_gpus()
        except NvmlUnavailable as exc:
            raise ExportError(
                f"TensorRT plans are built on an NVIDIA GPU and none is usable here ({exc})"
            ) from None
        if self.context.gpu_ids is not None:
            gpus = [g for g in gpus if g.index in self.context.gpu_ids]
        if not gpus:
            raise ExportError(
                "TensorRT plans are built on an NVIDIA GPU and NVML finds none of the requested ones"
            )
        return gpus

    def export(self, model: ModelSpec, source: Path, version_dir: Path) -> ExportResult:
        """Export ``model`` to ONNX, build one plan per compute capability, read the plan back.

        Raises:
            MissingDependencyError: TensorRT is not installed.
            ExportError: no GPU, or the ONNX export / engine build fails.
        """
        from generator.build.exporters import get_exporter

        trt = import_tensorrt()
        gpus = self._target_gpus()
        settings = model.tensorrt or TensorRT()
        calibration = (
            (self.context.spec_dir / settings.calibration_data) if settings.calibration_data else None
        )
        if calibration is not None and not calibration.is_file():
            raise ExportError(
                f"model '{model.name}': calibration data {calibration} not found; fix tensorrt.calibration_data"
            )
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            onnx_result = get_exporter(model.framework).export(model, source, Path(tmp))
            # Parity compares the plan with the source framework, or with the ONNX file when that is the source.
            reference = onnx_result.reference or onnx_runner(onnx_result.model_file)
            max_batch_size = resolve_max_batch_size(model, onnx_result.signature)
            shapes = optimization_profile(model, onnx_result.signature, max_batch_size)
            # The plan hides its embedding tables: keep the integer ranges the ONNX file shows.
            ranges = {name: list(r) for name, r in index_ranges(onnx_result.model_file).items()}
            by_cc = {g.cc: g for g in gpus}
            filenames = plan_filenames(list(by_cc))
            version_dir.mkdir(parents=True, exist_ok=True)
            cudart = cuda_runtime()
            for cc, filename in filenames.items():
                check_cuda_call(cudart.cudaSetDevice(by_cc[cc].index))
                plan = build_plan(onnx_result.model_file, shapes, settings, calibration, model.name)
                (version_dir / filename).write_bytes(plan)
        files = [version_dir / f for f in dict.fromkeys(filenames.values())]
        check_cuda_call(cudart.cudaSetDevice(gpus[0].index))
        signature = read_plan_signature(files[0])
        seconds = time.perf_counter() - started
        return ExportResult(
            files=files,
            platform=TENSORRT_PLATFORM,
            signature=signature,
            reference=reference,
            runner=plan_runner(files[0]),
            details={
                "tensorrt": trt.__version__,
                "precision": settings.precision,
                "profile": {k: [list(s) for s in v] for k, v in shapes.items()},
                "index_ranges": ranges,
                "compute_capabilities": sorted(by_cc),
                "export_seconds": round(seconds, 3),
            },
            cc_model_filenames=filenames if len(files) > 1 else None,
        )
