"""Stateful models in the build: the exported graph's I/O, initial states, whole-sequence parity (an
ONNX accumulator carried through N steps against torch), and validate's checks of controls and states
against the model file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from generator.build.config import DeviceProfile, build_config
from generator.build.exporters.base import ExportResult
from generator.build.sequence import graph_model, initial_state_values, sequence_parity, write_initial_states
from generator.core.errors import SpecError, VerificationError
from generator.core.signature import read_onnx_signature
from generator.spec.models import Verify, parse_spec
from generator.validate.artifacts import check_against_model
from generator.validate.run import validate_model_dir

DECAY = 0.5


def make_accumulator_onnx(path: Path, batching: bool = True, state_output: str = "h_out") -> None:
    """Write ``y = x + DECAY * h_in``, ``h_out = y`` as ONNX (x, h_in, y, h_out FP32 [batch, 2])."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    shape: list[int | str] = ["batch", 2] if batching else [2]
    graph = helper.make_graph(
        [
            helper.make_node("Mul", ["h_in", "decay"], ["kept"]),
            helper.make_node("Add", ["x", "kept"], ["y"]),
            helper.make_node("Identity", ["y"], [state_output]),
        ],
        "accumulator",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, shape),
            helper.make_tensor_value_info("h_in", TensorProto.FLOAT, shape),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, shape),
            helper.make_tensor_value_info(state_output, TensorProto.FLOAT, shape),
        ],
        initializer=[numpy_helper.from_array(np.array(DECAY, dtype=np.float32), "decay")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


STATE = {"input_name": "h_in", "output_name": "h_out", "dtype": "FP32", "dims": [2]}


def _model(tmp_path: Path, **batcher: object):
    entry = {
        "name": "acc",
        "framework": "onnx",
        "source": "acc.onnx",
        "max_batch_size": 4,
        "sequence_batching": {"state": [STATE], **batcher},
    }
    return parse_spec({"models": [entry]}, base_dir=tmp_path).models[0]


def _torch_reference(decay: float):
    """The accumulator written in torch: the source framework parity compares with."""
    import torch

    from generator.build.runners import torch_runner

    class Accumulator(torch.nn.Module):
        def forward(self, x: torch.Tensor, h_in: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            y = x + decay * h_in
            return y, y

    return torch_runner("the torch accumulator", Accumulator(), ["x", "h_in"], ["y", "h_out"])


def test_graph_model_adds_controls_then_states() -> None:
    entry = {
        "name": "m",
        "framework": "torch",
        "source": "m.py:build",
        "inputs": [{"name": "x", "dtype": "FP32", "dims": [3]}],
        "outputs": [{"name": "y", "dtype": "FP32", "dims": [3]}],
        "sequence_batching": {"controls": {"corrid": "ID", "start": "S"}, "state": [STATE]},
    }
    model = graph_model(parse_spec({"models": [entry]}).models[0])
    assert [(t.name, t.dtype, t.dims) for t in model.inputs] == [
        ("x", "FP32", [3]),
        ("S", "INT32", [1]),
        ("ID", "UINT64", [1]),
        ("h_in", "FP32", [2]),
    ]
    assert [t.name for t in model.outputs] == ["y", "h_out"]


def test_initial_states_from_zeros_npy_and_raw_files(tmp_path: Path) -> None:
    np.save(tmp_path / "start.npy", np.array([1.5, -2.0], dtype=np.float32))
    (tmp_path / "start.raw").write_bytes(np.array([3.0, 4.0], dtype="<f4").tobytes())
    zeros = _model(tmp_path)
    assert initial_state_values(zeros, zeros.sequence_batching.state[0], tmp_path).tolist() == [0.0, 0.0]
    from_npy = _model(tmp_path, state=[{**STATE, "initial_state": {"data_file": "start.npy"}}])
    state = from_npy.sequence_batching.state[0]
    assert initial_state_values(from_npy, state, tmp_path).tolist() == [1.5, -2.0]
    written = write_initial_states(from_npy, tmp_path / "repo" / "acc", tmp_path)
    assert [p.relative_to(tmp_path / "repo" / "acc").as_posix() for p in written] == [
        "initial_state/start.bin"
    ]
    assert np.frombuffer(written[0].read_bytes(), dtype="<f4").tolist() == [1.5, -2.0]
    raw = _model(tmp_path, state=[{**STATE, "initial_state": {"data_file": "start.raw"}}])
    assert initial_state_values(raw, raw.sequence_batching.state[0], tmp_path).tolist() == [3.0, 4.0]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (np.zeros(3, dtype=np.float32), r"holds float32 \[3\], but the state is FP32 \[2\]"),
        (np.zeros(2, dtype=np.float64), r"holds float64 \[2\], but the state is FP32 \[2\]"),
        (b"\x00" * 12, r"holds 3 FP32 values, but the state needs 2"),
        (None, "cannot be read"),
    ],
)
def test_an_initial_state_file_that_does_not_fit_is_refused(
    tmp_path: Path, content: object, expected: str
) -> None:
    name = "start.raw" if isinstance(content, bytes) else "start.npy"
    if isinstance(content, bytes):
        (tmp_path / name).write_bytes(content)
    elif content is not None:
        np.save(tmp_path / name, content)
    model = _model(tmp_path, state=[{**STATE, "initial_state": {"data_file": name}}])
    with pytest.raises(
        SpecError, match=f"model 'acc': sequence_batching.state 'h_in' initial_state.data_file .*{expected}"
    ):
        initial_state_values(model, model.sequence_batching.state[0], tmp_path)


