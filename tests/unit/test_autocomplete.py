"""Triton's auto-complete as rules (generator.core.autocomplete) and as validate applies it.

The rules are read from Triton 2.51's sources (the ONNX Runtime, TensorRT, PyTorch and Python backends, and
the core's UpdateModelConfig); ``tests/integration/test_autocomplete_served.py`` shows the embedded server
loading and refusing the same configs.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from generator.core.autocomplete import (
    complete,
    complete_onnxruntime,
    complete_tensorrt,
    forward_inputs,
    merge_python_result,
    pytorch_refusal,
)
from generator.core.signature import Signature, TensorInfo
from generator.validate.run import validate_repository

from ..conftest import make_linear_onnx

BATCHED = Signature(
    (TensorInfo("x", "FP32", (-1, 4)), TensorInfo("ids", "INT64", (-1,))),
    (TensorInfo("y", "FP32", (-1, 3)),),
)
FIXED = Signature(
    (TensorInfo("x", "FP32", (2, 4)), TensorInfo("n", "INT32", ())), (TensorInfo("y", "FP32", (2, 3)),)
)
X = {"name": "x", "data_type": "TYPE_FP32", "dims": [4]}
Y = {"name": "y", "data_type": "TYPE_FP32", "dims": [3]}


# --- ONNX Runtime ------------------------------------------------------------------------------------------


def test_onnxruntime_completes_an_empty_config_with_batching() -> None:
    done = complete_onnxruntime({"name": "m"}, BATCHED)
    assert done.refusal is None
    assert done.config == {
        "name": "m",
        "max_batch_size": 4,
        "dynamic_batching": {},
        "input": [X, {"name": "ids", "data_type": "TYPE_INT64", "dims": [1], "reshape": {"shape": []}}],
        "output": [Y],
    }
    assert done.filled == (
        "max_batch_size: 4",
        "dynamic_batching { }",
        "input 'x' TYPE_FP32 dims [4]",
        "input 'ids' TYPE_INT64 dims [1] reshape []",
        "output 'y' TYPE_FP32 dims [3]",
    )


def test_onnxruntime_leaves_a_config_with_inputs_and_outputs_alone_even_partial_ones() -> None:
    partial = {"name": "m", "input": [{"name": "x", "dims": [4]}], "output": [{"name": "y"}]}
    assert complete_onnxruntime(partial, BATCHED).config == partial
    assert not complete_onnxruntime(partial, BATCHED).filled
    batch_input = {"name": "m", "batch_input": [{"kind": "BATCH_ELEMENT_COUNT"}], "output": [Y]}
    assert complete_onnxruntime(batch_input, BATCHED).config == batch_input  # batch_input counts as input


def test_onnxruntime_fills_only_the_missing_side() -> None:
    done = complete_onnxruntime({"name": "m", "max_batch_size": 8, "input": [X]}, BATCHED)
    assert done.config["input"] == [X] and done.config["output"] == [Y]
    assert done.filled == ("dynamic_batching { }", "output 'y' TYPE_FP32 dims [3]")
    sequence = complete_onnxruntime({"name": "m", "max_batch_size": 8, "sequence_batching": {}}, BATCHED)
    assert "dynamic_batching" not in sequence.config  # a scheduler is set already


def test_onnxruntime_without_batching() -> None:
    done = complete_onnxruntime({"name": "m"}, FIXED)
    assert done.config.get("max_batch_size", 0) == 0 and "dynamic_batching" not in done.config
    assert done.config["input"] == [
        {"name": "x", "data_type": "TYPE_FP32", "dims": [2, 4]},
        {"name": "n", "data_type": "TYPE_INT32", "dims": [1]},  # a scalar without batching: no reshape
    ]
    refused = complete_onnxruntime({"name": "m", "max_batch_size": 8}, FIXED)
    assert refused.refusal == (
        "autofill failed for model 'm': model does not support batching while non-zero max_batch_size is specified"
    )


@pytest.mark.parametrize(("default", "mbs", "dims"), [(1, 1, [4]), (0, 0, [-1, 4]), (16, 16, [4])])
def test_onnxruntime_default_max_batch_size(default: int, mbs: int, dims: list[int]) -> None:
    done = complete_onnxruntime({"name": "m"}, BATCHED, default)
    assert done.config["max_batch_size"] == mbs and done.config["input"][0]["dims"] == dims
    assert ("dynamic_batching" in done.config) == (mbs > 1)


def test_onnxruntime_names_no_bf16_type() -> None:
    bf16 = Signature((TensorInfo("x", "BF16", (-1, 4)),), (TensorInfo("y", "FP32", (-1, 3)),))
    assert complete_onnxruntime({}, bf16).config["input"][0]["data_type"] == "TYPE_INVALID"


# --- TensorRT -----------------------------------------------------------------------------------------------


def _plan(max_batch: int) -> Signature:
    return Signature(
        (TensorInfo("x", "FP32", (-1, 4)),),
        (TensorInfo("y", "HALF", (-1, 3)), TensorInfo("z", "INT32", (-1,))),
        {"profile": {"x": [[1, 4], [4, 4], [max_batch, 4]]}},
    )


def test_tensorrt_completes_tensors_one_by_one_and_batching_from_the_profile() -> None:
    config = {"name": "p", "input": [{"name": "x"}], "output": [{"name": "z", "data_type": "TYPE_INT32"}]}
    done = complete_tensorrt(config, _plan(16))
    assert done.config["max_batch_size"] == 16 and done.config["dynamic_batching"] == {}
    assert done.config["input"] == [{"name": "x", "data_type": "TYPE_FP32", "dims": [4]}]
    assert done.config["output"] == [
        {"name": "z", "data_type": "TYPE_INT32", "dims": [1], "reshape": {"shape": []}}
    ]


def test_tensorrt_refusals() -> None:
    assert complete_tensorrt({"name": "p", "max_batch_size": 32}, _plan(16)).refusal == (
        "autofill failed for model 'p': configuration specified max-batch 32 but TensorRT engine only supports "
        "max-batch 16"
    )
    contradicting = {
        "name": "p",
        "input": [{"name": "x", "dims": [4]}],
        "output": [{"name": "y", "dims": [2, 3]}],
    }
    assert "contradicting each other" in complete_tensorrt(contradicting, _plan(16)).refusal
    unknown = {"name": "p", "input": [{"name": "q", "dims": [4]}]}
    assert (
        complete_tensorrt(unknown, _plan(16)).refusal
        == "unexpected inference input 'q', allowed inputs are: x"
    )


def test_tensorrt_dims_without_the_batch_axis_hint_batching_and_with_it_do_not() -> None:
    unbatched = {"name": "p", "input": [{"name": "x", "dims": [-1, 4]}]}
    done = complete_tensorrt(unbatched, _plan(16))
    assert done.config["max_batch_size"] == 0 and "dynamic_batching" not in done.config


# --- PyTorch and Python -------------------------------------------------------------------------------------


def test_pytorch_completes_nothing_and_refuses_a_config_without_tensors() -> None:
    config = {"name": "t", "output": [{"name": "OUTPUT__0"}]}
    assert complete("pytorch", config, Signature((), ())).config == config
    assert (
        pytorch_refusal(config, 2)
        == "unable to load model 't', configuration expects 0 inputs, model provides 2"
    )
    assert (
        pytorch_refusal(config) == "model configuration must contain at least one input, none were specified."
    )
    assert pytorch_refusal({"input": [{"name": "INPUT__0"}]}, 1) == (
        "model configuration must contain at least one output, none were specified."
    )
    sequence = {
        "input": [{"name": "INPUT__0"}],
        "output": [{"name": "OUTPUT__0"}],
        "sequence_batching": {
            "control_input": [
                {"name": "START", "control": [{"int32_false_true": [0, 1]}]},
                {"name": "CORRID", "control": [{"kind": "CONTROL_SEQUENCE_CORRID"}]},
            ],
            "state": [{"input_name": "s_in", "output_name": "s_out"}],
        },
    }
    assert pytorch_refusal(sequence, 4) is None  # the input, START, CORRID and the state


def test_forward_inputs_counts_as_the_pytorch_backend() -> None:
    def module(*kinds: str) -> SimpleNamespace:
        arguments = [SimpleNamespace(type=SimpleNamespace(kind=lambda k=k: k)) for k in kinds]
        return SimpleNamespace(forward=SimpleNamespace(schema=SimpleNamespace(arguments=arguments)))

    assert forward_inputs(module("ClassType", "TensorType", "TensorType")) == 2
    assert forward_inputs(module("ClassType", "DictType")) is None
    assert forward_inputs(module("TensorType")) == 1


def test_python_results_keep_what_triton_keeps() -> None:
    original = {"name": "py", "backend": "python", "max_batch_size": 0, "input": [{"name": "x", "dims": []}]}
    returned = {
        **original,
        "backend": "other",
        "parameters": {"k": {"string_value": "v"}},
        "max_batch_size": 8,
        "input": [X],
        "output": [Y],
        "dynamic_batching": {},
        "model_transaction_policy": {"decoupled": True},
    }
    done = merge_python_result(original, returned)
    assert done.config["backend"] == "python" and "parameters" not in done.config
    assert done.config["input"] == [X] and done.config["output"] == [Y] and done.config["max_batch_size"] == 8
    assert done.filled == (
        "max_batch_size: 8",
        "input 'x' TYPE_FP32 dims [4]",
        "output 'y' TYPE_FP32 dims [3]",
        "dynamic_batching { }",
        "model_transaction_policy { decoupled: true }",
    )
    sequence = {**original, "sequence_batching": {}}
    other = merge_python_result(sequence, {**sequence, "max_batch_size": 4})
    assert other.refusal is None  # the result keeps the config's own scheduler
    assert merge_python_result({"sequence_batching": {}}, {"dynamic_batching": {}}).refusal == (
        "Cannot update scheduling choice from sequence_batching to dynamic_batching when auto-completing."
    )


# --- validate applies it -------------------------------------------------------------------------------------

PARTIAL = 'platform: "onnxruntime_onnx"\nmax_batch_size: 8\n'
PYTHON = """import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    @staticmethod
    def auto_complete_config(auto_complete_model_config):
        auto_complete_model_config.add_input({"name": "x", "data_type": "TYPE_FP32", "dims": [4]})
        auto_complete_model_config.add_output({"name": "y", "data_type": "TYPE_FP32", "dims": [4]})
        auto_complete_model_config.set_max_batch_size(8)
        return auto_complete_model_config

    def initialize(self, args):
        open(args["model_repository"] + "/initialized", "w").close()

    def execute(self, requests):
        raise RuntimeError("never run by validate")
