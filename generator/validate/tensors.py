"""Triton's checks of a config's tensors beyond their names and dims: ``reshape`` against ``dims``, the
tensor kinds only TensorRT serves (shape tensors, non-linear formats), image formats, batch inputs and
outputs, and label files.

Triton 2.51 makes these checks at load time (its core's ``ValidateModelIOConfig``, the model's label
provider, and the backend utilities' parse of ``batch_output``); each rule here names the problem as
Triton does, with the field path and the fix. Every function returns ``(severity, message)`` pairs.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path

from tritonclient.grpc import model_config_pb2

from generator.validate.config import Found, is_tensorrt, shape_text, type_name

_BATCH_INPUT_KINDS = {v: k for k, v in model_config_pb2.BatchInput.Kind.items()}
_BATCH_OUTPUT_KINDS = {v: k for k, v in model_config_pb2.BatchOutput.Kind.items()}
_BATCH_INPUT_TYPES = (model_config_pb2.TYPE_INT32, model_config_pb2.TYPE_FP32)
_IMAGE_FORMATS = (model_config_pb2.ModelInput.FORMAT_NHWC, model_config_pb2.ModelInput.FORMAT_NCHW)
_FORMAT_NAMES = {v: k for k, v in model_config_pb2.ModelInput.Format.items()}

Tensor = model_config_pb2.ModelInput | model_config_pb2.ModelOutput


def element_count(dims: Sequence[int]) -> int:
    """Elements of a shape as Triton counts them: -1 when a dimension is variable, 0 for no dimension."""
    if any(d == -1 for d in dims):
        return -1
    count = 0
    for i, d in enumerate(dims):
        count = d if i == 0 else count * d
    return count


def _runs(dims: Sequence[int]) -> list[int]:
    """Element counts of the runs of fixed dimensions around each variable one."""
    runs, current = [], 1
    for d in dims:
        if d == -1:
            runs.append(current)
            current = 1
        else:
            current *= d
    return [*runs, current]


def _valid(dims: Sequence[int]) -> bool:
    return all(d >= 1 or d == -1 for d in dims)


def check_reshape(kind: str, tensor: Tensor, max_batch_size: int) -> Found:
    """One tensor's ``reshape`` against its ``dims``, as Triton checks them.

    Args:
        kind: ``input`` or ``output``.
        tensor: The tensor's config.
        max_batch_size: The model's; an empty reshape needs batching.
    """
    if not tensor.HasField("reshape"):
        return []
    label = f"{kind} '{tensor.name}'"
    shape = list(tensor.reshape.shape)
    dims = list(tensor.dims)
    if not shape and max_batch_size == 0:
        return [
            (
                "error",
                f"{label} has an empty reshape on a model without batching (max_batch_size 0), which Triton "
                "refuses: scalar tensors need batching; set max_batch_size > 0 or give reshape a shape",
            )
        ]
    if not dims or not _valid(dims) or not _valid(shape):
        return []  # a missing or bad dimension is reported on its own
    dims_count, shape_count = element_count(dims), element_count(shape)
    if dims_count != shape_count and (shape_count != 0 or dims_count != 1):
        if not shape:
            fix = "an empty reshape (a scalar) needs dims [1]"
        elif -1 in (dims_count, shape_count):
            fix = "give both -1 in the same places, or neither"
        else:
            fix = f"reshape must hold the {dims_count} elements of dims"
        return [
            (
                "error",
                f"{label} has different size for dims {shape_text(dims)} and reshape {shape_text(shape)} "
                f"({_count_text(dims_count)} vs {_count_text(shape_count)}); {fix}",
            )
        ]
    if dims_count != -1:
        return []
    dims_runs, shape_runs = _runs(dims), _runs(shape)
    if len(dims_runs) != len(shape_runs):
        return [
            (
                "error",
                f"{label} has different number of variable-size dimensions for dims {shape_text(dims)} and "
                f"reshape {shape_text(shape)}; give reshape as many -1 as dims",
            )
        ]
    if dims_runs != shape_runs:
        return [
            (
                "error",
                f"{label} has different size for dims {shape_text(dims)} and reshape {shape_text(shape)}: "
                f"the fixed dimensions between the -1 hold {dims_runs} elements in dims but {shape_runs} in "
                "reshape; make each run between -1 hold the same count",
            )
        ]
    return []


def _count_text(count: int) -> str:
    return "variable" if count == -1 else f"{count} element{'s' if count != 1 else ''}"


def _check_kinds(kind: str, tensor: Tensor, tensorrt: bool | None) -> Found:
    """Image formats, and the tensor kinds only TensorRT serves."""
    found: Found = []
    label = f"{kind} '{tensor.name}'"
    if kind == "input" and tensor.format in _IMAGE_FORMATS and tensor.dims and len(tensor.dims) != 3:
        found.append(
            (
                "error",
                f"{label} format {_FORMAT_NAMES[tensor.format]} requires 3 dims (NHWC/NCHW without the batch "
                f"axis) but dims are {shape_text(tensor.dims)}; fix dims or use FORMAT_NONE",
            )
        )
    if tensorrt is False and tensor.is_shape_tensor:
        found.append(
            (
                "error",
                f"{label} is_shape_tensor: shape tensors are only supported for TensorRT platform; "
                "drop is_shape_tensor",
            )
        )
    if tensor.is_non_linear_format_io:
        if tensorrt is False:
            found.append(
                (
                    "error",
                    f"{label} is_non_linear_format_io: non-linear IO format is only supported for the TensorRT "
                    "platform; drop is_non_linear_format_io",
                )
            )
        elif tensorrt and len(tensor.dims) != 3:
            found.append(
                (
                    "error",
                    f"{label} is_non_linear_format_io: a non-linear IO format {kind} requires 3 dims, not "
                    f"{shape_text(tensor.dims)}",
                )
            )
    return found


def check_tensors(config: model_config_pb2.ModelConfig) -> Found:
    """Every input's and output's reshape, format and TensorRT-only kind."""
    tensorrt = is_tensorrt(config)
    found: Found = []
    for kind, tensors in (("input", config.input), ("output", config.output)):
        for tensor in tensors:
            found += check_reshape(kind, tensor, config.max_batch_size)
            found += _check_kinds(kind, tensor, tensorrt)
    found += _check_optional(config)
    return found


def _check_optional(config: model_config_pb2.ModelConfig) -> Found:
    """The ONNX Runtime backend's own rule: no optional input on a model that batches."""
    if config.backend != "onnxruntime" or config.max_batch_size == 0:
        return []
    return [
        (
            "warning",
            f"input '{tensor.name}' is optional on a model that batches: the official ONNX Runtime backend "
            "refuses it (optional input is not supported for models that support batching) though the embedded "
            "server loads it; set max_batch_size: 0 or make the input required",
        )
        for tensor in config.input
        if tensor.optional
    ]