def _result(path: Path, reference) -> ExportResult:
    return ExportResult(
        files=[path], platform="onnxruntime_onnx", signature=read_onnx_signature(path), reference=reference
    )


def test_sequence_parity_carries_the_state_through_every_step(tmp_path: Path) -> None:
    make_accumulator_onnx(tmp_path / "acc.onnx")
    np.save(tmp_path / "start.npy", np.array([10.0, -10.0], dtype=np.float32))
    model = _model(tmp_path, state=[{**STATE, "initial_state": {"data_file": "start.npy"}}])
    settings = Verify(sequence_steps=5)
    report = sequence_parity(
        model, _result(tmp_path / "acc.onnx", _torch_reference(DECAY)), 4, settings, tmp_path
    )
    data = report.to_dict()
    assert data["steps"] == 5 and data["batch_sizes"] == [1, 4] and data["compared"]
    # Per output: 5 steps of batch 1 and 5 of batch 4, two values a row.
    assert {name: entry["total"] for name, entry in data["outputs"].items()} == {"y": 50, "h_out": 50}
    assert data["max_abs_error"] < 1e-5
    without_source = sequence_parity(model, _result(tmp_path / "acc.onnx", None), 4, settings, tmp_path)
    assert not without_source.compared and not without_source.outputs


def test_a_state_that_drifts_over_the_sequence_is_caught(tmp_path: Path) -> None:
    """A source that keeps more of its state: step one (from zeros) agrees, later steps do not."""
    make_accumulator_onnx(tmp_path / "acc.onnx")
    model = _model(tmp_path)
    with pytest.raises(VerificationError) as caught:
        sequence_parity(model, _result(tmp_path / "acc.onnx", _torch_reference(0.9)), 4, Verify(), tmp_path)
    lines = caught.value.problems
    assert lines[0].startswith("model 'acc' output 'y' at step 2 of 8 (batch 1): differs from the source's")
    assert not any("at step 1 " in line for line in lines)


def test_a_missing_state_output_is_named(tmp_path: Path) -> None:
    make_accumulator_onnx(tmp_path / "acc.onnx", state_output="next_state")
    with pytest.raises(VerificationError, match="the exported model has no state output h_out"):
        sequence_parity(_model(tmp_path), _result(tmp_path / "acc.onnx", None), 4, Verify(), tmp_path)


def _config(tmp_path: Path, **batcher: object):
    from generator.build.config import intended_proto

    model = _model(tmp_path, **batcher)
    signature = read_onnx_signature(tmp_path / "acc.onnx")
    return intended_proto(build_config(model, signature, "onnxruntime_onnx", DeviceProfile()))


