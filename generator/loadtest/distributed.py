"""Locust's distributed mode: worker processes for one in-process master, on this machine or on others.

One Python process drives only so much load (the GIL: about 100 us of CPU per request, Locust included, so
roughly 10,000 requests per second per core), so ``--workers K`` starts K worker processes on the harness's
own locustfile, all bound to 127.0.0.1, and stops every one of them however the run ends
(:class:`LocalWorkers`). ``--master --expect-workers N`` waits instead for N workers that other machines
start (:class:`RemoteWorkers`) with ``python -m generator loadtest-worker --master-host H``
(:func:`worker_command`, after :func:`wait_for_master`) or plain ``locust --worker -f`` on :data:`LOCUSTFILE`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from generator.core.errors import LoadTestError

__all__ = [
    "DEFAULT_MASTER_PORT",
    "LOCUSTFILE",
    "LocalWorkers",
    "RemoteWorkers",
    "wait_for_master",
    "worker_command",
]

logger = logging.getLogger(__name__)

LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
"""The locustfile the workers run (it ships inside the package)."""

DEFAULT_MASTER_PORT = 5557
"""Locust's own default ``--master-port``."""

_LOG_TAIL = 800


def worker_command(
    master_host: str, master_port: int = DEFAULT_MASTER_PORT, loglevel: str = "WARNING"
) -> list[str]:
    """The command of one Locust worker on the packaged locustfile, for a master at ``master_host:master_port``."""
    return [
        sys.executable,
        "-m",
        "locust",
        "--worker",
        "-f",
        str(LOCUSTFILE),
        "--master-host",
        master_host,
        "--master-port",
        str(master_port),
        "--loglevel",
        loglevel,
    ]


def wait_for_master(host: str, port: int, timeout: float) -> None:
    """Wait until something accepts connections at ``host:port`` (the master's port), for ``timeout`` seconds.

    Locust's own worker retries for five minutes and then fails with a traceback; this check lets the worker
    command give up sooner, with one line.

    Raises:
        LoadTestError: Nothing accepted a connection in time.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=min(2.0, max(timeout, 0.1))):
                return
        except OSError as error:
            reason = error.strerror or str(error) or type(error).__name__
        if time.monotonic() >= deadline:
            raise LoadTestError(
                f"no Locust master at {host}:{port} after {timeout:g} s ({reason}); start `python -m "
                f"generator loadtest --master --expect-workers N --master-bind-host ADDRESS` there first, "
                f"or fix --master-host/--master-port"
            )
        time.sleep(0.5)


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
        self.bind_host = "127.0.0.1"
        self.locustfile = locustfile
        self._processes: list[subprocess.Popen[bytes]] = []
        self._logdir: Path | None = None

    def start(self) -> None:
        """Start the worker processes (they connect to the master on their own)."""
        self._logdir = Path(tempfile.mkdtemp(prefix="tritongen-workers-"))
        command = worker_command("127.0.0.1", self.master_port)
        command[command.index("-f") + 1] = str(self.locustfile)
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


class RemoteWorkers:
    """N Locust workers that other machines start, for a master bound to ``bind_host:master_port``.

    The same duck type as :class:`LocalWorkers` for the session: it starts nothing, waits for the
    workers to connect, and treats a worker that left or stopped sending heartbeats as dead.

    Args:
        count: Number of workers to wait for.
        bind_host: The address the master listens on.
        master_port: The master's port.
        max_wait: Seconds to wait for all of them to connect.
    """

    def __init__(self, count: int, bind_host: str, master_port: int, max_wait: float) -> None:
        self.count = count
        self.bind_host = bind_host
        self.master_port = master_port
        self.max_wait = max_wait
        self._runner: Any = None

    def hint(self) -> str:
        """How to start one worker for this master (the host is this machine's address on the bound network)."""
        host = self.bind_host if self.bind_host not in ("0.0.0.0", "*", "::", "") else "THIS_HOST"
        return f"python -m generator loadtest-worker --master-host {host} --master-port {self.master_port}"

    def wait_connected(self, runner: Any, timeout: float | None = None) -> None:
        """Wait until ``count`` workers are ready on ``runner`` (a Locust ``MasterRunner``).

        Raises:
            LoadTestError: Not all connected within ``timeout`` (default ``max_wait``) seconds.
        """
        import gevent

        self._runner = runner
        limit = self.max_wait if timeout is None else timeout
        deadline = time.monotonic() + limit
        while len(runner.clients.ready) < self.count:
            if time.monotonic() > deadline:
                raise LoadTestError(
                    f"only {len(runner.clients.ready)} of {self.count} Locust workers connected to "
                    f"{self.bind_host}:{self.master_port} within {limit:g} s; start each with `{self.hint()}`"
                )
            gevent.sleep(0.2)

    def check_alive(self) -> None:
        """Raise if a worker has left the master or stopped sending heartbeats.

        Raises:
            LoadTestError: Saying how many workers are still there.
        """
        runner = self._runner
        if runner is None:
            return
        present = len(runner.clients) - len(runner.clients.missing)
        if present < self.count:
            raise LoadTestError(
                f"a Locust worker left the run: {present} of {self.count} are still connected"
            )

    def stop(self, grace: float = 0.0) -> None:
        """Nothing to stop here: the master's quit message ends the workers on their machines."""
        self._runner = None


def _signal_group(process: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)
