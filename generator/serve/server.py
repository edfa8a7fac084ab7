"""Run a real Triton Inference Server on this machine, CPU only, from the ``nvidia-pytriton`` wheel.

:class:`EmbeddedServer` is the server's lifecycle behind one context manager: each start checks what the
launch needs and lays it out (:mod:`~generator.serve.launch`: the wheel's ``tritonserver``, a private
backend directory with this package's Python-based ONNX Runtime backend under the name ``onnxruntime``, the
command line and environment), runs the server in a process group of its own beside a reaper
(:mod:`~generator.serve.process`), waits until ``/v2/health/ready`` answers, reports Triton's own reason when
the server does not come up, and hands it to a supervisor (:mod:`~generator.serve.supervisor`) that restarts
it when it dies and reloads a model whose backend stub died. It binds to loopback by default.

Triton is started without a response cache: its core caches a backend's failed response as an empty
success keyed on the input bytes alone, so models whose config enables ``response_cache`` are served
uncached (and a warning says so).

Stopping (:meth:`EmbeddedServer.stop`, context exit, interpreter exit) unloads every model first, so new
requests fail at once with Triton's "unknown model" error while in-flight ones finish, then stops the
whole process group (server and stubs). The reaper (:mod:`generator.serve.reaper`) kills the group if the
owning process dies without stopping it.

Example::

    with EmbeddedServer("model_repository", http_port=find_free_port()) as server:
        client = tritonclient.http.InferenceServerClient(server.endpoints.http)
"""

from __future__ import annotations

import atexit
import logging
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import psutil

from generator.core.errors import ServerError
from generator.push.check import check_pushed
from generator.serve.control import Target
from generator.serve.launch import (
    TRITON_EXIT_SECONDS,
    TritonInstall,
    check_ports,
    check_repository,
    client_host,
    command_line,
    environment,
    is_remote_repository,
    lay_out_backends,
    libpython_dir,
    locate_triton,
    repository_argument,
)
from generator.serve.process import ServerProcess, failure_reason
from generator.serve.supervisor import Supervisor

