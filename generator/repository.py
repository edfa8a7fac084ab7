"""The model repository on disk: staging, atomic swap, the build manifest, reuse of unchanged models.

A build writes a complete new repository into a staging directory beside the target, then swaps it in
with two renames (rolled back if the second fails), so an existing repository is never left
half-written. Entries of the old repository that tritongen did not build (hand-written models, a
README) are carried over; models it built that left the spec are dropped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from generator.errors import RepositoryError

log = logging.getLogger(__name__)

MANIFEST = "tritongen-manifest.json"


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(repo: Path) -> dict[str, Any] | None:
    """The manifest of an existing repository, or ``None`` if it has none (or it is unreadable)."""
    path = repo / MANIFEST
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def write_json(path: Path, data: Any) -> None:
    """Write JSON deterministically (sorted keys, trailing newline) via a temporary file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def link_or_copy_tree(source: Path, target: Path) -> None:
    """Copy a directory tree, hard-linking files where the filesystem allows it (fast, no extra space)."""

    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, target, copy_function=link, symlinks=True)


class Staging:
    """A staging directory for a new repository that replaces ``target`` on :meth:`commit`.

    Used as a context manager: leaving the block without committing (an error) removes the staging
    directory and leaves ``target`` untouched.
    """

    def __init__(self, target: Path) -> None:
        self.target = Path(target).absolute()
        if self.target.exists() and not self.target.is_dir():
            raise RepositoryError(
                f"output '{self.target}' exists and is not a directory; pass another --output"
            )
        try:
            self.target.parent.mkdir(parents=True, exist_ok=True)
            self.path = Path(
                tempfile.mkdtemp(prefix=f".{self.target.name}.building-", dir=self.target.parent)
            )
        except OSError as exc:
            raise RepositoryError(
                f"cannot create a staging directory beside '{self.target}': {exc.strerror}"
            ) from None
        self.committed = False

    def __enter__(self) -> Staging:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.committed:
            shutil.rmtree(self.path, ignore_errors=True)

    def carry_over(self, keep: set[str], previously_built: set[str]) -> list[str]:
        """Copy entries of the current target that this build does not write and tritongen never built.

        Args:
            keep: Names this build wrote (not carried over).
            previously_built: Models the previous manifest says tritongen built (dropped if not in ``keep``).

        Returns:
            The names carried over.
        """
        if not self.target.is_dir():
            return []
        carried = []
        for entry in sorted(self.target.iterdir()):
            if entry.name in keep or entry.name in previously_built or entry.name == MANIFEST:
                continue
            destination = self.path / entry.name
            if entry.is_dir() and not entry.is_symlink():
                link_or_copy_tree(entry, destination)
            else:
                shutil.copy2(entry, destination, follow_symlinks=False)
            carried.append(entry.name)
        if carried:
            log.info("kept %d entries not built from the spec: %s", len(carried), ", ".join(carried))
        return carried

    def commit(self) -> None:
        """Swap the staging directory in for the target (rename, with rollback on failure)."""
        backup = None
        try:
            if self.target.exists():
                backup = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.old-", dir=self.target.parent))
                backup.rmdir()
                os.rename(self.target, backup)
            try:
                os.rename(self.path, self.target)
            except OSError:
                if backup is not None:
                    os.rename(backup, self.target)
                    backup = None
                raise
        except OSError as exc:
            raise RepositoryError(
                f"cannot swap the new repository into '{self.target}': {exc.strerror}; the old one is intact"
            ) from None
        self.committed = True
        if backup is not None:
            shutil.rmtree(backup, ignore_errors=True)
