"""Pipelines in the spec (Python models, built-in steps, ensembles) and ensemble configs derived from steps."""

from __future__ import annotations

import pytest

from generator.build.pipelines import ensemble_config, ensemble_order, spec_path
from generator.core.errors import SpecError
from generator.core.triton import parse_model_config
from generator.spec.models import parse_spec


def _python(**extra: object) -> dict:
    return {
        "name": "p",
        "framework": "python",
        "source": "p.py",
        "inputs": [{"name": "TEXT", "dtype": "BYTES", "dims": [1]}],
        "outputs": [{"name": "LEN", "dtype": "INT64", "dims": [1]}],
        **extra,
    }


def _onnx(name: str = "m") -> dict:
    return {"name": name, "framework": "onnx", "source": "m.onnx"}


def _step(model: str, inputs: dict, outputs: dict, **extra: object) -> dict:
    return {"model": model, "input_map": inputs, "output_map": outputs, **extra}


def _problems(data: dict) -> str:
    with pytest.raises(SpecError) as caught:
        parse_spec(data)
    return "\n".join(caught.value.problems)


def test_python_model_text_tensors_are_string() -> None:
    model = parse_spec({"models": [_python()]}).models[0]
    assert model.target == "python" and model.builtin is None
    assert model.inputs[0].dtype == "STRING"  # BYTES is the wire name of TYPE_STRING


def test_builtin_step_source() -> None:
    model = parse_spec(
        {"models": [{"name": "t", "framework": "python", "source": "builtin:tokenizer", "step": {"x": 1}}]}
    ).models[0]
    assert model.builtin == "tokenizer" and model.step == {"x": 1}


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        (_python(inputs=None), "needs its inputs and outputs declared"),
        (_python(source="p.txt"), "must be a .py file defining TritonPythonModel"),
        (_python(step={"a": 1}), "step settings need a built-in source"),
        (_python(format="tensorrt"), "a Python model is served as it is"),
        ({**_onnx(), "step": {"a": 1}}, "step and files apply to framework python only"),
        (
            {"name": "t", "framework": "python", "source": "builtin:nope"},
            "'builtin:nope' is no built-in step; use builtin:tokenizer or builtin:image",
        ),
        (
            {
                "name": "t",
                "framework": "python",
                "source": "builtin:tokenizer",
                "inputs": [{"name": "a", "dtype": "FP32", "dims": [1]}],
            },
            "a built-in step declares its own inputs",
        ),
        (
            _python(inputs=[{"name": "a", "dtype": "FP32", "dims": [1], "label_filename": "l.txt"}]),
            "only outputs can",
        ),
    ],
)
def test_python_model_mistakes(model: dict, expected: str) -> None:
    assert expected in _problems({"models": [model]})


@pytest.mark.parametrize(
    ("ensembles", "expected"),
    [
        (
            [{"name": "a", "steps": [_step("b", {"x": "X"}, {"y": "Y"})]}],
            "ensembles[0].name: 'a' is already the name of models[0]",
        ),
        (
            [{"name": "e", "steps": [_step("a", {"x": "X"}, {"y": "Y"}, version=0)]}],
            "ensembles[0].steps[0].version: version 0 does not exist",
        ),
        (
            [
                {
                    "name": "e",
                    "steps": [_step("a", {"x": "X"}, {"y": "Y"}), _step("b", {"x": "Y"}, {"y": "Y"})],
                }
            ],
            "ensembles[0].steps[1].output_map.y: writes 'Y', which ensembles[0].steps[0].output_map.y writes too",
        ),
        (
            [{"name": "f", "steps": [_step("f", {"x": "X"}, {"y": "Y"})]}],
            "ensembles[0].steps[0].model: runs the ensemble itself",
        ),
        ([{"name": "e", "steps": []}], "ensembles[0].steps: List should have at least 1 item"),
        ([{"name": "e", "steps": [_step("a", {}, {"y": "Y"})]}], "ensembles[0].steps[0].input_map"),
    ],
)
def test_ensemble_mistakes_found_in_the_spec(ensembles: list, expected: str) -> None:
    assert expected in _problems({"models": [_onnx("a"), _onnx("b")], "ensembles": ensembles})


