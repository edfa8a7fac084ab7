"""validate on ensembles and Python-backend models: each mistake found at its place, sound ones pass.

The repository is hand-written (``tests/ensemble_repo.py``): two Python models and an ensemble over
them, with one mistake planted beside them per case. The integration test
``tests/integration/test_validate_ensemble_served.py`` plants the same mistakes in front of the real
Triton.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tritonclient.grpc import model_config_pb2

from generator.core.triton import parse_model_config
from generator.validate.ensembles import EnsembleFinding, check_ensemble, format_path
from generator.validate.run import validate_repository

from ..ensemble_repo import (
    ADD_SUB,
    CASES,
    F4,
    INPUTS,
    OUTPUTS,
    SCALE,
    STEPS,
    ensemble,
    python_model,
    step,
    write_repository,
)


def _problems(repository: Path) -> list[str]:
    return [str(p) for p in validate_repository(repository).problems]


def _config(path: Path) -> model_config_pb2.ModelConfig:
    return parse_model_config((path / "config.pbtxt").read_text())


def _configs(repository: Path) -> dict[str, model_config_pb2.ModelConfig]:
    return {d.name: _config(d) for d in repository.iterdir() if (d / "config.pbtxt").is_file()}


def test_a_sound_repository_of_python_models_and_an_ensemble_has_no_problem(tmp_path: Path) -> None:
    repository = write_repository(tmp_path / "repository")
    report = validate_repository(repository)
    assert report.models == ["add_sub", "pipeline", "scale"]
    assert not report.problems, [str(p) for p in report.problems]


def test_sound_variants_have_no_problem(tmp_path: Path) -> None:
    """Nesting, a non-batching ensemble, reshape, wildcards, versions: all as Triton accepts them."""
    repository = write_repository(tmp_path / "repository")
    pairs = {"OUT_SUM": "OUT_SUM", "OUT_DIFF": "OUT_DIFF"}
    ensemble(repository, "outer", INPUTS, OUTPUTS, [step("pipeline", {"A": "A", "B": "B"}, pairs)])
    ensemble(repository, "unbatched", INPUTS, OUTPUTS, STEPS, max_batch_size=0)
    ensemble(repository, "smaller_batch", INPUTS, OUTPUTS, STEPS, max_batch_size=4)
    ensemble(
        repository,
        "reshaped",
        [("P", "TYPE_FP32", [2, 2])],
        [("R", "TYPE_FP32", [2, 2])],
        [step("scale", {"x": "P"}, {"y": "R"})],
        reshape={"P": [4], "R": [4]},
    )
    ensemble(repository, "wildcard", [("A", "TYPE_FP32", [-1]), INPUTS[1]], OUTPUTS, STEPS)
    ensemble(
        repository,
        "pinned_version",
        INPUTS,
        OUTPUTS,
        [STEPS[0], step("scale", {"x": "S"}, {"y": "OUT_SUM"}, version=1), STEPS[2]],
    )
    full = ("TYPE_FP32", [-1, 4])
    python_model(repository, "scale_any", SCALE, [("x", *full)], [("y", *full)], max_batch_size=0)
    ensemble(
        repository,
        "unbatched_step",
        INPUTS,
        OUTPUTS,
        [STEPS[0], step("scale_any", {"x": "S"}, {"y": "OUT_SUM"}), STEPS[2]],
    )
    assert not _problems(repository)


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_planted_mistake_is_found_at_its_place(tmp_path: Path, case: str) -> None:
    planted = CASES[case]
    repository = write_repository(tmp_path / "repository")
    planted.plant(repository, case)
    report = validate_repository(repository)
    mine = [p for p in report.problems if p.model == case and p.severity == planted.severity]
    assert any(p.message.startswith(planted.path) and planted.fragment in p.message for p in mine), [
        str(p) for p in report.problems
    ]
    # the good models stay clean: the mistake is reported where it is
    assert not [p for p in report.problems if p.model in ("add_sub", "scale", "pipeline")]


def test_every_problem_of_an_ensemble_at_once(tmp_path: Path) -> None:
    repository = write_repository(tmp_path / "repository")
    ensemble(
        repository,
        "many",
        [("A", "TYPE_INT32", [4]), INPUTS[1], ("C", *F4)],
        [*OUTPUTS, ("OUT_X", *F4)],
        [
            step("add_sub", {"a": "A", "b": "B"}, {"sum": "S", "diff": "D"}),
            step("scael", {"x": "S"}, {"y": "OUT_SUM"}),
            step("scale", {"X": "D"}, {"y": "OUT_DIFF"}),
        ],
        extra="instance_group [ { count: 1 kind: KIND_CPU } ]\n",
    )
    messages = [p.message for p in validate_repository(repository).problems if p.model == "many"]
    expected = [
        "instance_group: an ensemble takes no instance_group",
        "input[2]: ensemble input 'C' is read by no step",
        "output[2]: ensemble output 'OUT_X' is written by no step",
        "ensemble_scheduling.step[1].model_name: there is no model 'scael'; did you mean 'scale'?",
        "ensemble_scheduling.step[2].input_map[\"X\"]: 'X' is not an input of model 'scale'; did you mean 'x'?",
        "ensemble_scheduling.step[0].input_map[\"a\"]: tensor 'A' is TYPE_FP32 as model 'add_sub' input 'a'",
    ]
    for text in expected:
        assert any(m.startswith(text) for m in messages), (text, messages)
    # the unmapped input 'x' is the one the wrong key 'X' stands for: one finding, not two
    assert not any("input 'x' of model 'scale' is mapped to no tensor" in m for m in messages), messages


def test_check_ensemble_gives_structured_paths(tmp_path: Path) -> None:
    """The build maps these paths to spec paths, so they are the config's own keys and indexes."""
    repository = write_repository(tmp_path / "repository")
    steps = [STEPS[0], step("scale", {"X": "S"}, {"y": "OUT_SUM"}), STEPS[2]]
    config = _config(ensemble(repository, "bad", INPUTS, OUTPUTS, steps))
    findings = check_ensemble(config, _configs(repository))
    assert findings == [
        EnsembleFinding(
            "error",
            ("ensemble_scheduling", "step", 1, "input_map", "X"),
            "'X' is not an input of model 'scale'; did you mean 'x'?",
        )
    ]
    assert format_path(findings[0].path) == 'ensemble_scheduling.step[1].input_map["X"]'
    assert str(findings[0]).startswith('error: ensemble_scheduling.step[1].input_map["X"]: ')


