"""Kill a ``tritonserver`` process group when the process that started it dies.

Run by :class:`generator.serve.process.ServerProcess` beside each server it spawns, as a separate, stdlib-only process
(``python -I reaper.py PGID WORKDIR SHM_PREFIX``) whose standard input is a pipe from the server's owner.
The owner writes a byte and closes the pipe when it has stopped the server itself; if instead the pipe
reaches end-of-file with nothing written, the owner died without stopping it (SIGKILL, the OOM killer), so
the reaper SIGKILLs the whole group (the server and its backend stubs, which the stubs do not notice on
their own) and removes the backend directory and the shared-memory regions the stubs left behind.

It runs in a session of its own, so a terminal's Ctrl-C or hang-up does not end it before its owner.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import time
from pathlib import Path

_SHM_DIR = Path("/dev/shm")


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def main(argv: list[str]) -> int:
    """Wait for the owner to release or abandon the group ``argv[1]``; kill it if abandoned."""
    pgid, workdir, shm_prefix = int(argv[1]), Path(argv[2]), argv[3]
    for signum in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    released = sys.stdin.buffer.read()  # returns at end-of-file: the owner closed the pipe or died
    if released:
        return 0
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _SHM_DIR.is_dir():
        for region in _SHM_DIR.glob(f"{shm_prefix}*"):
            region.unlink(missing_ok=True)
    shutil.rmtree(workdir / "backends", ignore_errors=True)
    with contextlib.suppress(OSError):  # only when empty: a server log kept there stays for the user
        workdir.rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
