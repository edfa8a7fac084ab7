"""The tune's scratch copy of the repository, in the temporary directory, and what a killed tune left there.

A tune builds and serves the spec from ``<temp>/tritongen-tune-XXXX/`` and removes it when it ends. A tune
that is SIGKILLed (or killed by the OOM killer) removes nothing; its embedded Triton dies with it (the
server's reaper), but the copy stays. Each scratch directory records its owner (``owner.json``: the process
id and the process's start time, so a reused id is not taken for the owner), and every tune first clears
the scratch copies whose owner is gone. A directory without a readable record is left alone: it may be
another tune's that has not written it yet.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import psutil

__all__ = ["OWNER", "PREFIX", "clear_stale_scratch", "make_scratch", "owner_alive"]

logger = logging.getLogger(__name__)

PREFIX = "tritongen-tune-"
OWNER = "owner.json"


def _started(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch), or None when there is no such live process."""
    try:
        process = psutil.Process(pid)
        if (
            process.status() == psutil.STATUS_ZOMBIE
        ):  # killed, not yet reaped by its parent: gone all the same
            return None
        return process.create_time()
    except psutil.NoSuchProcess:
        return None


def make_scratch(temp_dir: Path | None = None) -> Path:
    """Create a scratch directory owned by this process (removing it is the caller's)."""
    path = Path(tempfile.mkdtemp(prefix=PREFIX, dir=temp_dir))
    owner = {"pid": os.getpid(), "started": _started(os.getpid())}
    (path / OWNER).write_text(json.dumps(owner) + "\n")
    return path


def owner_alive(scratch: Path) -> bool | None:
    """Whether the process that made ``scratch`` still runs; None when the directory records no owner."""
    try:
        owner = json.loads((scratch / OWNER).read_text())
        pid, started = int(owner["pid"]), owner.get("started")
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        now = _started(pid)
    except psutil.Error:  # not ours to look at (another user's): count it alive
        return True
    if now is None:
        return False
    return started is None or abs(float(now) - float(started)) < 1.0


def clear_stale_scratch(temp_dir: Path | None = None) -> list[Path]:
    """Remove the scratch directories in ``temp_dir`` (default: the system's) whose owner is gone.

    Returns:
        The directories removed.
    """
    root = Path(temp_dir) if temp_dir is not None else Path(tempfile.gettempdir())
    removed = []
    try:
        candidates = sorted(p for p in root.glob(f"{PREFIX}*") if p.is_dir() and not p.is_symlink())
    except OSError:
        return removed
    for path in candidates:
        if owner_alive(path) is False:
            shutil.rmtree(path, ignore_errors=True)
            if not path.exists():
                removed.append(path)
                logger.info("removed %s, the scratch copy of a tune that was killed", path)
    return removed
