"""The validator catches what Triton would refuse at load time, every problem at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from generator.errors import ValidationError
from generator.validate import validate_repository

from ..conftest import make_linear_onnx

GOOD = """
name: "lin"
platform: "onnxruntime_onnx"
max_batch_size: 16
input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ 3 ] } ]
dynamic_batching { preferred_batch_size: [ 4, 8 ] }
instance_group [ { count: 1 kind: KIND_CPU } ]
"""


def _repo(
    tmp_path: Path, config: str = GOOD, batch_dim: int | str = "batch", version: str | None = "1"
) -> Path:
    repo = tmp_path / "repo"
    model_dir = repo / "lin"
    model_dir.mkdir(parents=True)
    if version is not None:
        make_linear_onnx(model_dir / version / "model.onnx", batch_dim=batch_dim)
    (model_dir / "config.pbtxt").write_text(config)
    return repo


def _errors(repo: Path) -> list[str]:
    return [p.message for p in validate_repository(repo).errors]


def test_a_good_repository_passes(tmp_path: Path) -> None:
    report = validate_repository(_repo(tmp_path))
    assert report.ok and report.models == ["lin"] and not report.problems


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("dims: [ 4 ]", "dims: [ -1, 4 ]", "input 'x' dims [-1, 4] include the batch axis"),
        ('name: "x"', 'name: "X"', "input 'X' is not an input of 1/model.onnx; did you mean 'x'?"),
        (
            "data_type: TYPE_FP32 dims: [ 4 ]",
            "data_type: TYPE_FP16 dims: [ 4 ]",
            "input 'x' is TYPE_FP16 in config.pbtxt but FP32",
        ),
        ("[ 4, 8 ]", "[ 4, 32 ]", "preferred_batch_size 32 exceeds max_batch_size 16"),
        ('platform: "onnxruntime_onnx"', 'platform: "onnxruntime_onnx" backend: "tensorrt"', "disagree"),
        ("dims: [ 3 ]", "dims: [ 5 ]", "output 'y' dims [5] differ from 1/model.onnx's [3]"),
        ("dims: [ 4 ]", "dims: [ -1 ]", "input 'x' dims [-1] differ"),
        ('name: "lin"', 'name: "other"', "config name 'other' differs from its directory 'lin'"),
        (
            "max_batch_size: 16",
            'max_batch_size: 16\ndefault_model_filename: "m.onnx"',
            "version 1 has no m.onnx",
        ),
        ("max_batch_size: 16", "max_batch_size: sixteen", "does not parse"),
        (
            "instance_group [ { count: 1 kind: KIND_CPU } ]",
            "instance_group [ { count: 1 kind: KIND_CPU gpus: [0] } ]",
            "lists gpus but its kind is KIND_CPU",
        ),
    ],
)
def test_each_mistake_is_caught(tmp_path: Path, old: str, new: str, expected: str) -> None:
    assert old in GOOD
    errors = _errors(_repo(tmp_path, GOOD.replace(old, new)))
    assert any(expected in e for e in errors), errors


def test_a_fixed_batch_dimension_in_the_onnx(tmp_path: Path) -> None:
    errors = _errors(_repo(tmp_path, batch_dim=1))
    assert any("fixed first dimension (1) in 1/model.onnx, so Triton cannot batch it" in e for e in errors), (
        errors
    )
    assert validate_repository(
        _repo(
            tmp_path / "b",
            GOOD.replace("max_batch_size: 16", "max_batch_size: 0")
            .replace("dims: [ 4 ]", "dims: [ 1, 4 ]")
            .replace("dims: [ 3 ]", "dims: [ 1, 3 ]")
            .replace("dynamic_batching { preferred_batch_size: [ 4, 8 ] }", ""),
            batch_dim=1,
        )
    ).ok


def test_no_version_directory(tmp_path: Path) -> None:
    assert any("no version directory" in e for e in _errors(_repo(tmp_path, version=None)))


def test_every_problem_is_listed_at_once(tmp_path: Path) -> None:
    bad = (
        GOOD.replace('name: "x"', 'name: "X"')
        .replace("[ 4, 8 ]", "[ 64 ]")
        .replace("TYPE_FP32 dims: [ 3 ]", "TYPE_INT32 dims: [ 3 ]")
    )
    report = validate_repository(_repo(tmp_path, bad))
    assert len(report.errors) == 3  # the wrong input name, the preferred size, the output dtype
    with pytest.raises(ValidationError) as caught:
        report.raise_for_errors()
    assert len(caught.value.problems) == len(report.errors)


def test_missing_config_is_a_warning_and_missing_repo_an_error(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    (repo / "lin" / "config.pbtxt").unlink()
    report = validate_repository(repo)
    assert report.ok and "auto-complete" in report.warnings[0].message
    with pytest.raises(ValidationError, match="not a directory"):
        validate_repository(tmp_path / "absent")
