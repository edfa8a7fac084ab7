"""One way to run a model by tensor name: named numpy arrays in, named numpy arrays out.

A :data:`ModelRunner` runs a source model (a torch module, a TensorFlow function), an ONNX file (ONNX
Runtime on the CPU), a TorchScript file or a TensorRT plan (on the current GPU). Exporters hand them
to parity and the optimize gate; verify, optimize and the TensorRT checks run artifacts through them.

Frameworks are imported when a runner is made, never when this module is. Runners hold live framework
objects, so they stay in the process that made them (the export process keeps them to itself).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from generator.core import dtypes
from generator.core.errors import ExportError, MissingDependencyError, first_line
from generator.core.signature import read_plan_signature

#: Named input arrays for one run of a model.
Feeds = dict[str, np.ndarray]
#: Runs a model on named numpy inputs and returns named numpy outputs.
ModelRunner = Callable[[Feeds], dict[str, np.ndarray]]


def flatten_outputs(outputs: Any) -> list[Any]:
    """A model's outputs (nested tuples, lists and dicts of tensors) as a flat list, in order."""
    if isinstance(outputs, dict):
        return [v for value in outputs.values() for v in flatten_outputs(value)]
    if isinstance(outputs, (tuple, list)):
        return [v for value in outputs for v in flatten_outputs(value)]
    return [outputs]


def named_outputs(run: Callable[[Feeds], Sequence[np.ndarray]], output_names: list[str]) -> ModelRunner:
    """A runner from a function that returns its outputs as a list, keyed by ``output_names`` in order.

    The runner raises ``ValueError`` when the function returns another number of outputs than there
    are names.
    """

    def named(feeds: Feeds) -> dict[str, np.ndarray]:
        return dict(zip(output_names, run(feeds), strict=True))

    return named


def _import_torch() -> Any:
    try:
        import torch
    except ImportError:
        raise MissingDependencyError.for_package("torch", purpose="to run PyTorch models") from None
    return torch


def torch_runner(what: str, module: Any, input_names: list[str], output_names: list[str]) -> ModelRunner:
    """Run a torch module (or loaded TorchScript) on the CPU, inputs by position, without gradients.

    Args:
        what: Names the module in errors (``model 'x': the torch module``).
        module: The callable torch module.
        input_names: Feed names in the module's argument order.
        output_names: Names of the module's flattened outputs, in order.

    Returns:
        The runner; it raises :class:`ExportError` when the module fails on the inputs.
    """
    torch = _import_torch()

    def run(feeds: Feeds) -> dict[str, np.ndarray]:
        try:
            with torch.no_grad():
                tensors = [torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in input_names]
                outputs = flatten_outputs(module(*tensors))
        except Exception as exc:
            raise ExportError(
                f"{what} fails on the parity inputs: {first_line(exc)}; "
                "make forward() accept the declared input dtypes and shapes"
            ) from exc
        return {name: out.detach().cpu().numpy() for name, out in zip(output_names, outputs, strict=False)}

    return run


def torchscript_runner(what: str, path: Path, input_names: list[str], output_names: list[str]) -> ModelRunner:
    """Run a saved TorchScript file on the CPU (see :func:`torch_runner` for the arguments)."""
    torch = _import_torch()
    return torch_runner(what, torch.jit.load(str(path), map_location="cpu"), input_names, output_names)