def test_format_path() -> None:
    assert format_path(("input", 2)) == "input[2]"
    assert format_path(("max_batch_size",)) == "max_batch_size"
    assert format_path(("ensemble_scheduling", "step", 0, "output_map", 'a"b')) == (
        'ensemble_scheduling.step[0].output_map["a\\"b"]'
    )


def test_a_step_with_unknown_io_is_only_checked_for_existence(tmp_path: Path) -> None:
    repository = write_repository(tmp_path / "repository")
    config = _config(repository / "pipeline")
    steps: dict[str, model_config_pb2.ModelConfig | None] = {"add_sub": None, "scale": None}
    assert check_ensemble(config, steps) == []
    del steps["scale"]
    assert [format_path(f.path) for f in check_ensemble(config, steps)] == [
        "ensemble_scheduling.step[1].model_name",
        "ensemble_scheduling.step[2].model_name",
    ]


def test_step_versions_against_the_versions_served(tmp_path: Path) -> None:
    repository = write_repository(tmp_path / "repository")
    steps = [STEPS[0], step("scale", {"x": "S"}, {"y": "OUT_SUM"}, version=3), STEPS[2]]
    config = _config(ensemble(repository, "versioned", INPUTS, OUTPUTS, steps))
    configs = _configs(repository)
    assert check_ensemble(config, configs) == []  # versions unknown: not checked
    assert check_ensemble(config, configs, versions={"scale": {1, 3}, "add_sub": {1}}) == []
    (finding,) = check_ensemble(config, configs, versions={"scale": {1, 2}, "add_sub": {1}})
    assert finding.path == ("ensemble_scheduling", "step", 1, "model_version")
    assert "serves version(s) 1, 2, not 3" in finding.message


def test_a_python_step_without_config_has_no_inputs(tmp_path: Path) -> None:
    """Triton auto-completes a Python model without config.pbtxt and without auto_complete_config to no
    inputs or outputs: it loads, and an ensemble that maps its tensors is refused."""
    repository = write_repository(tmp_path / "repository")
    (repository / "scale" / "config.pbtxt").unlink()
    report = validate_repository(repository)
    assert all(p.severity == "info" for p in report.problems if p.model == "scale"), report.problems
    errors = [p.message for p in report.errors if p.model == "pipeline"]
    assert any("step[1].input_map[\"x\"]: 'x' is not an input of model 'scale'" in e for e in errors), errors


def test_a_python_step_is_judged_with_what_its_auto_complete_config_adds(tmp_path: Path) -> None:
    repository = write_repository(tmp_path / "repository")
    source = SCALE + (
        "\n    @staticmethod\n    def auto_complete_config(config):\n"
        "        config.add_input({'name': 'extra', 'data_type': 'TYPE_FP32', 'dims': [4]})\n"
        "        return config\n"
    )
    (repository / "scale" / "1" / "model.py").write_text(source)
    steps = [*STEPS[:2], step("scale", {"x": "D", "extra": "D"}, {"y": "OUT_DIFF"})]
    ensemble(repository, "pipeline", INPUTS, OUTPUTS, steps)
    assert _problems(repository) == [
        "error: pipeline: ensemble_scheduling.step[1].input_map: input 'extra' of model 'scale' is mapped to "
        "no tensor and is not optional; map it in input_map",
        "info: scale: auto-complete fills in from 1/model.py: input 'extra' TYPE_FP32 dims [4]",
    ]
    steps = [STEPS[0], step("scale", {"x": "S", "extra": "S"}, {"y": "OUT_SUM"}), steps[2]]
    ensemble(repository, "pipeline", INPUTS, OUTPUTS, steps)
    assert [p.severity for p in validate_repository(repository).problems] == ["info"]


