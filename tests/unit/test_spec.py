"""The YAML spec: defaults merged into models, errors with field paths and fixes, the JSON Schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from generator.core.errors import SpecError
from generator.spec.models import Overlay, json_schema, load_spec, parse_spec

from ..conftest import EXAMPLE_SPEC


def _model(**extra: object) -> dict:
    return {"name": "m", "framework": "onnx", "source": "m.onnx", **extra}


def test_example_spec_loads_with_defaults_merged() -> None:
    spec = load_spec(EXAMPLE_SPEC)
    cnn, linear, tokenizer, classifier, postprocess, *hf_topics, running_max, tiny_lm = spec.models
    assert tokenizer.builtin == "tokenizer" and postprocess.builtin == "postprocess"
    assert classifier.inputs[0].dims == [-1]
    assert [e.name for e in spec.ensembles] == ["text_pipeline", "hf_topics"]
    assert [m.name for m in hf_topics] == ["hf_topics_preprocess", "hf_topics_model", "hf_topics_postprocess"]
    assert running_max.sequence_batching is not None  # the inherited dynamic batcher is not rendered
    assert tiny_lm.builtin == "generate" and tiny_lm.max_batch_size == 0
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
            "models[0].framework: Input should be 'torch', 'tensorflow', 'onnx', 'python' or 'huggingface'",
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


def _tensor(name: str, dims: list[int] | None = None, **extra: object) -> dict:
    return {"name": name, "dtype": "FP32", "dims": dims or [4], **extra}


def _python(**extra: object) -> dict:
    return {
        "name": "p",
        "framework": "python",
        "source": "p.py",
        "inputs": [_tensor("x")],
        "outputs": [_tensor("y")],
        **extra,
    }


def _ensemble(**extra: object) -> dict:
    steps = [{"model": "m", "input_map": {"x": "X"}, "output_map": {"y": "Y"}}]
    return {"name": "e", "steps": steps, **extra}


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (  # the fuzz's crash: the build's shape points ran out of sizes (StopIteration)
            {"models": [_model(inputs=[_tensor("x", [-1]), _tensor("x", [-1, -1])])]},
            "models[0].inputs[1].name: duplicate input name 'x' (also models[0].inputs[0])",
        ),
        (
            {"models": [_model(outputs=[_tensor("y"), _tensor("z"), _tensor("y")])]},
            "models[0].outputs[2].name: duplicate output name 'y' (also models[0].outputs[0])",
        ),
        (
            {"models": [_model(inputs=[_tensor("a", source_name="x"), _tensor("b", source_name="x")])]},
            "models[0].inputs[1].source_name: the model's input 'x' is already served as 'a'",
        ),
        (
            {"models": [_model(inputs=[_tensor("x")], outputs=[_tensor("x")])]},
            "models[0].outputs[0].name: 'x' is also an input (models[0].inputs[0])",
        ),
        (
            {"models": [_model(), _model(name="n"), _model()]},
            "models[2].name: model 'm' version 1 appears twice (also models[0])",
        ),
        (
            {"models": [_model(), _model(name="e")], "ensembles": [_ensemble()]},
            "ensembles[0].name: 'e' is already the name of models[1]",
        ),
        (
            {"models": [_model()], "ensembles": [_ensemble(), _ensemble()]},
            "ensembles[1].name: 'e' is already the name of ensembles[0]",
        ),
        (
            {"models": [_model()], "ensembles": [_ensemble(inputs=[_tensor("X"), _tensor("X")])]},
            "ensembles[0].inputs[1].name: duplicate input name 'X' (also ensembles[0].inputs[0])",
        ),
        (
            {"models": [_model()], "ensembles": [_ensemble(inputs=[_tensor("X")], outputs=[_tensor("X")])]},
            "ensembles[0].outputs[0].name: 'X' is also an input of the ensemble (ensembles[0].inputs[0])",
        ),
        (
            {
                "models": [_model()],
                "ensembles": [
                    _ensemble(
                        steps=[{"model": "m", "input_map": {"x": "X"}, "output_map": {"y": "Y", "z": "Y"}}]
                    )
                ],
            },
            "ensembles[0].steps[0].output_map.z: writes 'Y', which ensembles[0].steps[0].output_map.y writes too",
        ),
        (
            {
                "models": [_model()],
                "ensembles": [
                    _ensemble(
                        inputs=[_tensor("X")],
                        steps=[
                            {"model": "m", "input_map": {"x": "X"}, "output_map": {"y": "Y"}},
                            {"model": "m", "input_map": {"x": "Y"}, "output_map": {"y": "X"}},
                        ],
                    )
                ],
            },
            "ensembles[0].steps[1].output_map.y: writes 'X', an input of the ensemble (ensembles[0].inputs[0])",
        ),
        (
            {"models": [_python(files=["a/labels.txt", "b/labels.txt/"])]},
            "models[0].files[1]: duplicate destination 'labels.txt' (also models[0].files[0] 'a/labels.txt')",
        ),
        (
            {"models": [_python(files=["lib/model.py"])]},
            "models[0].files[0]: 'lib/model.py' would be copied over the model file model.py",
        ),
        (
            {"models": [_python(files=["data/.."])]},
            "models[0].files[0]: 'data/..' names a directory above or at the spec's",
        ),
    ],
)
def test_duplicate_names_are_spec_errors_at_the_repeat(data: dict, expected: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec(data, origin="s.yaml")
    assert [line for line in caught.value.problems if expected in line], caught.value.problems
    assert all(line.startswith("s.yaml: ") and "\n" not in line for line in caught.value.problems)


def test_a_python_model_may_name_an_input_like_an_output() -> None:
    # Triton and the Python backend keep a request's inputs and a response's outputs apart.
    spec = parse_spec({"models": [_python(outputs=[_tensor("x")])]})
    assert spec.models[0].inputs[0].name == spec.models[0].outputs[0].name == "x"


def test_files_land_under_the_name_the_spec_checked(tmp_path: Path) -> None:
    # The duplicate check reads each entry's last listed name; a link must land under its own name too,
    # not its target's (two links to one file would otherwise overwrite each other unseen).
    from generator.build.exporters.base import ExportContext
    from generator.build.exporters.python import PythonExporter

    (tmp_path / "p.py").write_text(
        "class TritonPythonModel:\n    def execute(self, requests):\n        return []\n"
    )
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "real.txt").write_text("r")
    (tmp_path / "alias.txt").symlink_to(tmp_path / "data" / "real.txt")
    spec = parse_spec({"models": [_python(files=["alias.txt", "data/real.txt"])]}, base_dir=tmp_path)
    version = tmp_path / "repo" / "p" / "1"
    PythonExporter(ExportContext(spec_dir=tmp_path)).export(spec.models[0], tmp_path / "p.py", version)
    assert sorted(p.name for p in version.iterdir()) == ["alias.txt", "model.py", "real.txt"]


@pytest.mark.parametrize(
    ("parameters", "expected"),
    [
        (
            {"intra_op_thread_count": "x"},
            "models[0].parameters.intra_op_thread_count: must be a whole number",
        ),
        ({"intra_op_thread_count": float("nan")}, "for the ONNX Runtime backend (got 'nan')"),
        ({"intra_op_thread_count": True}, "for the ONNX Runtime backend (got 'true')"),
        ({"inter_op_thread_count": 2.0}, "(got '2.0')"),
        (
            {"execution_mode": 2},
            "models[0].parameters.execution_mode: must be 0 (sequential) or 1 (parallel)",
        ),
        ({"enable_mem_arena": "yes"}, "models[0].parameters.enable_mem_arena: must be true or false"),
        ({"INTER_OP_THREAD_COUNT": 2**31}, "for the PyTorch backend (got '2147483648')"),
        ({"DISABLE_CUDNN": "nope"}, "models[0].parameters.DISABLE_CUDNN: must be true or false"),
        (
            {"ENABLE_NVFUSER": True},
            "models[0].parameters.ENABLE_NVFUSER: the PyTorch backend no longer reads it",
        ),
    ],
)
def test_backend_parameters_are_typed(parameters: dict, expected: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec({"models": [_model(parameters=parameters)]}, origin="s.yaml")
    assert len(caught.value.problems) == 1 and expected in caught.value.problems[0], caught.value.problems


def test_backend_parameters_are_reported_where_they_are_set() -> None:
    data = {
        "defaults": {"parameters": {"intra_op_thread_count": "x"}},
        "models": [_model(), _model(name="n"), _model(name="o", parameters={"intra_op_thread_count": "y"})],
    }
    with pytest.raises(SpecError) as caught:
        parse_spec(data, origin="s.yaml")
    assert [line.split(": ")[1] for line in caught.value.problems] == [
        "defaults.parameters.intra_op_thread_count",  # once, not once per model inheriting it
        "models[2].parameters.intra_op_thread_count",
    ]


def test_backend_parameters_that_parse_and_a_python_models_own_pass() -> None:
    good = {
        "intra_op_thread_count": 2,
        "execution_mode": "1",
        "enable_mem_arena": True,
        "INFERENCE_MODE": "ON",
    }
    spec = parse_spec(
        {
            "models": [
                _model(parameters={**good, "my_setting": "x"}),
                _python(
                    parameters={"intra_op_thread_count": "its own meaning"}
                ),  # a Python model reads its own
            ]
        }
    )
    assert spec.models[0].parameters["intra_op_thread_count"] == 2


def test_a_tuned_files_backend_parameter_is_reported_against_that_file() -> None:
    overlay = Overlay(
        {"m": {"parameters": {"intra_op_thread_count": "many"}}}, "s.tuned.yaml", "; rerun tune"
    )
    with pytest.raises(SpecError) as caught:
        parse_spec({"models": [_model()]}, origin="s.yaml", overlay=overlay)
    assert caught.value.problems == [
        "s.tuned.yaml: models.m.settings.parameters.intra_op_thread_count: must be a whole number of threads "
        "from 0 (its own choice) to 2147483647 for the ONNX Runtime backend (got 'many'); rerun tune"
    ]


@pytest.mark.parametrize(
    ("edit", "path"),
    [
        ({"repository": "out\0x"}, "repository"),
        ({"models": [_model(source="m\0.onnx")]}, "models[0].source"),
        ({"models": [_python(files=["a\0b"])]}, "models[0].files[0]"),
        (
            {"models": [_model(outputs=[_tensor("y", label_filename="l\0")])]},
            "models[0].outputs[0].label_filename",
        ),
        ({"models": [_model(optimize={"eval_data": "e\0.npz"})]}, "models[0].optimize.eval_data"),
        (
            {"models": [_model(format="tensorrt", tensorrt={"calibration_data": "c\0"})]},
            "models[0].tensorrt.calibration_data",
        ),
    ],
)
def test_a_nul_character_in_a_path_is_a_spec_error(edit: dict, path: str) -> None:
    # os.stat and open raise ValueError ("embedded null byte") on such a path: an internal error before.
    with pytest.raises(SpecError) as caught:
        parse_spec({"models": [_model()], **edit}, origin="s.yaml")
    assert caught.value.problems == [
        f"s.yaml: {path}: a path cannot hold a NUL character (\\0), which no file system takes; remove it "
        f"(got {json.dumps(next(v for v in _strings(edit) if chr(0) in v))})"
    ]


def test_a_nul_character_written_in_a_spec_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text('repository: "out\\0x"\nmodels:\n  - {name: m, framework: onnx, source: m.onnx}\n')
    with pytest.raises(SpecError, match=r"repository: a path cannot hold a NUL character"):
        load_spec(path)


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else []
    return [s for item in items for s in _strings(item)]


@pytest.mark.parametrize("opset", [6, 22, 99])
def test_an_opset_no_exporter_can_serve_is_refused_with_the_range(opset: int) -> None:
    # 7 and 99 passed before; torch then wrote opset 18 without a word.
    with pytest.raises(SpecError) as caught:
        parse_spec({"models": [_model(opset=opset)]}, origin="s.yaml")
    assert caught.value.problems == [
        f"s.yaml: models[0].opset: opset {opset} is outside 7 to 21: ONNX Runtime reads opset 7 and later, and "
        f"the ONNX Runtime of Triton 2.51 (1.19) up to 21; pick one in that range, or leave opset unset (got {opset})"
    ]
    assert parse_spec({"models": [_model(opset=7)]}).models[0].opset == 7
