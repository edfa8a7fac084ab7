"""The spec's sequence batcher, implicit state and decoupled policy: defaults, shorthands, and each
refusal at its field path with the fix."""

from __future__ import annotations

import pytest

from generator.core.errors import SpecError
from generator.spec.models import parse_spec

STATE = {"input_name": "h_in", "output_name": "h_out", "dtype": "fp32", "dims": [4]}


def _model(**extra: object) -> dict:
    return {"name": "m", "framework": "onnx", "source": "m.onnx", **extra}


def _refused(entry: dict, defaults: dict | None = None) -> str:
    with pytest.raises(SpecError) as caught:
        parse_spec({"defaults": defaults or {}, "models": [entry]})
    return str(caught.value)


def test_defaults_and_shorthands() -> None:
    model = parse_spec(
        {"models": [_model(sequence_batching={"controls": {"START": "S", "corrid": "ID"}, "state": [STATE]})]}
    ).models[0]
    batcher = model.sequence_batching
    assert batcher.strategy == "direct" and batcher.max_sequence_idle_microseconds == 0
    assert [(k, c.name, c.dtype) for k, c in batcher.controls.items()] == [
        ("start", "S", "INT32"),
        ("corrid", "ID", "UINT64"),
    ]
    state = batcher.state[0]
    assert state.dtype == "FP32" and state.initial_state.data_file is None and state.initial_dims == [4]
    on = parse_spec({"models": [_model(sequence_batching=True)]}).models[0]
    assert on.sequence_batching.strategy == "direct" and not on.sequence_batching.state


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (
            {"strategy": "direct", "preferred_batch_size": [2]},
            "models[0].sequence_batching: preferred_batch_size apply to strategy oldest, not direct",
        ),
        (
            {"strategy": "oldest", "minimum_slot_utilization": 0.5},
            "minimum_slot_utilization apply to strategy direct, not oldest",
        ),
        ({"strategy": "newest"}, "models[0].sequence_batching.strategy"),
        ({"minimum_slot_utilization": 1.5}, "models[0].sequence_batching.minimum_slot_utilization"),
        (
            {"controls": {"start": {"name": "S", "dtype": "INT64"}}},
            "models[0].sequence_batching.controls.start.dtype: a START, END or READY control cannot be INT64; "
            "use one of BOOL, INT32, FP32",
        ),
        (
            {"controls": {"corrid": {"name": "ID", "dtype": "FP32"}}},
            "a CORRID control cannot be FP32; use one of UINT64, INT64, UINT32, INT32, STRING",
        ),
        (
            {"controls": {"start": "S", "end": "S"}},
            "start and end both name tensor 'S'; Triton needs one tensor per control",
        ),
        (
            {"controls": {"start": "h_in"}, "state": [STATE]},
            "state[0].input_name 'h_in' is also controls.start; each tensor has one role",
        ),
        (
            {"state": [{**STATE, "use_growable_memory": True}]},
            "models[0].sequence_batching.state[0]: use_growable_memory needs use_same_buffer_for_input_output",
        ),
        (
            {"state": [{**STATE, "dims": [-1, 4]}]},
            "dims [-1, 4] hold -1, so the initial state needs its own size",
        ),
        (
            {"state": [{**STATE, "initial_state": {"dims": [5]}}]},
            "initial_state dims [5] do not match the state's dims [4]",
        ),
        ({"state": [{**STATE, "output_name": "h_in"}]}, "input_name and output_name are both 'h_in'"),
        ({"state": [{**STATE, "dtype": "STRING"}]}, "a state cannot be STRING"),
    ],
)
def test_refusals_name_the_field_and_the_fix(settings: dict, expected: str) -> None:
    assert expected in _refused(_model(sequence_batching=settings))


def test_dynamic_and_sequence_batching_are_alternatives() -> None:
    both = _refused(_model(dynamic_batching={"max_queue_delay_microseconds": 5}, sequence_batching=True))
    assert "models[0].dynamic_batching: dynamic_batching and sequence_batching are alternatives" in both
    assert "defaults.dynamic_batching" in _refused(
        _model(), {"dynamic_batching": True, "sequence_batching": True}
    )
    # One inherited from defaults is dropped for the model's sequence batcher, not refused.
    spec = parse_spec(
        {
            "defaults": {"dynamic_batching": {"max_queue_delay_microseconds": 5}},
            "models": [_model(sequence_batching={})],
        }
    )
    assert spec.models[0].sequence_batching


