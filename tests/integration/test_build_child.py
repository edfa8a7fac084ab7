"""The build in a child process (what tune builds through): a typed result, or the build's own error raised
again in the parent, the same class with the same problems as the build in this process."""

from __future__ import annotations

from pathlib import Path

import pytest

from generator.build.child import ChildBuild, build_in_child
from generator.build.run import build
from generator.core.errors import ConfigError, SpecError
from generator.core.repository import MANIFEST

from ..conftest import make_linear_onnx

pytestmark = pytest.mark.integration

SPEC = """\
repository: repo
models:
  - name: linear
    framework: onnx
    source: linear.onnx
    inputs: [{name: x, dtype: FP32, dims: [4]}]
    outputs: [{name: y, dtype: FP32, dims: [3]}]
"""


def test_a_child_build_returns_what_it_wrote(tmp_path: Path) -> None:
    make_linear_onnx(tmp_path / "linear.onnx")
    spec = tmp_path / "generator.yaml"
    spec.write_text(SPEC)
    built = build_in_child(spec, tmp_path / "out")
    assert isinstance(built, ChildBuild)
    assert built.repository == tmp_path / "out" and built.models == {"linear": "exported"}
    assert (tmp_path / "out" / "linear" / "config.pbtxt").is_file() and (
        tmp_path / "out" / MANIFEST
    ).is_file()
    assert build_in_child(spec, tmp_path / "out").models == {"linear": "reused"}


def test_a_failed_child_build_raises_the_builds_own_error(tmp_path: Path) -> None:
    make_linear_onnx(tmp_path / "linear.onnx")
    spec = tmp_path / "generator.yaml"
    spec.write_text(SPEC.replace("dtype: FP32, dims: [4]", "dtype: FLOAT99, dims: [4]"))
    with pytest.raises(SpecError) as here:
        build(spec, tmp_path / "out")
    with pytest.raises(SpecError) as child:
        build_in_child(spec, tmp_path / "out")
    assert child.value.problems == here.value.problems
    assert any("models[0].inputs[0].dtype" in line for line in child.value.problems)
    assert not (tmp_path / "out").exists()


def test_the_errors_class_comes_back_with_its_problems(tmp_path: Path) -> None:
    make_linear_onnx(tmp_path / "linear.onnx")
    spec = tmp_path / "generator.yaml"
    spec.write_text(SPEC)
    with pytest.raises(ConfigError) as child:
        build_in_child(spec, tmp_path / "out", templates=tmp_path / "no-such-dir")
    assert child.value.problems == [
        f"--templates '{tmp_path / 'no-such-dir'}' is not a directory; pass a directory of .j2 templates"
    ]
