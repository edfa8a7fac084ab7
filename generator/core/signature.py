"""A model's I/O signature (names, Triton dtypes, full shapes) and how to read it from a model file."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from generator.core import dtypes
from generator.core.errors import ValidationError


def libtorch_name(name: str, index: int) -> str:
    """Triton's PyTorch backend naming: ``NAME__index`` (kept as is when it already ends so)."""
    return name if name.endswith(f"__{index}") else f"{name}__{index}"


@dataclass(frozen=True)
class TensorInfo:
    """One tensor as the model file declares it.

    Attributes:
        name: Tensor name in the model.
        dtype: Triton dtype (``FP32``).
        shape: Full shape including any batch axis; ``-1`` marks a dynamic dimension.
    """

    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def batch_dynamic(self) -> bool:
        """Whether the first axis can carry a batch (it is dynamic)."""
        return len(self.shape) >= 1 and self.shape[0] == -1


@dataclass(frozen=True)
class Signature:
    """Inputs and outputs of a model file."""

    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    details: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def supports_batching(self) -> bool:
        """True when every input and output has a dynamic first axis (Triton's batch axis)."""
        tensors = self.inputs + self.outputs
        return bool(tensors) and all(t.batch_dynamic for t in tensors)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the build manifest."""
        return {
            "inputs": [asdict(t) | {"shape": list(t.shape)} for t in self.inputs],
            "outputs": [asdict(t) | {"shape": list(t.shape)} for t in self.outputs],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Signature:
        """Inverse of :meth:`to_dict`."""

        def tensors(items: list[dict[str, Any]]) -> tuple[TensorInfo, ...]:
            return tuple(TensorInfo(t["name"], t["dtype"], tuple(t["shape"])) for t in items)

        return cls(tensors(data["inputs"]), tensors(data["outputs"]))


def _onnx_tensor(value_info: Any) -> TensorInfo:
    tensor_type = value_info.type.tensor_type
    shape = tuple(
        d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1 for d in tensor_type.shape.dim
    )
    try:
        dtype = dtypes.from_onnx(tensor_type.elem_type)
    except ValueError:
        dtype = f"ONNX_{tensor_type.elem_type}"
    return TensorInfo(value_info.name, dtype, shape)


def read_onnx_signature(path: str | Path) -> Signature:
    """Read the graph inputs (initializers excluded) and outputs of an ONNX file.

    Raises:
        ValidationError: the file is not a readable ONNX model.
    """
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and friends
        raise ValidationError(f"{path}: not a readable ONNX model ({exc}); re-export it") from None
    initializers = {init.name for init in model.graph.initializer}
    inputs = tuple(_onnx_tensor(v) for v in model.graph.input if v.name not in initializers)
    outputs = tuple(_onnx_tensor(v) for v in model.graph.output)
    opsets = {op.domain or "ai.onnx": op.version for op in model.opset_import}
    return Signature(inputs, outputs, {"opset": opsets.get("ai.onnx"), "ir_version": model.ir_version})


_TRT_DTYPES = {
    "FLOAT": "FP32",
    "HALF": "FP16",
    "BF16": "BF16",
    "INT8": "INT8",
    "INT32": "INT32",
    "INT64": "INT64",
    "BOOL": "BOOL",
    "UINT8": "UINT8",
}


def read_plan_signature(path: str | Path) -> Signature:
    """Read a serialized TensorRT engine's I/O tensors and its first optimization profile.

    ``details["profile"]`` maps each input to its (min, opt, max) shapes, which is what Triton checks
    ``max_batch_size`` against. Needs TensorRT and a GPU (deserializing an engine needs CUDA).

    Raises:
        ValidationError: TensorRT is missing, or the file is not an engine this TensorRT can load.
    """
    try:
        import tensorrt as trt
    except ImportError:
        raise ValidationError(
            "TensorRT is not installed, so the plan's tensors cannot be read; install tritongen[tensorrt] on a GPU machine"
        ) from None
    logger = trt.Logger(trt.Logger.ERROR)
    engine = trt.Runtime(logger).deserialize_cuda_engine(Path(path).read_bytes())
    if engine is None:
        raise ValidationError(
            f"{path}: TensorRT {trt.__version__} cannot load this plan (built by another TensorRT version or "
            "for another GPU); rebuild it on the serving GPU"
        )
    inputs, outputs, profile = [], [], {}
    for index in range(engine.num_io_tensors):
        name = engine.get_tensor_name(index)
        dtype = _TRT_DTYPES.get(str(engine.get_tensor_dtype(name)).rsplit(".", 1)[-1], "UNKNOWN")
        info = TensorInfo(name, dtype, tuple(int(d) for d in engine.get_tensor_shape(name)))
        if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
            inputs.append(info)
            if engine.num_optimization_profiles:
                profile[name] = [list(shape) for shape in engine.get_tensor_profile_shape(name, 0)]
        else:
            outputs.append(info)
    return Signature(tuple(inputs), tuple(outputs), {"profile": profile, "tensorrt": trt.__version__})