__all__ = ["EmbeddedServer", "Endpoints"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Endpoints:
    """Where a running server answers.

    Attributes:
        http: ``host:port`` of the HTTP/REST endpoint, as ``tritonclient.http`` wants it.
        grpc: ``host:port`` of the gRPC endpoint, as ``tritonclient.grpc`` wants it.
        metrics: Full URL of the Prometheus metrics page.
    """

    http: str
    grpc: str
    metrics: str


class EmbeddedServer:
    """A ``tritonserver`` process serving one model repository, bound to ``address``.

    Args:
        repository: The model repository directory, or an object storage URI Triton reads itself
            (``s3://bucket/prefix``, ``s3://http://HOST:PORT/bucket/prefix`` for an S3-compatible
            endpoint; credentials from the AWS variables of this process's environment).
        http_port: HTTP/REST port.
        grpc_port: gRPC port.
        metrics_port: Prometheus metrics port.
        address: Address every endpoint binds to; loopback by default.
        startup_timeout: Seconds to wait for the server and all its models to become ready.
        log_path: Where the server's output goes (truncated on each start, appended to on each restart).
            By default a file in the per-start temporary directory, which :meth:`stop` deletes; it is kept
            when start fails or the server crashed.
        exit_timeout: Seconds :meth:`stop` waits for in-flight requests to finish.
        extra_args: More ``tritonserver`` command-line arguments, appended last.
        supervise: Restart the server when it dies and reload a model whose backend stub dies. Without
            it, a dead server is reported by :meth:`wait` and :attr:`failure`.
        immediate_restarts: Crashes within a minute that are restarted at once; each later one waits a
            back-off that doubles from 1 s up to 30 s. The server is restarted for as long as it comes
            back up.
    """

    def __init__(
        self,
        repository: str | Path,
        *,
        http_port: int = 8000,
        grpc_port: int = 8001,
        metrics_port: int = 8002,
        address: str = "127.0.0.1",
        startup_timeout: float = 120.0,
        log_path: Path | None = None,
        exit_timeout: int = 30,
        extra_args: Sequence[str] = (),
        supervise: bool = True,
        immediate_restarts: int = 5,
    ) -> None:
        remote = is_remote_repository(repository)
        self.repository: Path | str = str(repository) if remote else Path(repository)
        self.address = address
        self.ports = {"HTTP": int(http_port), "gRPC": int(grpc_port), "metrics": int(metrics_port)}
        self.startup_timeout = float(startup_timeout)
        self.exit_timeout = int(exit_timeout)
        self.extra_args = tuple(str(a) for a in extra_args)
        self.supervise = bool(supervise)
        self.immediate_restarts = int(immediate_restarts)
        self._requested_log = Path(log_path) if log_path is not None else None
        self._log_path: Path | None = self._requested_log
        self._run: ServerProcess | None = None  # the current start's process, until stopped
        self._supervisor: Supervisor | None = None  # the last start's, kept for wait() and failure
        self._lock = threading.RLock()
        host = client_host(address)
        self._endpoints = Endpoints(
            http=f"{host}:{self.ports['HTTP']}",
            grpc=f"{host}:{self.ports['gRPC']}",
            metrics=f"http://{host}:{self.ports['metrics']}/metrics",
        )
        self._target = Target("http", host.strip("[]"), self.ports["HTTP"])

    @property
    def endpoints(self) -> Endpoints:
        """Where the server answers (known before it starts)."""
        return self._endpoints

    @property
    def pid(self) -> int | None:
        """Process id of ``tritonserver`` while it runs, else None."""
        run = self._run
        return run.pid if run is not None else None

    @property
    def log_path(self) -> Path:
        """The server log of the current or last start.

        Raises:
            ServerError: No ``log_path`` was given and the server was never started.
        """
        if self._log_path is None:
            raise ServerError("the server has no log yet: it has not been started")
        return self._log_path

    @property
    def failure(self) -> str | None:
        """Why the server is down for good (it died and was not restarted), as one line; else None."""
        supervisor = self._supervisor
        return supervisor.failure if supervisor is not None else None

    @property
    def restarts(self) -> int:
        """How often the watcher restarted the server since the last :meth:`start`."""
        supervisor = self._supervisor
        return supervisor.restarts if supervisor is not None else 0

    @property
    def reloads(self) -> int:
        """How often the watcher reloaded a model whose backend stub died since the last :meth:`start`."""
        supervisor = self._supervisor
        return supervisor.reloads if supervisor is not None else 0

    def stub_count(self) -> int:
        """Backend stub processes alive now (one per Python-backend model instance; 0 when not running)."""
        pid = self.pid
        if pid is None:
            return 0
        try:
            return len(psutil.Process(pid).children(recursive=False))
        except psutil.Error:
            return 0

    def log_size(self) -> int:
        """Bytes in the server log now: mark it before an action, then ask :meth:`reason_since` after."""
        try:
            return self.log_path.stat().st_size
        except (OSError, ServerError):
            return 0

    def reason_since(self, offset: int) -> str:
        """Triton's own reason for a failure it logged after byte ``offset``, as one line ('' if none)."""
        try:
            return failure_reason(self.log_path, offset)
        except ServerError:
            return ""

    def is_running(self) -> bool:
        """Whether the ``tritonserver`` process is alive."""
        return self.pid is not None

    def start(self) -> Endpoints:
        """Start ``tritonserver``, wait until it and all its models are ready, and start supervising it.

        Returns:
            The endpoints to connect to.

        Raises:
            ServerError: The server could not be started or did not become ready; the message carries
                Triton's reason and the log path. Nothing is left running.
            StorageError: An object-storage repository whose push did not complete, or whose store
                cannot be read (see :func:`generator.push.check.check_pushed`).
        """
        with self._lock:
            if self.is_running():
                raise ServerError(f"the Triton server is already running (pid {self.pid})")
            self.stop()
            install = locate_triton()
            stub = install.stub_for()
            libpython = libpython_dir()
            check_repository(self.repository)
            if isinstance(self.repository, str):
                check_pushed(self.repository)  # else Triton serves whatever an interrupted push left
            check_ports(self.address, self.ports)

            workdir = Path(tempfile.mkdtemp(prefix="tritongen-triton-"))
            self._log_path = self._requested_log or workdir / "tritonserver.log"
            run = self._run = ServerProcess(workdir, self._log_path)
            supervisor = self._supervisor = Supervisor(
                run,
                self._target,
                repository=repository_argument(self.repository),
                supervise=self.supervise,
                immediate_restarts=self.immediate_restarts,
                startup_timeout=self.startup_timeout,
                exit_timeout=self.exit_timeout,
            )
            try:
                self._launch(run, install, stub, libpython)
                supervisor.wait_ready()
            except BaseException:
                self._release(keep_log=True, drain=False)
                raise
            assert run.popen is not None
            logger.info("Triton is ready (pid %d): %s", run.popen.pid, self._endpoints)
            supervisor.warn_uncached()
            supervisor.watch()
            return self._endpoints

    def stop(self) -> None:
        """Stop the server and its stub processes and delete the temporary directory. Idempotent.

        Unloads every model first, so that new requests are refused at once while in-flight ones finish
        (up to ``exit_timeout`` seconds), then SIGTERMs the server and SIGKILLs whatever is left of its
        process group. The log is kept, and its path logged, when the server had crashed.
        """
        if self._supervisor is not None:
            self._supervisor.halt()
        with self._lock:
            self._release(keep_log=self._supervisor is not None and self._supervisor.crashed)

    def wait(self) -> int:
        """Block until the server is down for good and return the exit code of its last process.

        Down for good means stopped with :meth:`stop`, or dead and not restarted (then :attr:`failure`
        says why). With ``supervise``, a crash the watcher recovers from does not end the wait.

        Raises:
            ServerError: The server was never started.
        """
        supervisor = self._supervisor
        if supervisor is not None:
            while not supervisor.down.wait(0.5):
                pass
        if supervisor is None or supervisor.returncode is None:
            raise ServerError("the Triton server has not been started")
        return supervisor.returncode

    def __enter__(self) -> EmbeddedServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _launch(self, run: ServerProcess, install: TritonInstall, stub: Path, libpython: Path | None) -> None:
        """Lay out the start's backends, build its command line and environment, and spawn the server."""
        backends = lay_out_backends(install, stub, run.workdir / "backends")
        run.command = command_line(
            install,
            backends,
            repository=self.repository,
            address=self.address,
            ports=self.ports,
            exit_timeout=self.exit_timeout,
            shm_prefix=run.shm_prefix,
            extra_args=self.extra_args,
        )
        run.env = environment(install, libpython)
        logger.info("starting Triton: %s", " ".join(run.command))
        run.spawn(append=False)
        _RUNNING.add(self)

    def _release(self, keep_log: bool = False, drain: bool = True) -> None:
        """Stop the process group (if any), delete the temporary directory; the server is down for good."""
        run, self._run = self._run, None
        _RUNNING.discard(self)
        supervisor = self._supervisor
        if run is not None and supervisor is not None:
            if drain and run.pid is not None:
                supervisor.drain()
            code = run.stop(TRITON_EXIT_SECONDS + 10.0)
            if code is not None and supervisor.failure is None:
                supervisor.returncode = code
            run.remove_workdir(keep_log)
        if supervisor is not None:
            supervisor.down.set()


_RUNNING: set[EmbeddedServer] = set()


@atexit.register
def _stop_all() -> None:
    for server in list(_RUNNING):
        try:
            server.stop()
        except Exception:  # best effort at interpreter exit
            logger.exception("could not stop the Triton server at exit")
