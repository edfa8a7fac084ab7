"""Tuned settings beside a spec reach the built repository: the rendered config, the manifest and the CLI's
report; `--no-tuned` builds from the spec alone; only a change that shapes the export exports again."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from generator.build.run import build
from generator.core.repository import MANIFEST
from generator.core.triton import parse_config_text
from generator.spec.tuned import TunedEntry, tuned_path, write_tuned
from generator.validate.run import validate_repository

from ..conftest import make_linear_onnx, run_cli

pytestmark = pytest.mark.integration

SPEC = """\
repository: repo
defaults:
  max_batch_size: 32
  dynamic_batching: {preferred_batch_size: [8, 16], max_queue_delay_microseconds: 500}
  instance_group: {count: 1}
models:
  - name: linear
    framework: onnx
    source: linear.onnx
  - name: other
    framework: onnx
    source: other.onnx
"""

TUNED = TunedEntry(
    settings={
        "max_batch_size": 16,
        "dynamic_batching": {"max_queue_delay_microseconds": 100, "preferred_batch_size": [4, 8]},
        "instance_group": {"count": 3},
        "parameters": {"intra_op_thread_count": 1},
    },
    trial="20261123T101500Z/7",
    objective="max throughput at 16 users subject to p99_ms <= 20",
    measured={"users": 16, "throughput": 2480.5, "p50_ms": 5.1, "p99_ms": 9.8},
    tuned_at="2026-11-23T10:15:00+00:00",
)


@pytest.fixture
def spec_path(tmp_path: Path) -> Path:
    make_linear_onnx(tmp_path / "linear.onnx")
    make_linear_onnx(tmp_path / "other.onnx", seed=1)
    path = tmp_path / "serving.yaml"
    path.write_text(SPEC)
    return path


def _config(repo: Path, name: str) -> Any:
    """A model's config.pbtxt parsed with Triton's ModelConfig protobuf."""
    return parse_config_text((repo / name / "config.pbtxt").read_text())


def test_build_applies_the_tuned_file_and_no_tuned_does_not(spec_path: Path, tmp_path: Path) -> None:
    write_tuned(spec_path, {"linear": TUNED})
    assert tuned_path(spec_path).name == "serving.tuned.yaml"

    result = run_cli("build", "serving.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "tuned   linear: settings from serving.tuned.yaml (trial 20261123T101500Z/7)" in result.stdout
    repo = tmp_path / "repo"
    config = _config(repo, "linear")
    assert config.max_batch_size == 16
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 8]
    assert config.dynamic_batching.max_queue_delay_microseconds == 100
    assert config.instance_group[0].count == 3
    assert config.parameters["intra_op_thread_count"].string_value == "1"
    untouched = _config(repo, "other")
    assert untouched.max_batch_size == 32 and untouched.instance_group[0].count == 1
    manifest = json.loads((repo / MANIFEST).read_text())
    assert manifest["models"]["linear"]["tuned"] == {
        "file": "serving.tuned.yaml",
        "trial": "20261123T101500Z/7",
        "settings": TUNED.settings,
    }
    assert manifest["models"]["other"]["tuned"] is None
    assert validate_repository(repo).ok

    plain = run_cli("build", "serving.yaml", "--no-tuned", cwd=tmp_path)
    assert plain.returncode == 0, plain.stderr
    assert "tuned" not in plain.stdout
    config = _config(repo, "linear")
    assert config.max_batch_size == 32 and config.instance_group[0].count == 1
    assert list(config.dynamic_batching.preferred_batch_size) == [8, 16]
    assert "intra_op_thread_count" not in config.parameters
    assert json.loads((repo / MANIFEST).read_text())["models"]["linear"]["tuned"] is None


def test_a_bad_tuned_value_fails_the_build_naming_the_file_and_keeps_the_repository(
    spec_path: Path, tmp_path: Path
) -> None:
    assert run_cli("build", "serving.yaml", cwd=tmp_path).returncode == 0
    before = (tmp_path / "repo" / "linear" / "config.pbtxt").read_bytes()
    tuned_path(spec_path).write_text(
        "format: 1\nmodels:\n  linear: {settings: {max_batch_size: -4}, trial: r/1}\n"
        "  gone: {settings: {max_batch_size: 4}, trial: r/2}\n"
    )
    result = run_cli("build", "serving.yaml", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: serving.tuned.yaml: models.linear.settings.max_batch_size: must be at least 0 (got -4); "
        "fix or delete that entry in the tuned settings file, or build with --no-tuned"
    ]
    assert (tmp_path / "repo" / "linear" / "config.pbtxt").read_bytes() == before

    tuned_path(spec_path).write_text(
        "format: 1\nmodels:\n  gone: {settings: {max_batch_size: 4}, trial: r/2}\n"
    )
    warned = run_cli("build", "serving.yaml", cwd=tmp_path)
    assert warned.returncode == 0, warned.stderr
    assert "warning: serving.tuned.yaml: models.gone: no model 'gone' in serving.yaml" in warned.stdout


def test_only_tuned_values_that_shape_the_export_export_again(spec_path: Path, tmp_path: Path) -> None:
    repo = tmp_path / "out"
    first = build(spec_path, repo)
    assert first.tuned == {} and first.tuned_file is None

    # Serving-only settings: the artifact is reused, the config is rewritten.
    serving = TunedEntry(settings={"instance_group": {"count": 2}, "parameters": {"x": 1}}, trial="a/1")
    write_tuned(spec_path, {"linear": serving})
    report = build(spec_path, repo)
    assert {m.name: m.status for m in report.models} == {"linear": "reused", "other": "reused"}
    assert report.tuned == {"linear": serving} and report.tuned_file == tuned_path(spec_path)
    assert _config(repo, "linear").instance_group[0].count == 2

    # max_batch_size: parity runs at it, so the model is exported and verified again.
    write_tuned(spec_path, {"linear": TUNED})
    report = build(spec_path, repo)
    assert {m.name: m.status for m in report.models} == {"linear": "exported", "other": "reused"}
    linear = next(m for m in report.models if m.name == "linear")
    assert linear.max_batch_size == 16 and linear.parity["batch_sizes"] == [1, 16]

    # Built again from the same files: reused, the same config.
    config = (repo / "linear" / "config.pbtxt").read_bytes()
    report = build(spec_path, repo)
    assert [m.status for m in report.models] == ["reused", "reused"]
    assert (repo / "linear" / "config.pbtxt").read_bytes() == config

    # A spec loaded by the caller is used as it is: no tuned file is read.
    from generator.spec.models import load_spec

    report = build(spec_path, repo, spec=load_spec(spec_path))
    assert report.tuned == {}
    assert _config(repo, "linear").max_batch_size == 32