def test_validate_counts_the_state_and_checks_it_against_the_model(tmp_path: Path) -> None:
    make_accumulator_onnx(tmp_path / "acc.onnx")
    signature = read_onnx_signature(tmp_path / "acc.onnx")
    config = _config(tmp_path)
    assert [t.name for t in config.input] == ["x"] and [t.name for t in config.output] == ["y"]
    assert check_against_model(config, signature, "model.onnx") == []
    wrong = _config(tmp_path, state=[{**STATE, "dtype": "FP16", "dims": [3]}])
    problems = check_against_model(wrong, signature, "model.onnx")
    assert (
        "sequence_batching state 'h_in' input_name 'h_in' is TYPE_FP16 in config.pbtxt but FP32 in model.onnx; "
        "use data_type: TYPE_FP32" in problems
    )
    assert any(
        p.startswith("sequence_batching state 'h_in' output_name 'h_out' dims [3] differ") for p in problems
    )
    renamed = _config(tmp_path, state=[{**STATE, "output_name": "h_next"}])
    assert any(
        "output_name 'h_next': model.onnx has no output of that name" in p
        for p in check_against_model(renamed, signature, "model.onnx")
    )
    control = _config(tmp_path, controls={"start": "x"}, state=[])  # x is FP32 [2], not INT32 [1]
    problems = check_against_model(control, signature, "model.onnx")
    assert any("control_input 'x' is TYPE_INT32 but model.onnx takes FP32" in p for p in problems)
    assert any("control_input 'x' dims [1] differ from model.onnx's [2]" in p for p in problems)
    hand_written = text_format.Parse(
        'name: "acc" max_batch_size: 4 input { name: "x" data_type: TYPE_FP32 dims: [2] } '
        'output { name: "y" data_type: TYPE_FP32 dims: [2] } sequence_batching { }',
        model_config_pb2.ModelConfig(),
    )
    assert check_against_model(hand_written, signature, "model.onnx") == [
        "config declares 1 inputs but model.onnx has 2 (missing: h_in); declare every model input"
    ]


def test_a_built_stateful_model_directory_validates(tmp_path: Path) -> None:
    from generator.build.config import render
    from generator.core.templating import environment

    make_accumulator_onnx(tmp_path / "acc.onnx")
    np.save(tmp_path / "start.npy", np.array([1.0, 2.0], dtype=np.float32))
    model = _model(tmp_path, state=[{**STATE, "initial_state": {"data_file": "start.npy"}}])
    signature = read_onnx_signature(tmp_path / "acc.onnx")
    model_dir = tmp_path / "repo" / "acc"
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "1" / "model.onnx").write_bytes((tmp_path / "acc.onnx").read_bytes())
    text = render(build_config(model, signature, "onnxruntime_onnx", DeviceProfile()), environment())
    (model_dir / "config.pbtxt").write_text(text)
    assert any("initial_state" in p.message for p in validate_model_dir(model_dir) if p.severity == "error")
    write_initial_states(model, model_dir, tmp_path)
    assert [p for p in validate_model_dir(model_dir) if p.severity != "info"] == []


def test_an_initial_state_file_is_in_the_cache_key(tmp_path: Path) -> None:
    """Editing only the initial state changes what the whole-sequence check starts from: the model is
    exported and checked again, not reused."""
    from generator.build.exporters.base import ExportContext
    from generator.build.run import cache_key
    from generator.spec.models import ModelSpec

    (tmp_path / "m.onnx").write_bytes(b"model")
    np.save(tmp_path / "start.npy", np.array([1.0], dtype=np.float32))
    model = ModelSpec.model_validate(
        {
            "name": "acc",
            "framework": "onnx",
            "source": "m.onnx",
            "sequence_batching": {
                "state": [
                    {
                        "input_name": "s_in",
                        "output_name": "s_out",
                        "dtype": "FP32",
                        "dims": [1],
                        "initial_state": {"data_file": "start.npy"},
                    }
                ]
            },
        }
    )
    context = ExportContext(spec_dir=tmp_path)
    before = cache_key(model, tmp_path / "m.onnx", {}, context)
    assert cache_key(model, tmp_path / "m.onnx", {}, context) == before
    np.save(tmp_path / "start.npy", np.array([100.0], dtype=np.float32))
    assert cache_key(model, tmp_path / "m.onnx", {}, context) != before
