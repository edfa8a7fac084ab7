"""Staging and the atomic swap: a failed build leaves the old repository as it was."""

from __future__ import annotations

from pathlib import Path

import pytest

from generator.core.repository import MANIFEST, Staging


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_commit_replaces_the_target_and_leaves_no_staging(tmp_path: Path) -> None:
    target = tmp_path / "repo"
    (target / "old").mkdir(parents=True)
    (target / "old" / "f").write_text("old")
    (target / MANIFEST).write_text("{}")
    with Staging(target) as staging:
        (staging.path / "new").mkdir()
        (staging.path / "new" / "f").write_text("new")
        staging.carry_over(keep={"new"}, previously_built={"old"})
        staging.commit()
    assert _tree(target) == {"new/f": b"new"}
    assert [p.name for p in tmp_path.iterdir()] == ["repo"]


def test_an_error_before_commit_leaves_the_target_intact(tmp_path: Path) -> None:
    target = tmp_path / "repo"
    (target / "m" / "1").mkdir(parents=True)
    (target / "m" / "1" / "model.onnx").write_bytes(b"\x00\x01")
    before = _tree(target)
    with pytest.raises(RuntimeError), Staging(target) as staging:
        (staging.path / "m").mkdir()
        raise RuntimeError("export failed")
    assert _tree(target) == before
    assert [p.name for p in tmp_path.iterdir()] == ["repo"]


def test_entries_tritongen_did_not_build_are_carried_over(tmp_path: Path) -> None:
    target = tmp_path / "repo"
    (target / "handwritten" / "1").mkdir(parents=True)
    (target / "handwritten" / "config.pbtxt").write_text("name: 'handwritten'")
    (target / "README.md").write_text("notes")
    (target / "dropped").mkdir()
    (target / MANIFEST).write_text("{}")
    with Staging(target) as staging:
        carried = staging.carry_over(keep={"built"}, previously_built={"dropped"})
        staging.commit()
    assert carried == ["README.md", "handwritten"]
    assert (target / "handwritten" / "config.pbtxt").read_text() == "name: 'handwritten'"
    assert not (target / "dropped").exists()


def test_a_file_in_the_way_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "repo").write_text("not a directory")
    from generator.core.errors import RepositoryError

    with pytest.raises(RepositoryError, match="is not a directory"):
        Staging(tmp_path / "repo")