def onnx_runner(path: Path) -> ModelRunner:
    """Run an ONNX file in ONNX Runtime on the CPU.

    Raises:
        Exception: ONNX Runtime's own error when it cannot load the file.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]

    def run(feeds: Feeds) -> dict[str, np.ndarray]:
        return dict(zip(names, session.run(names, feeds), strict=True))

    return run


def import_tensorrt() -> Any:
    """The ``tensorrt`` module.

    Raises:
        MissingDependencyError: TensorRT is not installed; the message says how to install it.
    """
    try:
        import tensorrt as trt
    except ImportError:
        raise MissingDependencyError(
            "TensorRT is not installed, so no plan can be built; on a machine with an NVIDIA GPU run "
            "pip install 'tritongen[tensorrt]', or use format: onnx"
        ) from None
    return trt


def cuda_runtime() -> Any:
    """cuda-python's runtime API (``cuda.bindings.runtime``).

    Raises:
        MissingDependencyError: cuda-python is not installed.
    """
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        raise MissingDependencyError.for_package(
            "cuda-python", extra="tensorrt", purpose="to run TensorRT plans"
        ) from None
    return cudart


def check_cuda_call(result: Any) -> Any:
    """Check the error code a cuda-python call returns first, and return the values after it.

    Raises:
        ExportError: the call failed.
    """
    error, *rest = result if isinstance(result, tuple) else (result,)
    if int(error) != 0:
        raise ExportError(f"CUDA call failed: {error}; check the GPU and its driver")
    return rest[0] if len(rest) == 1 else rest


class DeviceBuffers:
    """Device memory for host arrays (cuda-python), freed on :meth:`close`."""

    def __init__(self) -> None:
        self.cudart = cuda_runtime()
        self.pointers: list[int] = []

    def upload(self, array: np.ndarray) -> int:
        """Copy ``array`` to new device memory and return its address."""
        array = np.ascontiguousarray(array)
        pointer = check_cuda_call(self.cudart.cudaMalloc(max(array.nbytes, 1)))
        self.pointers.append(pointer)
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        check_cuda_call(self.cudart.cudaMemcpy(pointer, array.ctypes.data, array.nbytes, kind))
        return int(pointer)

    def empty(self, nbytes: int) -> int:
        """Allocate ``nbytes`` of device memory and return its address."""
        pointer = check_cuda_call(self.cudart.cudaMalloc(max(nbytes, 1)))
        self.pointers.append(pointer)
        return int(pointer)

    def download(self, pointer: int, shape: Sequence[int], dtype: np.dtype) -> np.ndarray:
        """Copy device memory at ``pointer`` into a new host array of ``shape`` and ``dtype``."""
        out = np.empty(shape, dtype=dtype)
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        check_cuda_call(self.cudart.cudaMemcpy(out.ctypes.data, pointer, out.nbytes, kind))
        return out

    def close(self) -> None:
        """Free every allocation made so far."""
        for pointer in self.pointers:
            self.cudart.cudaFree(pointer)
        self.pointers.clear()


def plan_runner(path: Path) -> ModelRunner:
    """Run a TensorRT plan on the current GPU.

    Raises:
        MissingDependencyError: TensorRT or cuda-python is not installed.
        ExportError: TensorRT cannot load the plan (or, when run, fails to run it).
    """
    trt = import_tensorrt()
    engine = trt.Runtime(trt.Logger(trt.Logger.ERROR)).deserialize_cuda_engine(path.read_bytes())
    if engine is None:
        raise ExportError(f"{path}: TensorRT could not load the plan it just built; see the TensorRT log")
    signature = read_plan_signature(path)

    def run(feeds: Feeds) -> dict[str, np.ndarray]:
        context = engine.create_execution_context()
        buffers = DeviceBuffers()
        try:
            for tensor in signature.inputs:
                context.set_input_shape(tensor.name, feeds[tensor.name].shape)
                context.set_tensor_address(tensor.name, buffers.upload(feeds[tensor.name]))
            pending = []
            for tensor in signature.outputs:
                shape = tuple(context.get_tensor_shape(tensor.name))
                dtype = dtypes.to_numpy(tensor.dtype)
                pointer = buffers.empty(int(np.prod(shape)) * dtype.itemsize)
                context.set_tensor_address(tensor.name, pointer)
                pending.append((tensor.name, pointer, shape, dtype))
            if not context.execute_async_v3(0):
                raise ExportError(f"{path}: TensorRT failed to run the plan")
            check_cuda_call(buffers.cudart.cudaDeviceSynchronize())
            return {name: buffers.download(p, shape, dtype) for name, p, shape, dtype in pending}
        finally:
            buffers.close()

    return run