def test_ensembles_ordered_nested_first_and_cycles_named() -> None:
    spec = parse_spec(
        {
            "models": [_onnx("m")],
            "ensembles": [
                {"name": "outer", "steps": [_step("inner", {"X": "X"}, {"Y": "Y"})]},
                {"name": "inner", "steps": [_step("m", {"x": "X"}, {"y": "Y"})]},
            ],
        }
    )
    assert [e.name for _, e in ensemble_order(spec)] == ["inner", "outer"]
    cyclic = parse_spec(
        {
            "models": [_onnx("m")],
            "ensembles": [
                {"name": "a", "steps": [_step("b", {"X": "X"}, {"Y": "Y"})]},
                {"name": "b", "steps": [_step("a", {"X": "X"}, {"Y": "Y"})]},
            ],
        }
    )
    with pytest.raises(SpecError, match=r"the ensembles a -> b -> a run one another in a cycle"):
        ensemble_order(cyclic)


_TOKENIZER = """
name: "tok" backend: "python" max_batch_size: 16
input [ { name: "text" data_type: TYPE_STRING dims: [ 1 ] } ]
output [ { name: "input_ids" data_type: TYPE_INT64 dims: [ 32 ] },
         { name: "attention_mask" data_type: TYPE_INT64 dims: [ 32 ] } ]
"""
_MODEL = """
name: "clf" platform: "onnxruntime_onnx" max_batch_size: 8
input [ { name: "input_ids" data_type: TYPE_INT64 dims: [ -1 ] },
        { name: "attention_mask" data_type: TYPE_INT64 dims: [ -1 ] } ]
output [ { name: "logits" data_type: TYPE_FP32 dims: [ 3 ] } ]
"""


def _text_spec(**ensemble: object) -> dict:
    return {
        "models": [_onnx("tok"), _onnx("clf")],
        "ensembles": [
            {
                "name": "pipe",
                "steps": [
                    _step("tok", {"text": "TEXT"}, {"input_ids": "ids", "attention_mask": "mask"}),
                    _step("clf", {"input_ids": "ids", "attention_mask": "mask"}, {"logits": "LOGITS"}),
                ],
                **ensemble,
            }
        ],
    }


def test_ensemble_config_derives_io_and_batch_size_from_the_steps() -> None:
    ensemble = parse_spec(_text_spec()).ensembles[0]
    steps = {"tok": parse_model_config(_TOKENIZER), "clf": parse_model_config(_MODEL)}
    config = ensemble_config(ensemble, steps)
    assert config["max_batch_size"] == 8  # the smallest of the steps'
    assert config["input"] == [{"name": "TEXT", "data_type": "TYPE_STRING", "dims": [1]}]
    assert config["output"] == [{"name": "LOGITS", "data_type": "TYPE_FP32", "dims": [3]}]
    first = config["ensemble_scheduling"]["step"][0]
    assert first == {
        "model_name": "tok",
        "model_version": -1,
        "input_map": {"text": "TEXT"},
        "output_map": {"input_ids": "ids", "attention_mask": "mask"},
    }
    # An ensemble that does not batch passes whole batches: the steps' batch axis becomes a plain axis.
    unbatched = ensemble_config(parse_spec(_text_spec(max_batch_size=0)).ensembles[0], steps)
    assert unbatched["input"][0]["dims"] == [-1, 1]


def test_declared_io_wins_and_unknown_steps_leave_tensors_untyped() -> None:
    declared = parse_spec(
        _text_spec(outputs=[{"name": "LOGITS", "dtype": "FP32", "dims": [3]}], max_batch_size=4)
    ).ensembles[0]
    config = ensemble_config(declared, {"tok": parse_model_config(_TOKENIZER), "clf": None})
    assert config["max_batch_size"] == 4
    assert config["output"] == [{"name": "LOGITS", "data_type": "TYPE_FP32", "dims": [3]}]
    assert config["input"][0]["name"] == "TEXT"


def test_config_paths_become_spec_paths() -> None:
    ensemble = parse_spec(_text_spec()).ensembles[0]
    step_key = ("ensemble_scheduling", "step", 1, "input_map", "ids")
    assert spec_path(0, ensemble, step_key) == "ensembles[0].steps[1].input_map.ids"
    assert (
        spec_path(2, ensemble, ("ensemble_scheduling", "step", 0, "model_name"))
        == "ensembles[2].steps[0].model"
    )
    assert spec_path(0, ensemble, ("output", 0, "dims")) == "ensembles[0].steps"  # derived from the steps
    declared = parse_spec(_text_spec(outputs=[{"name": "L", "dtype": "FP32", "dims": [3]}])).ensembles[0]
    assert spec_path(0, declared, ("output", 0, "dims")) == "ensembles[0].outputs[0]"
    assert spec_path(0, ensemble, ("max_batch_size",)) == "ensembles[0].max_batch_size"
