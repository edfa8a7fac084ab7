"""The model repository on disk: staging, atomic swap, the build manifest, reuse of unchanged models.

A build takes a lock on the output, writes a complete new repository into a staging directory beside
it, then swaps it in with one atomic exchange (Linux ``renameat2``; two renames elsewhere, undone on the
next build if interrupted), so the output path always holds a whole repository. Entries of the old
repository that tritongen did not build (hand-written models, a README) are carried over; models it
built that left the spec are dropped.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import functools
import glob
import hashlib
import json
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from generator.core.errors import RepositoryError

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


def _short(name: str) -> str:
    """The output's name as it appears in the names of the files beside it (bounded by NAME_MAX)."""
    return name[:100]


class OutputLock:
    """An exclusive lock on one output path, held by a build from start to swap.

    The lock is ``flock`` on ``.<name>.lock`` beside the output (released by the kernel if the build
    dies); the file is removed on release. A second build into the same output fails at once with the
    first one's pid rather than mixing two repositories.
    """

    def __init__(self, target: Path) -> None:
        self.target = target
        self.path = target.parent / f".{_short(target.name)}.lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock.

        Raises:
            RepositoryError: another build holds it, or the lock file cannot be created.
        """
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise RepositoryError(
                    f"cannot create the lock file '{self.path}': {exc.strerror}; check the output's directory"
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise RepositoryError(
                    f"another build (pid {holder}) is writing '{self.target}'; "
                    "wait for it to finish or pass another --output"
                ) from None
            # The holder before us may have removed the file after we opened it: lock the live one.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def release(self) -> None:
        """Remove the lock file and release the lock. Idempotent."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        os.close(self._fd)
        self._fd = None


def _exchange(a: Path, b: Path) -> bool:
    """Swap two directories in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``).

    Returns:
        False where the system or file system cannot (the caller falls back to two renames).
    """
    renameat2 = getattr(_libc(), "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    error = ctypes.get_errno()
    if error in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EPERM):
        return False
    raise OSError(error, os.strerror(error), str(b))


@functools.cache
def _libc() -> Any:
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def check_output(target: Path, protect: tuple[Path, ...] = ()) -> None:
    """Refuse an output whose replacement would swallow what it must not.

    Args:
        target: The output directory (absolute, normalised).
        protect: Directories the output may not be or contain (the working directory, the spec's).

    Raises:
        RepositoryError: the output is the file system root, or is or contains a protected directory,
            or is an existing directory that is not a model repository.
    """
    if target == target.parent:
        raise RepositoryError(
            f"output '{target}' is the file system root; pass a directory for the repository"
        )
    for directory in protect:
        if directory == target or target in directory.parents:
            raise RepositoryError(
                f"output '{target}' is or contains '{directory}' (the working or spec directory); "
                "a build replaces its output whole, so pass a directory of its own, e.g. --output model_repository"
            )
    if target.is_dir() and not target.is_symlink() and not (target / MANIFEST).is_file():
        strangers = [entry.name for entry in sorted(target.iterdir()) if not _repository_entry(entry)]
        if strangers:
            raise RepositoryError(
                f"output '{target}' exists and is not a model repository (it holds {', '.join(strangers[:3])}); "
                "pass a new or empty directory, or one that holds only model directories"
            )


def _repository_entry(entry: Path) -> bool:
    """Whether an entry belongs in a model repository: a model directory, notes, or hidden files."""
    if entry.name.startswith(".") or entry.name.lower().startswith(("readme", "license")):
        return True
    if not entry.is_dir():
        return False
    return (entry / "config.pbtxt").exists() or any(p.name.isdigit() for p in entry.iterdir())


