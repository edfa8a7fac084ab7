"""Triton's tensor rules in validate: reshape against dims, TensorRT-only tensor kinds, image formats, batch
inputs and outputs, label files, duplicated names.

Every verdict here is Triton 2.51's own: each config was loaded on the embedded tritonserver (a Python-backend
model, so the verdict is Triton core's), and tests/integration/test_validate_rules_served.py keeps a
representative case of each area checked against the server.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from generator.validate.config import check_config
from generator.validate.run import validate_repository

from ..conftest import make_linear_onnx


def config(
    inputs: str = '{ name: "x" data_type: TYPE_FP32 dims: [ 4 ] }',
    outputs: str = '{ name: "y" data_type: TYPE_FP32 dims: [ 4 ] }',
    extra: str = "",
    max_batch_size: int = 8,
    serving: str = 'backend: "python"',
) -> str:
    return (
        f'name: "m"\n{serving}\nmax_batch_size: {max_batch_size}\ninput [ {inputs} ]\noutput [ {outputs} ]\n'
        f"instance_group [ {{ count: 1 kind: KIND_CPU }} ]\n{extra}\n"
    )


def judge(text: str, model_dir: Path | None = None) -> tuple[list[str], list[str]]:
    """(errors, warnings) of check_config on a config text."""
    found = check_config(text_format.Parse(text, model_config_pb2.ModelConfig()), "m", model_dir)
    return [m for s, m in found if s == "error"], [m for s, m in found if s == "warning"]


def reshaped(dims: str, shape: str, max_batch_size: int = 8, kind: str = "input") -> str:
    name = "x" if kind == "input" else "y"
    tensor = f'{{ name: "{name}" data_type: TYPE_FP32 dims: {dims} reshape {{ shape: {shape} }} }}'
    return config(inputs=tensor, max_batch_size=max_batch_size) if kind == "input" else config(outputs=tensor)


def batch_input(body: str) -> str:
    return config(extra=f"batch_input [ {body} ]")


def batch_output(body: str, outputs: str = '{ name: "y" data_type: TYPE_FP32 dims: [ 4 ] }') -> str:
    return config(outputs=outputs, extra=f"batch_output [ {body} ]")


SCATTER = 'kind: BATCH_SCATTER_WITH_INPUT_SHAPE source_input: "x"'
COUNT = 'kind: BATCH_ELEMENT_COUNT target_name: "n" data_type: TYPE_INT32'

REFUSED = {
    "reshape of another element count": (
        reshaped("[ 4 ]", "[ 3 ]"),
        "input 'x' has different size for dims [4] and reshape [3] (4 elements vs 3 elements)",
    ),
    "reshape of an output": (reshaped("[ 4 ]", "[ 5 ]", kind="output"), "output 'y' has different size"),
    "empty reshape without batching": (
        reshaped("[ 1 ]", "[ ]", max_batch_size=0),
        "input 'x' has an empty reshape on a model without batching (max_batch_size 0)",
    ),
    "empty reshape of two elements": (reshaped("[ 2 ]", "[ ]"), "an empty reshape (a scalar) needs dims [1]"),
    "variable dims, fixed reshape": (reshaped("[ 2, -1 ]", "[ 2, 4 ]"), "(variable vs 8 elements)"),
    "another number of variable dims": (
        reshaped("[ -1, -1 ]", "[ -1 ]"),
        "has different number of variable-size dimensions for dims [-1, -1] and reshape [-1]",
    ),
    "runs between variable dims differ": (
        reshaped("[ 2, -1, 3 ]", "[ 3, -1, 2 ]"),
        "the fixed dimensions between the -1 hold [2, 3] elements in dims but [3, 2] in reshape",
    ),
    "NHWC with 2 dims": (
        config(inputs='{ name: "x" data_type: TYPE_FP32 format: FORMAT_NHWC dims: [ 4, 4 ] }'),
        "input 'x' format FORMAT_NHWC requires 3 dims",
    ),
    "a shape tensor outside TensorRT": (
        config(outputs='{ name: "y" data_type: TYPE_INT32 dims: [ 4 ] is_shape_tensor: true }'),
        "output 'y' is_shape_tensor: shape tensors are only supported for TensorRT platform",
    ),
    "a non-linear format outside TensorRT": (
        config(inputs='{ name: "x" data_type: TYPE_FP32 dims: [ 3, 4, 4 ] is_non_linear_format_io: true }'),
        "non-linear IO format is only supported for the TensorRT platform",
    ),
    "a non-linear format of 2 dims on TensorRT": (
        config(
            inputs='{ name: "x" data_type: TYPE_FP32 dims: [ 4, 4 ] is_non_linear_format_io: true }',
            serving='platform: "tensorrt_plan"',
        ),
        "a non-linear IO format input requires 3 dims, not [4, 4]",
    ),
    "batch input with two sources": (
        batch_input(f'{{ {COUNT} source_input: [ "x", "x" ] }}'),
        "batch_input[0] kind 'BATCH_ELEMENT_COUNT' expects 1 source input, got 2",
    ),
    "batch input without a source": (
        batch_input('{ kind: BATCH_ITEM_SHAPE target_name: "n" data_type: TYPE_INT32 }'),
        "kind 'BATCH_ITEM_SHAPE' expects 1 source input, got 0",
    ),
    "batch input of TYPE_INT64": (
        batch_input('{ kind: BATCH_ELEMENT_COUNT target_name: "n" data_type: TYPE_INT64 source_input: "x" }'),
        "batch_input[0] data_type is TYPE_INT64: batch input data type must be TYPE_INT32 or TYPE_FP32",
    ),
    "batch input without a data type": (
        batch_input('{ kind: BATCH_ELEMENT_COUNT target_name: "n" source_input: "x" }'),
        "data_type is TYPE_INVALID: batch input data type must be TYPE_INT32 or TYPE_FP32",
    ),
    "batch input from an unknown input": (
        batch_input(f'{{ {COUNT} source_input: "z" }}'),
        "batch_input[0] has unknown source input name 'z'",
    ),
    "batch input of an unknown kind": (
        batch_input('{ kind: 99 target_name: "n" data_type: TYPE_INT32 source_input: "x" }'),
        "batch_input[0] has unknown batch input kind 99",
    ),
    "batch output without a source": (
        batch_output('{ kind: BATCH_SCATTER_WITH_INPUT_SHAPE target_name: "y" }'),
        "batch_output[0] kind 'BATCH_SCATTER_WITH_INPUT_SHAPE' expects 1 source input, got 0",
    ),
    "batch output from an unknown input": (
        batch_output('{ kind: BATCH_SCATTER_WITH_INPUT_SHAPE target_name: "y" source_input: "q" }'),
        "batch_output[0] has unknown source input name 'q'",
    ),
    "batch output to an unknown output": (
        batch_output(f'{{ {SCATTER} target_name: "z" }}'),
        "batch_output[0] has unknown target output name 'z'",
    ),
    "batch output naming a target twice": (
        batch_output(f'{{ {SCATTER} target_name: [ "y", "y" ] }}'),
        "batch_output[0] target output name 'y' can only be specified once",
    ),
    "batch output without a target": (
        batch_output(f"{{ {SCATTER} }}"),
        "batch_output[0] has no target_name, which crashes Triton 2.51",
    ),
    "batch output of an unknown kind": (
        batch_output('{ kind: 5 target_name: "y" source_input: "x" }'),
        "batch_output[0] has unknown batch output kind 5",
    ),
}

LOADED = {
    "reshape of the same element count": reshaped("[ 4 ]", "[ 2, 2 ]"),
    "empty reshape of one element with batching": reshaped("[ 1 ]", "[ ]"),
    "variable runs that match": reshaped("[ 2, 4, -1, 6 ]", "[ 8, -1, 1, 6 ]"),
    "a variable dim split in two": reshaped("[ -1 ]", "[ -1, 1 ]"),
    "NCHW with 3 dims": config(
        inputs='{ name: "x" data_type: TYPE_FP32 format: FORMAT_NCHW dims: [ 3, 4, 4 ] }'
    ),
    "a shape tensor on TensorRT": config(
        inputs='{ name: "x" data_type: TYPE_INT32 dims: [ 4 ] is_shape_tensor: true }',
        serving='platform: "tensorrt_plan"',
    ),
    "an output named like an input": config(outputs='{ name: "x" data_type: TYPE_FP32 dims: [ 4 ] }'),
    "an optional input": config(inputs='{ name: "x" data_type: TYPE_FP32 dims: [ 4 ] optional: true }'),
    "a batch input": batch_input(f'{{ {COUNT} source_input: "x" }}'),
    "a batch input targeting a config input": batch_input(
        '{ kind: BATCH_ELEMENT_COUNT target_name: "x" data_type: TYPE_FP32 source_input: "x" }'
    ),
    "a batch input without a target": batch_input(
        '{ kind: BATCH_ELEMENT_COUNT data_type: TYPE_FP32 source_input: "x" }'
    ),
    "a batch input naming a target twice": batch_input(
        '{ kind: BATCH_ELEMENT_COUNT target_name: [ "c", "c" ] data_type: TYPE_FP32 source_input: "x" }'
    ),
    "a batch input without batching": config(
        max_batch_size=0, extra=f'batch_input [ {{ {COUNT} source_input: "x" }} ]'
    ),
    "a batch output": batch_output(f'{{ {SCATTER} target_name: "y" }}'),
    "a batch output to two outputs": batch_output(
        f'{{ {SCATTER} target_name: [ "y", "y2" ] }}',
        outputs='{ name: "y" data_type: TYPE_FP32 dims: [ 4 ] }, { name: "y2" data_type: TYPE_FP32 dims: [ 4 ] }',
    ),
    "one output in two batch outputs": batch_output(
        f'{{ {SCATTER} target_name: "y" }}, {{ {SCATTER} target_name: "y" }}'
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_what_triton_refuses_is_an_error(case: str) -> None:
    text, expected = REFUSED[case]
    errors, _ = judge(text)
    assert any(expected in e for e in errors), errors


@pytest.mark.parametrize("case", sorted(LOADED))
def test_what_triton_loads_has_no_error(case: str) -> None:
    errors, warnings = judge(LOADED[case])
    assert errors == [] and warnings == []


def test_reshape_is_judged_once_its_dims_are_valid() -> None:
    """A bad dimension is reported as such, not as a size mismatch too."""
    errors, _ = judge(reshaped("[ 0, 4 ]", "[ 4 ]"))
    assert len(errors) == 1 and "dims [0, 4] hold 0" in errors[0], errors


def test_tensorrt_only_kinds_wait_for_the_platform() -> None:
    """With neither platform nor backend Triton guesses from the model file: no verdict from the config."""
    text = config(
        inputs='{ name: "x" data_type: TYPE_INT32 dims: [ 4 ] is_shape_tensor: true }', serving=""
    ).replace(
        "instance_group [ { count: 1 kind: KIND_CPU } ]", 'instance_group [ { kind: KIND_CPU profile: "0" } ]'
    )
    errors, _ = judge(text)
    assert not [e for e in errors if "TensorRT" in e], errors


def test_a_name_declared_twice_is_a_warning() -> None:
    """Triton's core keeps the first declaration and loads the model (the ONNX Runtime backend refuses two
    inputs of one name; the Python backend does not)."""
    twice = '{ name: "x" data_type: TYPE_FP32 dims: [ 4 ] }, { name: "x" data_type: TYPE_FP32 dims: [ 4 ] }'
    errors, warnings = judge(config(inputs=twice))
    assert errors == []
    assert warnings == [
        "input 'x' is declared twice; Triton's core keeps the first declaration and ignores the second (the "
        "ONNX Runtime backend counts both and refuses the model): keep one"
    ]
    errors, warnings = judge(config(outputs=twice.replace('"x"', '"y"')))
    assert errors == [] and warnings[0].endswith("ignores the second: keep one"), warnings


LABELLED = '{ name: "y" data_type: TYPE_FP32 dims: [ 4 ] label_filename: "labels.txt" }'


def test_label_files(tmp_path: Path) -> None:
    errors, _ = judge(config(outputs=LABELLED), tmp_path)
    assert errors == [
        "output 'y' label_filename 'labels.txt': the file is missing (Triton fails to open text file for read "
        "and refuses the model); add labels.txt to the model directory"
    ]
    (tmp_path / "labels.txt").mkdir()
    errors, _ = judge(config(outputs=LABELLED), tmp_path)
    assert errors == [
        "output 'y' label_filename 'labels.txt' is a directory, which crashes Triton 2.51 as it reads the "
        "labels; name a text file of one label per line"
    ]
    (tmp_path / "labels.txt").rmdir()
    (tmp_path / "labels.txt").write_text("a\nb\n")
    assert judge(config(outputs=LABELLED), tmp_path) == ([], [])
    errors, _ = judge(config(outputs=f"{LABELLED}, {LABELLED}"), tmp_path)
    assert any("multiple label files for 'y'" in e for e in errors), errors
    assert judge(config(outputs=LABELLED)) == ([], [])  # without the directory, files are not judged


def test_validate_repository_reads_the_label_file(tmp_path: Path) -> None:
    model = tmp_path / "repo" / "lin"
    make_linear_onnx(model / "1" / "model.onnx")
    text = config(
        outputs='{ name: "y" data_type: TYPE_FP32 dims: [ 3 ] label_filename: "labels.txt" }',
        serving='platform: "onnxruntime_onnx"',
    ).replace('name: "m"', 'name: "lin"')
    (model / "config.pbtxt").write_text(text)
    errors = [p.message for p in validate_repository(tmp_path / "repo").errors]
    assert any("label_filename 'labels.txt': the file is missing" in e for e in errors), errors
    (model / "labels.txt").write_text("a\nb\nc\n")
    report = validate_repository(tmp_path / "repo")
    assert report.ok, [str(p) for p in report.problems]


def test_an_optional_input_on_a_batching_onnx_model_is_a_warning() -> None:
    """The official ONNX Runtime backend refuses it; the embedded server's stand-in and the Python backend
    load it."""
    optional = '{ name: "x" data_type: TYPE_FP32 dims: [ 4 ] optional: true }'
    onnx = 'platform: "onnxruntime_onnx" backend: "onnxruntime"'
    errors, warnings = judge(config(inputs=optional, serving=onnx))
    assert errors == [] and len(warnings) == 1
    assert warnings[0].startswith("input 'x' is optional on a model that batches: the official ONNX Runtime")
    assert judge(config(inputs=optional, serving=onnx, max_batch_size=0)) == ([], [])
    assert judge(config(inputs=optional)) == ([], [])
