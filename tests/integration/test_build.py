"""Building real models: torch export and ONNX intake, parity figures, reuse, and failures that leave
an existing repository byte-for-byte intact."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from generator.build.run import build
from generator.core.errors import ExportError, GeneratorError, VerificationError
from generator.core.repository import MANIFEST
from generator.validate.run import validate_repository

from ..conftest import EXAMPLE_SPEC, make_linear_onnx

pytestmark = pytest.mark.integration


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _examples_copy(tmp_path: Path) -> Path:
    target = tmp_path / "examples"
    shutil.copytree(EXAMPLE_SPEC.parent, target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def test_the_example_builds_valid_with_parity_figures(example_repo: Path) -> None:
    assert (example_repo / "digits_cnn" / "1" / "model.onnx").is_file()
    assert (example_repo / "digits_linear" / "1" / "model.onnx").is_file()
    assert validate_repository(example_repo).ok
    manifest = json.loads((example_repo / MANIFEST).read_text())
    cnn = manifest["models"]["digits_cnn"]["versions"]["1"]
    assert cnn["parity"]["compared"] and cnn["parity"]["batch_sizes"] == [1, 64]
    assert 0 < cnn["parity"]["max_abs_error"] < 1e-4
    assert cnn["details"]["opset"] >= 17 and cnn["signature"]["inputs"][0]["shape"] == [-1, 1, 8, 8]
    assert manifest["libraries"]["torch"].startswith("2.13.0")
    linear = manifest["models"]["digits_linear"]["versions"]["1"]
    assert linear["parity"]["compared"] is False and linear["signature"]["inputs"][0]["name"] == "pixels"


def test_a_rebuild_with_nothing_changed_reuses_every_model(example_repo_copy: Path) -> None:
    before = _tree(example_repo_copy)
    report = build(EXAMPLE_SPEC, example_repo_copy)
    statuses = {m.name: m.status for m in report.models}
    assert statuses.pop("text_pipeline") == "configured"  # an ensemble has nothing to export
    assert statuses.pop("hf_topics") == "configured"  # its end-to-end parity kept, not measured again
    assert set(statuses.values()) == {"reused"} and len(statuses) == 10
    assert _tree(example_repo_copy) == before


def test_changing_one_model_re_exports_only_that_one(tmp_path: Path) -> None:
    examples = _examples_copy(tmp_path)
    repo = tmp_path / "repo"
    build(examples / "generator.yaml", repo)
    spec = examples / "generator.yaml"
    spec.write_text(
        spec.read_text().replace("response_cache: true", "response_cache: true\n    max_batch_size: 32")
    )
    report = build(spec, repo)
    statuses = {m.name: m.status for m in report.models}
    assert statuses.pop("digits_linear") == "exported" and statuses.pop("text_pipeline") == "configured"
    assert statuses.pop("hf_topics") == "configured"
    assert set(statuses.values()) == {"reused"}
    assert "max_batch_size: 32" in (repo / "digits_linear" / "config.pbtxt").read_text()


def test_a_tolerance_of_zero_fails_parity_and_keeps_the_old_repository(tmp_path: Path) -> None:
    examples = _examples_copy(tmp_path)
    repo = tmp_path / "repo"
    build(examples / "generator.yaml", repo)
    before = _tree(repo)
    spec = examples / "generator.yaml"
    spec.write_text(
        spec.read_text().replace("verify: {atol: 1.0e-4, rtol: 1.0e-3}", "verify: {atol: 0.0, rtol: 0.0}")
    )
    with pytest.raises(VerificationError) as caught:
        build(spec, repo)
    # Which outputs differ at all depends on the CPU's kernels and thread count (on one core the CNN's
    # batch of 64 can match PyTorch bit for bit); some always do, each named with its measured error.
    assert caught.value.problems
    assert all(
        re.match(r"model '\w+' output '\w+' at batch \d+", line) and "max abs error" in line
        for line in caught.value.problems
    ), caught.value.problems
    assert _tree(repo) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["examples", "repo"]


def test_a_bad_factory_is_an_export_error_naming_the_fix(tmp_path: Path) -> None:
    examples = _examples_copy(tmp_path)
    spec = examples / "generator.yaml"
    spec.write_text(spec.read_text().replace("digits.py:build", "digits.py:biuld"))
    with pytest.raises(ExportError, match=r"digits.py has no function 'biuld'; use one of .*build"):
        build(spec, tmp_path / "repo")
    assert not (tmp_path / "repo").exists()


def test_every_failing_model_is_reported(tmp_path: Path) -> None:
    make_linear_onnx(tmp_path / "fixed.onnx", batch_dim=1)
    (tmp_path / "broken.onnx").write_bytes(b"not onnx")
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "models:\n"
        "  - {name: fixed, framework: onnx, source: fixed.onnx, max_batch_size: 8, verify: {enabled: false}}\n"
        "  - {name: broken, framework: onnx, source: broken.onnx}\n"
    )
    with pytest.raises(GeneratorError) as caught:
        build(spec, tmp_path / "repo")
    text = str(caught.value)
    assert "fixed first dimension (1)" in text and "broken.onnx is not a valid ONNX model" in text


def test_an_onnx_without_a_batch_axis_gets_max_batch_size_zero(tmp_path: Path) -> None:
    make_linear_onnx(tmp_path / "fixed.onnx", batch_dim=1)
    spec = tmp_path / "spec.yaml"
    spec.write_text("models:\n  - {name: fixed, framework: onnx, source: fixed.onnx}\n")
    report = build(spec, tmp_path / "repo")
    assert report.models[0].max_batch_size == 0
    text = (tmp_path / "repo" / "fixed" / "config.pbtxt").read_text()
    assert "max_batch_size: 0" in text and "dims: [ 1, 4 ]" in text and "dynamic_batching" not in text


def test_a_fixed_batch_onnx_with_batching_asked_fails_validation(tmp_path: Path) -> None:
    make_linear_onnx(tmp_path / "fixed.onnx", batch_dim=1)
    spec = tmp_path / "spec.yaml"
    spec.write_text("models:\n  - {name: fixed, framework: onnx, source: fixed.onnx, max_batch_size: 4}\n")
    with pytest.raises(GeneratorError, match=r"fixed first dimension \(x \[1, 4\]"):
        build(spec, tmp_path / "repo")


def test_several_versions_of_one_model(tmp_path: Path) -> None:
    make_linear_onnx(tmp_path / "v1.onnx", seed=1)
    make_linear_onnx(tmp_path / "v2.onnx", seed=2)
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "models:\n"
        "  - {name: lin, framework: onnx, source: v1.onnx, version: 1}\n"
        "  - {name: lin, framework: onnx, source: v2.onnx, version: 2, version_policy: {all: true}}\n"
    )
    build(spec, tmp_path / "repo")
    assert (tmp_path / "repo/lin/1/model.onnx").read_bytes() == (tmp_path / "v1.onnx").read_bytes()
    assert (tmp_path / "repo/lin/2/model.onnx").read_bytes() == (tmp_path / "v2.onnx").read_bytes()
    assert "version_policy: { all { } }" in (tmp_path / "repo/lin/config.pbtxt").read_text()
    assert validate_repository(tmp_path / "repo").ok


def test_hand_written_models_in_the_repository_survive_a_build(example_repo_copy: Path) -> None:
    shutil.copytree(example_repo_copy / "digits_linear", example_repo_copy / "mine")
    config = example_repo_copy / "mine" / "config.pbtxt"
    config.write_text(config.read_text().replace('name: "digits_linear"', 'name: "mine"'))
    report = build(EXAMPLE_SPEC, example_repo_copy)
    assert report.carried_over == ["mine"]
    assert validate_repository(example_repo_copy).models == [
        "digits_cnn",
        "digits_linear",
        "hf_topics",
        "hf_topics_model",
        "hf_topics_postprocess",
        "hf_topics_preprocess",
        "mine",
        "running_max",
        "text_classifier",
        "text_pipeline",
        "text_postprocess",
        "text_tokenizer",
        "tiny_lm",
    ]