class Staging:
    """A staging directory for a new repository that replaces ``target`` on :meth:`commit`.

    Used as a context manager: entering takes the output's lock and clears what interrupted builds left
    beside it; leaving without committing (an error) removes the staging directory and leaves
    ``target`` untouched. :meth:`commit` swaps the new repository in with one atomic exchange where
    the system has one (Linux), so the output path always holds a whole repository, old or new, also
    for a Triton polling it.

    Args:
        target: The output directory.
        protect: Directories the output may not be or contain (see :func:`check_output`).
    """

    def __init__(self, target: Path, protect: tuple[Path, ...] = ()) -> None:
        self.target = Path(os.path.abspath(target))
        if self.target.exists() and not self.target.is_dir():
            raise RepositoryError(
                f"output '{self.target}' exists and is not a directory; pass another --output"
            )
        check_output(self.target, tuple(Path(os.path.abspath(p)) for p in protect))
        self._prefix = f".{_short(self.target.name)}."
        self._lock = OutputLock(self.target)
        self.path = self.target.parent / f"{self._prefix}building-{uuid.uuid4().hex[:12]}"
        self.committed = False

    def __enter__(self) -> Staging:
        try:
            self.target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RepositoryError(
                f"cannot create the directory for '{self.target}': {exc.strerror}; pass another --output"
            ) from None
        self._lock.acquire()
        try:
            self.recover()
            # A plain mkdir, not mkdtemp's 0700: the repository must be readable by a Triton running as
            # another user (KServe runs it as uid 1000); the umask decides, as for any directory.
            self.path.mkdir()
        except OSError as exc:
            self._lock.release()
            raise RepositoryError(
                f"cannot create a staging directory beside '{self.target}': {exc.strerror}; "
                "pass another --output"
            ) from None
        except BaseException:
            self._lock.release()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if not self.committed:
                shutil.rmtree(self.path, ignore_errors=True)
        finally:
            self._lock.release()

    def recover(self) -> list[str]:
        """Clear what interrupted builds left beside the output (call with the lock held).

        A build killed between the two renames of the fallback swap left no output but its backup:
        the backup is moved back. Staging directories of killed builds are deleted.

        Returns:
            What was done, one line per leftover.
        """
        done = []
        leftovers = sorted(self.target.parent.glob(f"{glob.escape(self._prefix)}*"))
        backups = [p for p in leftovers if p.name.startswith(f"{self._prefix}old-") and p.is_dir()]
        if not self.target.exists() and not self.target.is_symlink() and backups:
            os.rename(backups[-1], self.target)
            backups.pop()
            done.append(f"restored '{self.target}' from an interrupted build")
        for path in leftovers:
            is_stale = path.name.startswith((f"{self._prefix}building-", f"{self._prefix}old-"))
            if is_stale and path.exists() and path != self.path:
                shutil.rmtree(path, ignore_errors=True)
                done.append(f"removed {path.name}, left by an interrupted build")
        for line in done:
            log.warning("%s", line)
        return done

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
        """Swap the staging directory in for the target.

        One ``renameat2(RENAME_EXCHANGE)`` where available; elsewhere two renames (target to a backup,
        staging to target; rolled back on failure, and undone by :meth:`recover` after a crash).

        Raises:
            RepositoryError: the swap failed; the old repository is intact.
        """
        try:
            if not self.target.exists():
                os.rename(self.path, self.target)
            elif _exchange(self.path, self.target):
                shutil.rmtree(self.path, ignore_errors=True)  # now the old repository
            else:
                self._swap_by_renames()
        except OSError as exc:
            raise RepositoryError(
                f"cannot swap the new repository into '{self.target}': {exc.strerror}; the old one is intact"
            ) from None
        _fsync_dir(self.target.parent)
        self.committed = True

    def _swap_by_renames(self) -> None:
        backup = self.target.parent / f"{self._prefix}old-{uuid.uuid4().hex[:12]}"
        os.rename(self.target, backup)
        try:
            os.rename(self.path, self.target)
        except OSError:
            os.rename(backup, self.target)
            raise
        shutil.rmtree(backup, ignore_errors=True)
