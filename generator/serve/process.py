"""One ``tritonserver`` process group and what it leaves behind.

:class:`ServerProcess` runs the server of one start (the first spawn and each restart, its output into one
log) in a session of its own, so that stopping it stops its backend stubs too, beside a reaper process
(:mod:`generator.serve.reaper`) that kills the group if the owning process dies without stopping it. It
waits for the server to come up, stops it (SIGTERM, a grace period, then SIGKILL of the whole group),
removes the shared-memory regions its stubs leave in ``/dev/shm`` and the per-start directory, and reads
the log: why the server did not come up (:func:`failure_reason`), why it exited (:func:`crash_reason`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from generator.core.errors import ServerError

__all__ = ["ServerProcess", "crash_reason", "failure_reason", "terminate"]

logger = logging.getLogger(__name__)

_REAPER = Path(__file__).resolve().parent / "reaper.py"
_UNCAUGHT = re.compile(r"terminate called after throwing an instance of '([^']+)'")
_LOG_TAIL_BYTES = 1 << 20
_SHM_DIR = Path("/dev/shm")
_LOG_LINE = re.compile(r"^([IWE])\d{4} [\d:.]+\s+\d+ [^\]]+\] ?(.*)$")
_HARMLESS = ("CudaDriverHelper", "NVML", "DCGM", "pinned", "CUDA")
_FAILED_LOAD = re.compile(r"failed to load '([^']+)' version (\d+): (.*)$")
_FAILED_POLL = re.compile(r"Poll failed for model directory '([^']+)': (.*)$")
_SERVING = re.compile(r"Started (HTTPService|GRPCInferenceService) at ")


class ServerProcess:
    """The ``tritonserver`` of one start: spawned once, then again on each restart, into one log.

    Args:
        workdir: The start's own temporary directory (the backend directory, by default the log); its name
            prefixes the shared-memory regions of the start's backend stubs.
        log_path: Where the server's output goes.

    Attributes:
        command: The server's command line.
        env: The server's environment.
        popen: The last server spawned, running or not (None before the first spawn).
        log_offset: Where the last spawn's output begins in the log.
    """

    def __init__(self, workdir: Path, log_path: Path) -> None:
        self.workdir = workdir
        self.log_path = log_path
        self.command: list[str] = []
        self.env: dict[str, str] = {}
        self.popen: subprocess.Popen[bytes] | None = None
        self.log_offset = 0
        self._reaper: subprocess.Popen[bytes] | None = None

    @property
    def shm_prefix(self) -> str:
        """Prefix of the stubs' shared-memory regions, per start, so that those a killed stub leaves can be
        found and removed."""
        return f"{self.workdir.name}_"

    @property
    def pid(self) -> int | None:
        """Process id of the server while it runs, else None."""
        popen = self.popen
        return popen.pid if popen is not None and popen.poll() is None else None

    def spawn(self, append: bool) -> None:
        """Run the server in a new process group, and a reaper that kills the group if this process dies.

        Args:
            append: Append to the log (a restart) instead of truncating it.

        Raises:
            ServerError: The server's binary could not be run.
        """
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with self.log_path.open("ab" if append else "wb") as log:
                self.log_offset = log.tell()
                self.popen = subprocess.Popen(
                    self.command,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self.env,
                    start_new_session=True,
                    close_fds=True,
                )
        except OSError as error:
            raise ServerError(f"could not run {self.command[0]}: {error}") from error
        reaper = [sys.executable, "-I", str(_REAPER), str(self.popen.pid), str(self.workdir)]
        try:
            self._reaper = subprocess.Popen(
                [*reaper, self.shm_prefix],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as error:
            logger.warning(
                "no reaper for Triton (%s): if this process is killed, stop pid %d yourself",
                error,
                self.popen.pid,
            )

    def wait_ready(self, ready: Callable[[], bool], timeout: float, stopping: threading.Event) -> None:
        """Wait until ``ready()`` (the server's readiness, asked by a client) holds.

        Raises:
            ServerError: The server exited, was not ready within ``timeout`` seconds (with Triton's reason
                from the log), or ``stopping`` was set.
        """
        assert self.popen is not None
        deadline = time.monotonic() + timeout
        while True:
            code = self.popen.poll()
            if code is not None:
                reason = failure_reason(self.log_path, self.log_offset)
                reason = reason or f"tritonserver exited with code {code}"
                raise ServerError(f"Triton did not start: {reason} (server log: {self.log_path})")
            if ready():
                return
            if time.monotonic() >= deadline:
                reason = failure_reason(self.log_path, self.log_offset)
                detail = f": {reason}" if reason else ""
                raise ServerError(
                    f"Triton was not ready within {timeout:g} s{detail} (server log: {self.log_path})"
                )
            if stopping.wait(0.1):
                raise ServerError("the Triton server was stopped while it was starting")

    def served_since_spawn(self) -> bool:
        """Whether the last server started its HTTP or gRPC endpoint (it got as far as taking requests)."""
        return any(_SERVING.search(line) for line in _log_lines(self.log_path, self.log_offset))

    def crash_reason(self, code: int) -> str:
        """Why the last server exited with ``code``, in a few words (see :func:`crash_reason`)."""
        return crash_reason(self.log_path, self.log_offset, code)

    def stop(self, grace: float) -> int | None:
        """Stop the server (SIGTERM, up to ``grace`` seconds, then SIGKILL of its group), release the
        reaper, remove the stubs' shared-memory regions; return the server's exit code (None if never
        spawned). After the server died, ``grace`` 0 kills its orphaned stubs at once."""
        code = terminate(self.popen, grace) if self.popen is not None else None
        self.release_reaper()
        self.remove_shm()
        return code

    def release_reaper(self) -> None:
        """Tell the reaper that the group was stopped here, so it exits without killing anything."""
        reaper, self._reaper = self._reaper, None
        if reaper is None:
            return
        with contextlib.suppress(OSError, ValueError):
            assert reaper.stdin is not None
            reaper.stdin.write(b"released")
            reaper.stdin.close()
        try:
            reaper.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            reaper.kill()
            reaper.wait()

    def remove_shm(self) -> None:
        """Remove the shared-memory regions of this start's backend stubs."""
        if _SHM_DIR.is_dir():
            for region in _SHM_DIR.glob(f"{self.shm_prefix}*"):
                region.unlink(missing_ok=True)

    def remove_workdir(self, keep_log: bool) -> None:
        """Delete the start's directory; with ``keep_log``, keep the log in it (and say where it is)."""
        if keep_log and self.log_path.parent == self.workdir:
            shutil.rmtree(self.workdir / "backends", ignore_errors=True)
            logger.info("the server log is kept at %s", self.log_path)
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _log_lines(log_path: Path, offset: int = 0) -> list[str]:
    """The last lines of the log written from byte ``offset`` on (at most about a megabyte)."""
    try:
        with log_path.open("rb") as handle:
            handle.seek(max(offset, log_path.stat().st_size - _LOG_TAIL_BYTES))
            return handle.read().decode("utf-8", errors="replace").splitlines()
    except OSError:
        return []


def crash_reason(log_path: Path, offset: int, code: int) -> str:
    """Why the server exited, in a few words: the signal or exit code, and an uncaught C++ exception."""
    if code < 0:
        try:
            how = f"killed by {signal.Signals(-code).name}"
        except ValueError:
            how = f"killed by signal {-code}"
    else:
        how = f"exit code {code}"
    uncaught = [m.group(1) for line in _log_lines(log_path, offset) if (m := _UNCAUGHT.search(line))]
    return f"{how}, uncaught {uncaught[-1]}" if uncaught else how


def failure_reason(log_path: Path, offset: int = 0) -> str:
    """Triton's own reason for not coming up, from its log, as one line ('' if none found)."""
    lines = _log_lines(log_path, offset)
    if not lines:
        return ""
    load_failures: dict[str, str] = {}
    last_error = ""
    first_error = ""
    for raw in lines:
        match = _LOG_LINE.match(raw.strip())
        if match is None:
            if raw.startswith("error: "):
                last_error = raw[len("error: ") :].strip()
            continue
        level, message = match.groups()
        message = message.strip()
        if message.startswith('"') and message.endswith('"') and len(message) > 1:
            message = message[1:-1]
        failed = _FAILED_LOAD.search(message)
        if failed:
            name, version, reason = failed.groups()
            load_failures.setdefault(name, f"model '{name}' version {version} failed to load: {reason}")
            continue
        failed = _FAILED_POLL.search(message)
        if failed:
            name, reason = failed.groups()
            load_failures.setdefault(name, f"model '{name}' failed to load: {reason}")
        if level == "E" and not first_error and not any(noise in message for noise in _HARMLESS):
            first_error = message
    if load_failures:
        return "; ".join(_clean(text) for text in load_failures.values())
    return _clean(first_error or last_error)


def _clean(message: str) -> str:
    """One line, without the Python traceback the backend stub appends after an ``At:`` line."""
    message = message.replace("\\n", "\n").replace('\\"', '"')
    message = re.split(r"\n\s*At:\s*\n", message, maxsplit=1)[0]
    return " ".join(message.split())


def terminate(process: subprocess.Popen[bytes], grace: float) -> int:
    """SIGTERM the server, wait up to ``grace`` seconds, then SIGKILL its whole process group.

    Returns:
        The server's exit code.
    """
    group = process.pid  # start_new_session=True: the server leads its own process group
    if process.poll() is None:
        logger.info("stopping Triton (pid %d)", process.pid)
        try:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            logger.warning("Triton (pid %d) did not exit within %.0f s; killing it", process.pid, grace)
        except ProcessLookupError:
            pass
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, signal.SIGKILL)
    code = process.wait()
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except (ProcessLookupError, PermissionError):
            return code
        time.sleep(0.05)
    logger.warning("processes of Triton's group %d are still present after SIGKILL", group)
    return code
