"""The YAML spec: defaults merged into models, errors with field paths and fixes, the JSON Schema."""

from __future__ import annotations

from pathlib import Path

import pytest

from generator.errors import SpecError
from generator.spec import json_schema, load_spec, parse_spec

from ..conftest import EXAMPLE_SPEC


def _model(**extra: object) -> dict:
    return {"name": "m", "framework": "onnx", "source": "m.onnx", **extra}


def test_example_spec_loads_with_defaults_merged() -> None:
    spec = load_spec(EXAMPLE_SPEC)
    cnn, linear, tokenizer, classifier, postprocess = spec.models
    assert tokenizer.builtin == "tokenizer" and postprocess.builtin == "postprocess"
    assert classifier.inputs[0].dims == [-1] and [e.name for e in spec.ensembles] == ["text_pipeline"]
    assert cnn.max_batch_size == 64 and linear.max_batch_size == 64
    assert cnn.dynamic_batching.preferred_batch_size == [16, 32]
    assert cnn.instance_group.count == 2 and linear.instance_group.count == 1
    assert cnn.inputs[0].dtype == "FP32" and cnn.inputs[0].dims == [1, 8, 8]
    assert spec.resolve_source(cnn.source) == EXAMPLE_SPEC.parent / "digits.py"


def test_model_values_override_and_mappings_merge() -> None:
    spec = parse_spec(
        {
            "defaults": {
                "dynamic_batching": {"preferred_batch_size": [4, 8], "max_queue_delay_microseconds": 100}
            },
            "models": [
                _model(dynamic_batching={"max_queue_delay_microseconds": 7}),
                _model(name="n", dynamic_batching=False),
            ],
        }
    )
    assert spec.models[0].dynamic_batching.preferred_batch_size == [4, 8]
    assert spec.models[0].dynamic_batching.max_queue_delay_microseconds == 7
    assert spec.models[1].dynamic_batching is False


def test_dtype_accepts_triton_spellings() -> None:
    spec = parse_spec({"models": [_model(inputs=[{"name": "x", "dtype": "TYPE_INT64", "dims": [-1]}])]})
    assert spec.models[0].inputs[0].dtype == "INT64"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            {"models": [_model(max_batchsize=4)]},
            "models[0].max_batchsize: unknown field; did you mean 'max_batch_size'?",
        ),
        (
            {"models": [_model(inputs=[{"name": "x", "dtype": "FP33", "dims": [1]}])]},
            "models[0].inputs[0].dtype: 'FP33' is not a Triton data type",
        ),
        ({"models": [{"name": "m", "framework": "onnx"}]}, "models[0].source: required field is missing"),
        (
            {"models": [_model(framework="caffe")]},
            "models[0].framework: Input should be 'torch', 'tensorflow', 'onnx' or 'python'",
        ),
        (
            {"models": [_model(inputs=[{"name": "x", "dtype": "FP32", "dims": [0]}])]},
            "models[0].inputs[0].dims: dimension 0 is invalid",
        ),
        (
            {"defaults": {"warmup": 3}, "models": [_model()]},
            "defaults.warmup: must be a mapping of settings, or true/false",
        ),
        ({"models": [_model(), _model()]}, "model 'm' version 1 appears twice"),
        ({"models": []}, "models: List should have at least 1 item"),
        ([1, 2], "(top level): must be a mapping"),
    ],
)
def test_errors_name_the_field_and_the_fix(data: object, expected: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec(data, origin="s.yaml")
    assert any(expected in line for line in caught.value.problems), caught.value.problems
    assert all(line.startswith("s.yaml: ") for line in caught.value.problems)


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec({"models": [_model(max_batch_size=-1, opset=2), _model(name="bad name!")]})
    paths = {line.split(":")[1].strip() for line in caught.value.problems}
    assert paths == {"models[0].max_batch_size", "models[0].opset", "models[1].name"}


def test_yaml_syntax_error_gives_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("models:\n  - name: a\n    framework: [torch\n")
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    assert str(caught.value).startswith(f"{path}:4:")
    assert "YAML does not parse" in str(caught.value)


def test_missing_file_and_missing_source(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="not found"):
        load_spec(tmp_path / "nope.yaml")
    spec = parse_spec({"models": [_model(source="missing.onnx")]}, base_dir=tmp_path)
    with pytest.raises(SpecError, match="no file at"):
        spec.resolve_source("missing.onnx")


def test_json_schema_describes_the_spec() -> None:
    schema = json_schema()
    assert set(schema["properties"]) == {"repository", "defaults", "models", "ensembles"}
    assert {"TokenizerStepSettings", "ImageStepSettings", "PostprocessStepSettings"} <= set(schema["$defs"])
    assert "ModelSpec" in schema["$defs"] and "base_dir" not in schema["properties"]
