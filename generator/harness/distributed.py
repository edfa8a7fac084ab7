"""Locust's distributed mode on this machine: K ``locust --worker`` processes for one in-process master.

One Python process drives only so much load (the GIL: about 100 us of CPU per request, Locust included, so
roughly 10,000 requests per second per core), so ``--workers K`` starts K worker processes on the harness's
own locustfile, all bound to 127.0.0.1, and stops every one of them however the run ends.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from generator.errors import LoadTestError

__all__ = ["LOCUSTFILE", "LocalWorkers"]

logger = logging.getLogger(__name__)

LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
"""The locustfile the workers run (it ships inside the package)."""

_LOG_TAIL = 800


class LocalWorkers:
    """K Locust worker processes connected to a master on 127.0.0.1.

    Args:
        count: Number of workers.
        master_port: The master's port (Locust's ``--master-port``).
        locustfile: The locustfile the workers load.
    """

    def __init__(self, count: int, master_port: int, locustfile: Path = LOCUSTFILE) -> None:
        self.count = count
        self.master_port = master_port
        self.locustfile = locustfile
        self._processes: list[subprocess.Popen[bytes]] = []
        self._logdir: Path | None = None

    def start(self) -> None:
        """Start the worker processes (they connect to the master on their own)."""
        self._logdir = Path(tempfile.mkdtemp(prefix="tritongen-workers-"))
        command = [
            sys.executable,
            "-m",
            "locust",
            "--worker",
            "-f",
            str(self.locustfile),
            "--master-host",
            "127.0.0.1",
            "--master-port",
            str(self.master_port),
            "--loglevel",
            "WARNING",
        ]
        for index in range(self.count):
            with (self._logdir / f"worker-{index}.log").open("wb") as log:
                try:
                    process = subprocess.Popen(
                        command,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                        close_fds=True,
                    )
                except OSError as error:
                    raise LoadTestError(f"could not start a Locust worker ({error})") from error
            self._processes.append(process)
        logger.info("started %d Locust workers for the master on port %d", self.count, self.master_port)

    def wait_connected(self, runner: Any, timeout: float = 60.0) -> None:
        """Wait until every worker has connected to ``runner`` (a Locust ``MasterRunner``).

        Raises:
            LoadTestError: A worker exited, or not all connected within ``timeout`` seconds.
        """
        import gevent

        deadline = time.monotonic() + timeout
        while len(runner.clients.ready) < self.count:
            self.check_alive()
            if time.monotonic() > deadline:
                raise LoadTestError(
                    f"only {len(runner.clients.ready)} of {self.count} Locust workers connected within "
                    f"{timeout:g} s; see {self._logdir}"
                )
            gevent.sleep(0.2)

    def check_alive(self) -> None:
        """Raise if a worker process has exited.

        Raises:
            LoadTestError: Naming the worker, its exit code and the end of its log.
        """
        for index, process in enumerate(self._processes):
            code = process.poll()
            if code is not None:
                raise LoadTestError(
                    f"Locust worker {index} exited with code {code}: {self._tail(index) or 'no output'}"
                )

    def _tail(self, index: int) -> str:
        if self._logdir is None:
            return ""
        try:
            text = (self._logdir / f"worker-{index}.log").read_text(errors="replace")
        except OSError:
            return ""
        return " ".join(text[-_LOG_TAIL:].split())

    def stop(self, grace: float = 10.0) -> None:
        """Stop every worker: wait ``grace`` seconds for them to quit on the master's word, then signal.

        Idempotent; never raises.
        """
        deadline = time.monotonic() + grace
        for process in self._processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
        for process in self._processes:
            if process.poll() is None:
                _signal_group(process, signal.SIGTERM)
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    _signal_group(process, signal.SIGKILL)
                    process.wait()
        self._processes = []
        if self._logdir is not None:
            shutil.rmtree(self._logdir, ignore_errors=True)
            self._logdir = None

    def __enter__(self) -> LocalWorkers:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop(grace=10.0 if exc_type is None else 2.0)


def _signal_group(process: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)
