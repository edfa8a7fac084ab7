"""PyTorch source: an ``nn.Module`` from a factory or a saved file, exported to ONNX with torch.onnx.

The export uses the dynamo exporter with a dynamic batch axis (and any ``-1`` dims of the spec as
further dynamic axes); weights are stored inside ``model.onnx``. Inputs and outputs are exported under
temporary names and then given the spec's (:mod:`generator.build.exporters.naming`), so an output may share
its name with a submodule (``embedding``) whose value torch names the same.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from generator.build.exporters.base import ExportResult, call_factory, check_opset, error_line, one_line
from generator.build.exporters.naming import rename_file, source_renames
from generator.build.runners import torch_runner
from generator.build.sequence import graph_model
from generator.core import dtypes
from generator.core.errors import ExportError, MissingDependencyError
from generator.core.signature import read_onnx_signature
from generator.core.triton import DEFAULT_MODEL_FILENAMES, ONNX_PLATFORM
from generator.spec.models import MAX_OPSET, ModelSpec, factory_parts

EXAMPLE_BATCH = 2  # torch.export specialises sizes 0 and 1, so trace with 2
EXAMPLE_DYNAMIC_DIM = 4
#: Names the exporter gives the graph's inputs and outputs, before they get the spec's names.
_TEMPORARY_INPUT = "tritongen_export_input_{}"
_TEMPORARY_OUTPUT = "tritongen_export_output_{}"
#: Input dtypes a torch export cannot take, and what to do instead.
UNSUPPORTED_INPUTS = {
    "STRING": "torch models take numeric tensors; turn text into token ids before the model "
    "(a Python-backend step) and declare the input INT64",
    "BF16": "numpy (the parity check) has no bfloat16 and ONNX Runtime's CPU kernels do not run it; "
    "declare the input FP32 or FP16 and cast with .to(torch.bfloat16) inside forward()",
}


def check_input_dtypes(model: ModelSpec, dtypes_by_name: dict[str, str]) -> None:
    """Refuse input dtypes a torch model cannot be exported and verified with.

    Raises:
        ExportError: an input is STRING or BF16; the message says what to declare instead.
    """
    for name, dtype in dtypes_by_name.items():
        if dtype in UNSUPPORTED_INPUTS:
            raise ExportError(
                f"model '{model.name}': input '{name}' is {dtype}, but {UNSUPPORTED_INPUTS[dtype]}"
            )


def import_torch() -> Any:
    """The ``torch`` module, with the ONNX exporter's per-op registration warnings silenced.

    Importing torch sets its own loggers' levels (WARNING); the level the caller gave the ``torch``
    logger before (ERROR unless the CLI runs with --verbose) is given back to all of them.

    Raises:
        MissingDependencyError: torch is not installed; the message says how to install it.
    """
    wanted = logging.getLogger("torch").level
    try:
        import torch
    except ImportError:
        raise MissingDependencyError.for_package("torch", purpose="to export PyTorch models") from None
    if wanted > logging.WARNING and logging.getLogger("torch").level != wanted:
        torch._logging.set_logs(all=wanted)
    # The exporter warns once per missing torchvision op; irrelevant unless the model uses them.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    return torch


#: Where torch's export error names the user's code that raised it.
_RAISED_AT = re.compile(
    r'The following call raised this error:\s*File "([^"]+)", line (\d+), in (\S+)\s*\n\s*(\S[^\n]*)'
)
#: torch.onnx's summary of the original error, when it is not chained as the cause.
_SUMMARY = re.compile(r"## Exception summary\s*<class '(?:[\w.]*\.)?(\w+)'>: ([^\n]+)")


def export_failure(exc: BaseException) -> str:
    """A failed torch.onnx.export on one line: the error at its root and the user's code that raised it.

    torch's own message is pages long (the export's steps, links, a traceback, colour codes) and its
    first line says only which step failed; the root cause says why.
    """
    root, seen = exc, {id(exc)}
    while root.__cause__ is not None and id(root.__cause__) not in seen:
        root = root.__cause__
        seen.add(id(root))
    text = str(exc)
    summary = _SUMMARY.search(text)
    if root is exc and summary:
        reason = f"{summary.group(1)}: {one_line(summary.group(2))}"
    else:
        reason = error_line(root)
    raised_at = _RAISED_AT.search(text) or _RAISED_AT.search(str(root))
    if raised_at:
        path, line, function, code = raised_at.groups()
        reason += f" (at {Path(path).name}:{line} in {function}: {one_line(code)})"
    return reason


def load_module(model: ModelSpec, source: Path) -> tuple[Any, Any]:
    """A model's torch module (in eval mode) and its factory's example inputs (or None).

    The source is a ``file.py:function`` factory, a TorchScript file or a pickled ``nn.Module``.

    Raises:
        ExportError: the source cannot be loaded, or does not give an ``nn.Module``.
    """
    torch = import_torch()
    if factory_parts(model.source) is not None:
        module, example = call_factory(model, source)
    else:
        try:
            produced = torch.jit.load(str(source), map_location="cpu")
        except Exception:
            try:
                produced = torch.load(str(source), map_location="cpu", weights_only=False)
            except Exception as exc:
                raise ExportError(
                    f"model '{model.name}': {source} is neither TorchScript nor a pickled nn.Module ({exc}); "
                    "use a `file.py:function` factory that returns the module"
                ) from None
        module, example = produced, None
    if not isinstance(module, torch.nn.Module):
        raise ExportError(
            f"model '{model.name}': {model.source} gave a {type(module).__name__}, not a torch.nn.Module; "
            "return the module, or (module, example_inputs)"
        )
    return module.eval(), example


def example_inputs(model: ModelSpec, example: Any, batching: bool) -> tuple[list[str], list[Any]]:
    """Input names and tensors to export or trace with.

    The factory's example inputs when it gave some (a dict names them; else the spec's input names or
    ``input_N``), else seeded tensors of the spec's inputs (batch 2 when ``batching``, dynamic dims 4).

    Raises:
        ExportError: the example and the spec disagree on the number of inputs, or neither gives any.
    """
    torch = import_torch()
    if example is not None:
        if isinstance(example, dict):
            return list(example), list(example.values())
        tensors = list(example) if isinstance(example, (tuple, list)) else [example]
        names = (
            [t.name for t in model.inputs] if model.inputs else [f"input_{i}" for i in range(len(tensors))]
        )
        if len(names) != len(tensors):
            raise ExportError(
                f"model '{model.name}': the spec names {len(names)} inputs but the factory's example has "
                f"{len(tensors)}; make them agree"
            )
        return names, tensors
    if not model.inputs:
        raise ExportError(
            f"model '{model.name}': no inputs in the spec and no example inputs from the factory; "
            "add `inputs:` to the spec or return (module, example_inputs)"
        )
    generator = torch.Generator().manual_seed(0)
    tensors = []
    for tensor in model.inputs:
        shape = [EXAMPLE_BATCH] if batching else []
        shape += [EXAMPLE_DYNAMIC_DIM if d == -1 else d for d in tensor.reshape or tensor.dims]
        torch_dtype = getattr(torch, dtypes.to_torch_name(tensor.dtype))
        if torch_dtype.is_floating_point:
            tensors.append(torch.randn(shape, generator=generator).to(torch_dtype))
        else:  # 0 and 1: valid indices, flags and counts for any model (parity draws from the same range)
            tensors.append(torch.randint(0, 2, shape, generator=generator).to(torch_dtype))
    return [t.name for t in model.inputs], tensors


@contextlib.contextmanager
def _torch_output_held() -> Iterator[None]:
    """Unless torch's logger lets INFO through (the CLI's --verbose), keep what torch prints or logs
    while it exports (a failed trace's partial graph, its own summary of the error) off the terminal:
    a failure is reported in one line by the caller."""
    if logging.getLogger("torch").getEffectiveLevel() <= logging.INFO:
        yield
        return
    names = [name for name in logging.root.manager.loggerDict if name == "torch" or name.startswith("torch.")]
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _dynamic_shapes(model: ModelSpec, tensors: list[Any], batching: bool) -> tuple[dict[int, Any], ...]:
    torch = import_torch()
    batch = torch.export.Dim("batch")
    shapes: list[dict[int, Any]] = []
    for index, tensor in enumerate(tensors):
        axes: dict[int, Any] = {0: batch} if batching and tensor.dim() >= 1 else {}
        if model.inputs and index < len(model.inputs):
            dims = model.inputs[index].reshape or model.inputs[index].dims
            offset = 1 if batching else 0
            for axis, size in enumerate(dims):
                if size == -1:
                    axes[axis + offset] = torch.export.Dim(f"{model.inputs[index].name}_{axis + offset}")
        shapes.append(axes)
    return tuple(shapes)


def _give_spec_names(
    model: ModelSpec, target: Path, inputs: dict[str, str], temporary_outputs: list[str], names: list[str]
) -> None:
    """Rename the exported graph's temporary input and output names to the spec's (``names``)."""
    exported = {t.name for t in read_onnx_signature(target).outputs}
    outputs = {
        temporary: name
        for temporary, name in zip(temporary_outputs, names, strict=False)
        if temporary in exported  # a module with fewer outputs than the spec: validation says so
    }
    rename_file(target, inputs, outputs, model.name)


class TorchExporter:
    """Exports a torch ``nn.Module`` to ONNX (opset from the spec, or torch's default)."""

    framework = "torch"

    def load(self, model: ModelSpec, source: Path) -> tuple[Any, Any]:
        """The module to export (in eval mode) and its example inputs (or None)."""
        return load_module(model, source)

    def output_names(self, model: ModelSpec, module: Any) -> list[str] | None:
        """The names of the loaded ``module``'s outputs, in order: the spec's; None where it declares none."""
        return [t.name for t in model.outputs] if model.outputs else None

    def details(self, module: Any) -> dict[str, Any]:
        """What the manifest records of the exported module beyond the export itself."""
        return {}

    def export(self, model: ModelSpec, source: Path, version_dir: Path) -> ExportResult:
        """Export to ``version_dir/model.onnx`` and return a reference runner for parity.

        Raises:
            ExportError: the module cannot be loaded or torch.onnx.export fails.
        """
        torch = import_torch()
        model = graph_model(model)  # a stateful model's controls and states are graph I/O too
        check_input_dtypes(model, {t.name: t.dtype for t in model.inputs or []})
        module, example = self.load(model, source)
        batching = model.max_batch_size != 0
        input_names, tensors = example_inputs(model, example, batching)
        # A factory's example dict names the inputs; a spec input whose source_name is that key renames it.
        renames, _ = source_renames(model)
        input_names = [renames.get(name, name) for name in input_names]
        output_names = self.output_names(model, module)
        temporary_inputs = [_TEMPORARY_INPUT.format(i) for i in range(len(input_names))]
        temporary_outputs = [_TEMPORARY_OUTPUT.format(i) for i in range(len(output_names or []))]
        version_dir.mkdir(parents=True, exist_ok=True)
        target = version_dir / DEFAULT_MODEL_FILENAMES[ONNX_PLATFORM]
        started = time.perf_counter()
        try:
            with warnings.catch_warnings(), _torch_output_held():
                warnings.simplefilter("ignore", FutureWarning)  # torch's own deprecations, not the user's
                torch.onnx.export(
                    module,
                    tuple(tensors),
                    str(target),
                    input_names=temporary_inputs,
                    output_names=temporary_outputs or None,
                    opset_version=model.opset,
                    dynamic_shapes=_dynamic_shapes(model, tensors, batching),
                    dynamo=True,
                    external_data=False,
                    verbose=False,
                )
        except Exception as exc:
            raise ExportError(
                f"model '{model.name}': torch.onnx.export failed: {export_failure(exc)}; "
                "make the module exportable with torch.export (no data-dependent control flow)"
            ) from exc
        _give_spec_names(
            model,
            target,
            dict(zip(temporary_inputs, input_names, strict=True)),
            temporary_outputs,
            output_names or [],
        )
        signature = read_onnx_signature(target)
        check_opset(
            model,
            signature.details.get("opset"),
            "torch.onnx.export",
            "it writes opset 18 and later, and older ones only where ONNX's version converter can rewrite "
            f"the model, which it could not for this one; use opset 18 to {MAX_OPSET}, or leave it unset",
        )
        check_input_dtypes(model, {t.name: t.dtype for t in signature.inputs})
        names_out = [t.name for t in signature.outputs]
        return ExportResult(
            files=[target],
            platform=ONNX_PLATFORM,
            signature=signature,
            reference=torch_runner(f"model '{model.name}': the torch module", module, input_names, names_out),
            details={
                "opset": signature.details.get("opset"),
                "torch": torch.__version__,
                "export_seconds": round(time.perf_counter() - started, 3),
                **self.details(module),
            },
        )