# --- Python-backend models ------------------------------------------------------------------------------


def _python_repo(tmp_path: Path, source: str, extra: str = "", files: dict[str, str] | None = None) -> Path:
    repository = tmp_path / "repository"
    model_dir = python_model(repository, "py", source, [("x", *F4)], [("y", *F4)], extra=extra)
    for name, text in (files or {}).items():
        (model_dir / "1" / name).write_text(text)
    return repository


@pytest.mark.parametrize(
    ("source", "files"),
    [
        (SCALE, None),
        (ADD_SUB.replace("def execute", "async def execute"), None),
        ("from impl import TritonPythonModel\n", {"impl.py": SCALE}),
        ("from impl import *\n", {"impl.py": SCALE}),
        (
            "from impl import Base\n\n\nclass TritonPythonModel(Base):\n    pass\n",
            {"impl.py": SCALE.replace("TritonPythonModel", "Base")},
        ),
        (
            "try:\n    import numpy\nexcept ImportError:\n    numpy = None\nelse:\n    "
            + SCALE.replace("\n", "\n    "),
            None,
        ),
        ("def make():\n    return None\n\n\nTritonPythonModel = make()\n", None),
        ("# -*- coding: latin-1 -*-\n# r\xe9sum\xe9\n" + SCALE, None),
    ],
    ids=["plain", "async", "imported", "star-import", "inherited", "nested-block", "assigned", "latin-1"],
)
def test_a_sound_python_model_has_no_problem(
    tmp_path: Path, source: str, files: dict[str, str] | None
) -> None:
    repository = _python_repo(tmp_path, "", files=files)
    (repository / "py" / "1" / "model.py").write_bytes(
        source.encode("latin-1" if "latin-1" in source else "utf-8")
    )
    assert not _problems(repository)


def test_a_python_model_under_another_file_name(tmp_path: Path) -> None:
    repository = _python_repo(tmp_path, SCALE, extra='default_model_filename: "scale.py"\n')
    (repository / "py" / "1" / "model.py").rename(repository / "py" / "1" / "scale.py")
    assert not _problems(repository)
    (repository / "py" / "1" / "scale.py").write_text("class TritonPythonModel(\n")
    assert _problems(repository) == [
        "error: py: 1/scale.py line 1: '(' was never closed, so Triton's Python backend fails to load it "
        "(SyntaxError); fix the code"
    ]


def test_python_model_file_mistakes(tmp_path: Path) -> None:
    repository = _python_repo(tmp_path, SCALE)
    model_py = repository / "py" / "1" / "model.py"
    model_py.write_bytes(b"class TritonPythonModel:\n    def execute(self, r):\n        return [\x00]\n")
    assert any("1/model.py is not Python source" in p for p in _problems(repository))
    model_py.unlink()
    assert any("version 1 has no model.py" in p for p in _problems(repository))
    model_py.mkdir()
    assert any("1/model.py is a directory" in p for p in _problems(repository))


def test_execution_env_path(tmp_path: Path) -> None:
    env = 'parameters { key: "EXECUTION_ENV_PATH" value: { string_value: "$$TRITON_MODEL_DIRECTORY/env" } }\n'
    repository = _python_repo(tmp_path, SCALE, extra=env)
    assert any(
        "EXECUTION_ENV_PATH '$$TRITON_MODEL_DIRECTORY/env' does not exist" in p for p in _problems(repository)
    )
    (repository / "py" / "env" / "bin").mkdir(parents=True)
    assert any("is a directory without bin/activate" in p for p in _problems(repository))
    (repository / "py" / "env" / "bin" / "activate").write_text("# an environment\n")
    assert not _problems(repository)


def test_a_python_based_backend_model_is_left_alone(tmp_path: Path) -> None:
    """``backend: "foo"`` served by ``<backend-dir>/foo/model.py``: the version holds the backend's files."""
    repository = tmp_path / "repository"
    model_dir = python_model(repository, "custom", SCALE, [("x", *F4)], [("y", *F4)])
    config = (model_dir / "config.pbtxt").read_text().replace('backend: "python"', 'backend: "foo"')
    (model_dir / "config.pbtxt").write_text(config)
    (model_dir / "1" / "model.py").write_text("this is the foo backend's own artifact, not Python\n")
    assert not _problems(repository)


def test_a_wrong_key_is_matched_to_the_one_tensor_left_unmapped(tmp_path: Path) -> None:
    """'why' is nothing like 'x' by spelling, but 'x' is the only input the step leaves unmapped."""
    repository = write_repository(tmp_path / "repository")
    steps = [STEPS[0], step("scale", {"why": "S"}, {"y": "OUT_SUM"}), STEPS[2]]
    config = _config(ensemble(repository, "bad", INPUTS, OUTPUTS, steps))
    (finding,) = check_ensemble(config, _configs(repository))
    assert finding.path == ("ensemble_scheduling", "step", 1, "input_map", "why")
    assert finding.message == "'why' is not an input of model 'scale'; did you mean 'x'?"
