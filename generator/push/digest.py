"""What a repository holds, as push addresses it: every file's SHA-256 (the build manifest's where it
records one) and the content digest over them that names the pushed prefix.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

from generator.core.repository import MANIFEST, sha256_file

#: Hex characters of the repository digest used in the prefix (64 bits).
DIGEST_CHARS = 16
#: Left out of a push: written by a server that imported a Python model, not by the build.
_SKIPPED_DIRS = {"__pycache__"}


def _files(directory: Path) -> Iterator[tuple[str, Path]]:
    """Every file of the repository as (relative POSIX path, path), sorted, caches left out."""
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory)
        if path.is_file() and not _SKIPPED_DIRS.intersection(relative.parts[:-1]):
            yield relative.as_posix(), path


def empty_directories(directory: Path) -> list[str]:
    """Directories with no file below them (an ensemble's version directory), relative, sorted."""
    empty = []
    for path in sorted(directory.rglob("*")):
        if path.is_dir() and path.name not in _SKIPPED_DIRS and not any(p.is_file() for p in path.rglob("*")):
            empty.append(path.relative_to(directory).as_posix())
    return empty


def manifest_hashes(directory: Path) -> dict[str, str]:
    """The files the build manifest records (relative path -> sha256); empty when there is no manifest.

    The manifest names each model's ``config.pbtxt`` (``config_sha256``), the files of each version
    directory and the sample files beside the config.
    """
    try:
        data = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    hashes: dict[str, str] = {}
    models = data.get("models") if isinstance(data, dict) else None
    for name, model in (models or {}).items():
        if not isinstance(model, dict):
            continue
        if isinstance(model.get("config_sha256"), str):
            hashes[f"{name}/config.pbtxt"] = model["config_sha256"]
        for relative, digest in (model.get("sample_files") or {}).items():
            hashes[f"{name}/{relative}"] = str(digest)
        for version, entry in (model.get("versions") or {}).items():
            for relative, digest in ((entry or {}).get("files") or {}).items():
                hashes[f"{name}/{version}/{relative}"] = str(digest)
    return hashes


def file_hashes(directory: Path) -> dict[str, str]:
    """Every file of the repository (relative path -> sha256): the manifest's hash where it has one."""
    recorded = manifest_hashes(directory)
    return {relative: recorded.get(relative) or sha256_file(path) for relative, path in _files(directory)}


def repository_digest(hashes: dict[str, str], empty_dirs: Sequence[str] = ()) -> str:
    """The content digest of a repository: SHA-256 over its sorted ``path sha256`` lines, shortened.

    The same files give the same digest on any machine; any changed, added or removed file (or empty
    directory) changes it.
    """
    digest = hashlib.sha256()
    for relative in sorted(hashes):
        digest.update(f"{relative}\0{hashes[relative]}\n".encode())
    for relative in empty_dirs:
        digest.update(f"{relative}/\0\n".encode())
    return digest.hexdigest()[:DIGEST_CHARS]
