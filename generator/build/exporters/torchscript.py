"""PyTorch to TorchScript (``model.pt``) for Triton's PyTorch backend (``platform: pytorch_libtorch``).

The module is traced on example inputs. Triton's PyTorch backend matches tensors by position and
names them ``NAME__index``; the signature written here follows that convention, and parity runs the
saved TorchScript file against the original module.

Integer inputs used as indices into a table (``nn.Embedding``, ``F.embedding``, ``index_select`` on
dimension 0, possibly through casts and reshapes) get the range ``0 .. rows-1`` recorded in the details
(``index_ranges``), as the ONNX models' ranges are read from their ``Gather`` nodes: parity, warm-up and
the perf_analyzer data then stay inside the table.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

from generator.build.exporters.base import ExportContext, ExportResult, error_line
from generator.build.exporters.torch import check_input_dtypes, example_inputs, import_torch, load_module
from generator.build.input_values import Range
from generator.build.runners import flatten_outputs, torch_runner, torchscript_runner
from generator.core import dtypes
from generator.core.errors import ExportError
from generator.core.signature import Signature, TensorInfo, libtorch_name
from generator.core.triton import DEFAULT_MODEL_FILENAMES, LIBTORCH_PLATFORM
from generator.spec.models import ModelSpec


def _tensor(name: str, tensor: Any, batching: bool, spec_dims: list[int] | None) -> TensorInfo:
    shape = list(tensor.shape)
    if spec_dims is not None and len(spec_dims) == len(shape) - (1 if batching else 0):
        shape = ([shape[0]] if batching else []) + [
            -1 if d == -1 else s for d, s in zip(spec_dims, shape[1:] if batching else shape, strict=True)
        ]
    if batching and shape:
        shape[0] = -1
    return TensorInfo(name, dtypes.from_torch(tensor.dtype), tuple(shape))


class TorchScriptExporter:
    """Traces a torch ``nn.Module`` to TorchScript."""

    framework = "torchscript"

    def __init__(self, context: ExportContext | None = None) -> None:
        self.context = context or ExportContext()

    def export(self, model: ModelSpec, source: Path, version_dir: Path) -> ExportResult:
        """Trace the module, save ``version_dir/model.pt``, and describe it with ``NAME__index`` names.

        Raises:
            ExportError: the module cannot be loaded or traced.
        """
        torch = import_torch()
        check_input_dtypes(model, {t.name: t.dtype for t in model.inputs or []})
        module, example = load_module(model, source)
        batching = model.max_batch_size != 0
        names, tensors = example_inputs(model, example, batching)
        started = time.perf_counter()
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                traced = torch.jit.trace(module, tuple(tensors), check_trace=True)
                outputs = flatten_outputs(traced(*tensors))
        except Exception as exc:
            raise ExportError(
                f"model '{model.name}': torch.jit.trace failed: {error_line(exc)}; "
                "make forward() traceable or use format: onnx"
            ) from exc
        version_dir.mkdir(parents=True, exist_ok=True)
        target = version_dir / DEFAULT_MODEL_FILENAMES[LIBTORCH_PLATFORM]
        torch.jit.save(traced, str(target))
        spec_in = {i: t.dims for i, t in enumerate(model.inputs or [])}
        spec_out = {i: t.dims for i, t in enumerate(model.outputs or [])}
        out_names = (
            [t.name for t in model.outputs] if model.outputs else [f"output_{i}" for i in range(len(outputs))]
        )
        if len(out_names) != len(outputs):
            raise ExportError(
                f"model '{model.name}': the spec names {len(out_names)} outputs but the module returns "
                f"{len(outputs)}; make them agree"
            )
        signature = Signature(
            tuple(
                _tensor(libtorch_name(n, i), t, batching, spec_in.get(i))
                for i, (n, t) in enumerate(zip(names, tensors, strict=True))
            ),
            tuple(
                _tensor(libtorch_name(n, i), t, batching, spec_out.get(i))
                for i, (n, t) in enumerate(zip(out_names, outputs, strict=True))
            ),
        )
        check_input_dtypes(model, {t.name: t.dtype for t in signature.inputs})
        in_names = [t.name for t in signature.inputs]
        result_names = [t.name for t in signature.outputs]
        return ExportResult(
            files=[target],
            platform=LIBTORCH_PLATFORM,
            signature=signature,
            reference=torch_runner(f"model '{model.name}': the torch module", module, in_names, result_names),
            runner=torchscript_runner(
                f"model '{model.name}': the saved TorchScript", target, in_names, result_names
            ),
            details={
                "torch": torch.__version__,
                "export_seconds": round(time.perf_counter() - started, 3),
                "index_ranges": {k: list(v) for k, v in traced_index_ranges(traced, in_names).items()},
            },
        )


#: Ops an index passes through unchanged in value on its way to a table.
_INDEX_PASS_THROUGH = frozenset(
    {"aten::to", "aten::unsqueeze", "aten::squeeze", "aten::view", "aten::reshape", "aten::flatten",
     "aten::contiguous", "aten::expand", "aten::clone", "aten::long", "aten::int"}
)  # fmt: skip


def traced_index_ranges(traced: Any, input_names: list[str]) -> dict[str, Range]:
    """``0 .. rows-1`` for each input that indexes the rows of a table in a traced module's graph.

    Args:
        traced: The ``torch.jit.trace`` result.
        input_names: The served names of its forward inputs, in order.

    Returns:
        Input name -> range; an input indexing several tables gets the smallest. Nothing where no input
        reaches a table (or the graph cannot be read).
    """
    try:
        graph = traced.inlined_graph
        inputs = {
            value.debugName(): name
            for value, name in zip(list(graph.inputs())[1:], input_names, strict=False)
        }
        found: dict[str, Range] = {}
        for node in graph.nodes():
            rows = _table_rows(node, traced)
            if rows is None or rows < 1:
                continue
            source = _index_source(node.inputsAt(1 if node.kind() == "aten::embedding" else 2))
            name = inputs.get(source) if source is not None else None
            if name is not None:
                found[name] = (0, min(rows - 1, found.get(name, (0, rows - 1))[1]))
        return found
    except Exception:  # a graph this walk does not know: no ranges, as for a model without tables
        return {}


def _table_rows(node: Any, module: Any) -> int | None:
    """Rows of the table an ``aten::embedding`` or ``aten::index_select(table, 0, ids)`` reads."""
    if node.kind() == "aten::index_select":
        dim = node.inputsAt(1).node()
        if dim.kind() != "prim::Constant" or dim.i("value") != 0:
            return None
    elif node.kind() != "aten::embedding":
        return None
    table = _attribute(node.inputsAt(0), module)
    return int(table.shape[0]) if table is not None and table.dim() >= 1 else None


def _attribute(value: Any, module: Any) -> Any:
    """The tensor a ``prim::GetAttr`` chain from the module (or a tensor constant) stands for, else None."""
    node = value.node()
    if node.kind() == "prim::Constant" and node.hasAttribute("value") and node.kindOf("value") == "t":
        return node.t("value")
    if node.kind() != "prim::GetAttr":
        return None
    parent = node.input()
    owner = module if parent.node().kind() == "prim::Param" else _attribute(parent, module)
    return getattr(owner, node.s("name"), None) if owner is not None else None


def _index_source(value: Any) -> str | None:
    """The graph input an index value comes from unchanged (through casts and reshapes), else None."""
    while value.node().kind() in _INDEX_PASS_THROUGH:
        value = value.node().inputsAt(0)
    return value.debugName() if value.node().kind() == "prim::Param" else None