def _check_sources(label: str, kind: str, sources: Sequence[str], inputs: set[str]) -> Found:
    found: Found = []
    if len(sources) != 1:
        found.append(
            (
                "error",
                f"{label} kind '{kind}' expects 1 source input, got {len(sources)}; set one source_input",
            )
        )
    for source in sources:
        if source not in inputs:
            found.append(
                (
                    "error",
                    f"{label} has unknown source input name '{source}'; source_input must name an input "
                    f"(the model has: {', '.join(sorted(inputs)) or '(none)'})",
                )
            )
    return found


def check_batch_inputs(config: model_config_pb2.ModelConfig) -> Found:
    """``batch_input``: a known kind, one source that is an input, and TYPE_INT32 or TYPE_FP32."""
    inputs = {t.name for t in config.input}
    found: Found = []
    for i, batch in enumerate(config.batch_input):
        label = f"batch_input[{i}]"
        kind = _BATCH_INPUT_KINDS.get(batch.kind)
        if kind is None:
            found.append(
                (
                    "error",
                    f"{label} has unknown batch input kind {batch.kind}; use one of "
                    f"{', '.join(_BATCH_INPUT_KINDS.values())}",
                )
            )
        else:
            found += _check_sources(label, kind, batch.source_input, inputs)
        if batch.data_type not in _BATCH_INPUT_TYPES:
            found.append(
                (
                    "error",
                    f"{label} data_type is {type_name(batch.data_type)}: batch input data type must be "
                    "TYPE_INT32 or TYPE_FP32",
                )
            )
    return found