"""


def _onnx_repo(tmp_path: Path, config: str | None, batch_dim: int | str = "batch") -> Path:
    make_linear_onnx(tmp_path / "repo" / "lin" / "1" / "model.onnx", batch_dim=batch_dim)
    if config is not None:
        (tmp_path / "repo" / "lin" / "config.pbtxt").write_text(config)
    return tmp_path / "repo"


def _python_repo(tmp_path: Path, config: str | None, source: str = PYTHON) -> Path:
    model_dir = tmp_path / "repo" / "py"
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "1" / "model.py").write_text(source)
    if config is not None:
        (model_dir / "config.pbtxt").write_text(config)
    return tmp_path / "repo"


def _lines(repo: Path) -> list[str]:
    return [str(p) for p in validate_repository(repo).problems]


@pytest.mark.parametrize("config", [None, "", "# only a comment\n"])
def test_a_missing_or_empty_onnx_config_is_completed(tmp_path: Path, config: str | None) -> None:
    report = validate_repository(_onnx_repo(tmp_path, config))
    assert report.ok and not report.warnings, [str(p) for p in report.problems]
    assert report.infos[-1].message == (
        "auto-complete fills in from 1/model.onnx: backend: onnxruntime, max_batch_size: 4, dynamic_batching { }, "
        "input 'x' TYPE_FP32 dims [4], output 'y' TYPE_FP32 dims [3]"
    )


def test_onnx_refusals_are_triton_s(tmp_path: Path) -> None:
    assert _lines(_onnx_repo(tmp_path / "a", PARTIAL, batch_dim=2)) == [
        "error: lin: 1/model.onnx: autofill failed for model 'lin': model does not support batching while "
        "non-zero max_batch_size is specified, so Triton refuses the model; set max_batch_size: 0, or export "
        "the model with a dynamic first dimension on every input and output"
    ]
    preferred = 'platform: "onnxruntime_onnx"\ndynamic_batching { preferred_batch_size: [ 2 ] }\n'
    assert (
        "error: lin: dynamic_batching preferred_batch_size 2 exceeds max_batch_size 0: Triton checks "
        "config.pbtxt before auto-complete sets max_batch_size to 4; set max_batch_size in config.pbtxt"
    ) in _lines(_onnx_repo(tmp_path / "b", preferred))
    no_type = (
        PARTIAL
        + 'input [ { name: "x" dims: [ 4 ] } ]\noutput [ { name: "y" data_type: TYPE_FP32 dims: [ 3 ] } ]\n'
    )
    assert "error: lin: input 'x' has no data_type; set one such as TYPE_FP32" in _lines(
        _onnx_repo(tmp_path / "c", no_type)
    )


def test_an_onnx_config_without_outputs_gets_the_model_s(tmp_path: Path) -> None:
    config = PARTIAL + 'input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]\n'
    assert _lines(_onnx_repo(tmp_path, config)) == [
        "info: lin: auto-complete fills in from 1/model.onnx: dynamic_batching { }, output 'y' TYPE_FP32 dims [3]"
    ]


def test_a_python_model_s_auto_complete_config_is_run_not_its_model(tmp_path: Path) -> None:
    repo = _python_repo(tmp_path, None)
    assert _lines(repo) == [
        "info: py: no config.pbtxt; Triton auto-completes one from the model (add one to set batching)",
        "info: py: auto-complete fills in from 1/model.py: backend: python, max_batch_size: 8, "
        "input 'x' TYPE_FP32 dims [4], output 'y' TYPE_FP32 dims [4]",
    ]
    assert not (repo / "py" / "initialized").exists()  # initialize was never called


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (
            'backend: "python"\ninput [ { name: "x" data_type: TYPE_FP32 dims: [ 5 ] } ]\n',
            "error: py: 1/model.py: auto_complete_config raises ValueError: model 'py', tensor 'x': the model "
            "expects dims [4] but the model configuration specifies dims [5], so Triton refuses the model; make "
            "config.pbtxt agree with what auto_complete_config sets, or drop those fields from it",
        ),
        (
            'backend: "python"\nmax_batch_size: 16\n',
            "error: py: 1/model.py: auto_complete_config raises ValueError: configuration specified "
            "max_batch_size 16, but in auto-complete-config function for model 'py' specified max_batch_size 8",
        ),
    ],
)
def test_a_python_model_s_conflicts_are_refused_as_triton_does(
    tmp_path: Path, config: str, expected: str
) -> None:
    lines = _lines(_python_repo(tmp_path, config))
    assert len(lines) == 1 and lines[0].startswith(expected), lines


def test_a_python_model_that_cannot_run_here(tmp_path: Path) -> None:
    missing = "import not_a_module_anywhere\n" + PYTHON
    (line,) = _lines(_python_repo(tmp_path / "a", 'backend: "python"\n', missing))
    assert line.startswith("warning: py: 1/model.py cannot be imported here (ModuleNotFoundError: No module")
    returns_none = PYTHON.replace("        return auto_complete_model_config\n", "        return None\n")
    (line,) = _lines(_python_repo(tmp_path / "b", 'backend: "python"\n', returns_none))
    assert "auto_complete_config function in model 'py' must return a valid pb.ModelConfig object." in line