def test_decoupled_and_state_need_the_right_kind_of_model() -> None:
    assert "decoupled applies to Python models" in _refused(_model(decoupled=True))
    python = {
        "name": "p",
        "framework": "python",
        "source": "p.py",
        "inputs": [{"name": "x", "dtype": "FP32", "dims": [1]}],
        "outputs": [{"name": "y", "dtype": "FP32", "dims": [1]}],
    }
    assert parse_spec({"models": [{**python, "decoupled": True}]}).models[0].decoupled
    refusal = _refused({**python, "sequence_batching": {"state": [STATE]}})
    assert "Python backend cannot write implicit state" in refusal


def test_a_fed_or_kept_tensor_is_no_input_or_output() -> None:
    tensors = {
        "inputs": [{"name": "h_in", "dtype": "FP32", "dims": [4]}],
        "outputs": [{"name": "y", "dtype": "FP32", "dims": [1]}],
    }
    refusal = _refused(_model(sequence_batching={"state": [STATE]}, **tensors))
    assert "input 'h_in' is also sequence_batching.state[0].input_name: Triton feeds" in refusal
    tensors["inputs"][0]["name"] = "x"
    tensors["outputs"][0]["name"] = "h_out"
    assert "output 'h_out' is also sequence_batching.state[0].output_name" in _refused(
        _model(sequence_batching={"state": [STATE]}, **tensors)
    )


@pytest.mark.parametrize("data_file", [".", "/", "..", "d/.."])
def test_an_initial_state_file_that_names_a_directory_is_refused(data_file: str) -> None:
    # Found by the spec fuzz: it loaded, and the config named an initial_state file "" or "..".
    refusal = _refused(
        _model(sequence_batching={"state": [{**STATE, "initial_state": {"data_file": data_file}}]})
    )
    assert "models[0].sequence_batching.state[0].initial_state.data_file: " in refusal
    assert "names a directory, not a file" in refusal and len(refusal.splitlines()) == 1


@pytest.mark.parametrize(
    ("first", "second"), [("s.npy", "d/s.npy"), ("s.npy", "s.bin"), ("a/s.bin", "b/s.bin")]
)
def test_two_states_whose_initial_files_share_a_name_are_refused(first: str, second: str) -> None:
    # Found by the spec fuzz: both were copied to initial_state/s.bin, the second over the first.
    states = [
        {**STATE, "initial_state": {"data_file": first}},
        {**STATE, "input_name": "c_in", "output_name": "c_out", "initial_state": {"data_file": second}},
    ]
    refusal = _refused(_model(sequence_batching={"state": states}))
    assert (
        f"models[0].sequence_batching: state[1].initial_state.data_file '{second}' and state[0]'s '{first}' "
        "both become 'initial_state/s.bin' in the model directory; give the files different names"
    ) in refusal
    spec = parse_spec({"models": [_model(sequence_batching={"state": states[:1]})]})
    assert spec.models[0].sequence_batching.state[0].initial_state.file_name == "s.bin"


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"controls": {"start": "a\nb", "end": "a\nb"}}, 'start and end both name tensor "a\\nb"'),
        ({"state": [{**STATE, "input_name": "a\nb", "output_name": "a\nb"}]}, 'both "a\\nb"'),
        (
            {"controls": {"start": "a\nb"}, "state": [{**STATE, "input_name": "a\nb"}]},
            'input_name "a\\nb" is',
        ),
        ({"state": [{**STATE, "dtype": "a\nb"}]}, 'state[0].dtype: "a\\nb" is not a Triton data type'),
    ],
)
def test_a_name_with_a_line_break_is_shown_escaped_on_one_line(settings: dict, expected: str) -> None:
    # Found by the spec fuzz: the name was printed as written, splitting the error over two lines.
    refusal = _refused(_model(sequence_batching=settings))
    assert expected in refusal and len(refusal.splitlines()) == 1, refusal
    inputs = [{"name": "a\nb", "dtype": "FP32", "dims": [1]}]
    outputs = [{"name": "y", "dtype": "FP32", "dims": [1]}]
    fed = _refused(_model(sequence_batching={"controls": {"start": "a\nb"}}, inputs=inputs, outputs=outputs))
    assert 'input "a\\nb" is also sequence_batching.controls.start' in fed and len(fed.splitlines()) == 1