def check_batch_outputs(config: model_config_pb2.ModelConfig) -> Found:
    """``batch_output``: a known kind, one source that is an input, and targets that are outputs, once each."""
    inputs = {t.name for t in config.input}
    outputs = {t.name for t in config.output}
    found: Found = []
    for i, batch in enumerate(config.batch_output):
        label = f"batch_output[{i}]"
        kind = _BATCH_OUTPUT_KINDS.get(batch.kind)
        if kind is None:
            found.append(
                (
                    "error",
                    f"{label} has unknown batch output kind {batch.kind}; use "
                    f"{', '.join(_BATCH_OUTPUT_KINDS.values())}",
                )
            )
        else:
            found += _check_sources(label, kind, batch.source_input, inputs)
        if not batch.target_name:
            found.append(
                (
                    "error",
                    f"{label} has no target_name, which crashes Triton 2.51 as it loads the model; name the "
                    "output(s) it scatters",
                )
            )
        seen: set[str] = set()
        for target in batch.target_name:
            if target not in outputs:
                found.append(
                    (
                        "error",
                        f"{label} has unknown target output name '{target}'; target_name must name an output "
                        f"(the model has: {', '.join(sorted(outputs)) or '(none)'})",
                    )
                )
            elif target in seen:
                found.append(
                    (
                        "error",
                        f"{label} target output name '{target}' can only be specified once; drop the copy",
                    )
                )
            seen.add(target)
    return found


def check_io(config: model_config_pb2.ModelConfig) -> Found:
    """Every check of this module that needs only the config."""
    return check_tensors(config) + check_batch_inputs(config) + check_batch_outputs(config)


def triton_join(model_dir: Path, relative: str) -> Path:
    """A path of the model directory as Triton joins it: ``dir + "/" + name``, even for an absolute name."""
    return Path(f"{os.fspath(model_dir)}/{relative}")


def check_label_files(config: model_config_pb2.ModelConfig, model_dir: Path) -> Found:
    """Each output's ``label_filename``: a readable file of the model directory, given once per output."""
    found: Found = []
    labelled: set[str] = set()
    for tensor in config.output:
        if not tensor.label_filename:
            continue
        label = f"output '{tensor.name}' label_filename '{tensor.label_filename}'"
        if tensor.name in labelled:
            found.append(
                (
                    "error",
                    f"{label}: multiple label files for '{tensor.name}' (the output is declared twice with "
                    "labels); keep one declaration",
                )
            )
        labelled.add(tensor.name)
        path = triton_join(model_dir, tensor.label_filename)
        try:
            mode = path.stat().st_mode
        except OSError:
            found.append(
                (
                    "error",
                    f"{label}: the file is missing (Triton fails to open text file for read and refuses the "
                    f"model); add {tensor.label_filename} to the model directory",
                )
            )
            continue
        if stat.S_ISDIR(mode):
            found.append(
                (
                    "error",
                    f"{label} is a directory, which crashes Triton 2.51 as it reads the labels; name a text "
                    "file of one label per line",
                )
            )
        elif not os.access(path, os.R_OK):
            found.append(
                ("error", f"{label} cannot be read, so Triton fails to load the model; fix its permissions")
            )
    return found
