"""Run a real Triton Inference Server on this machine, CPU only, from the ``nvidia-pytriton`` wheel.

The wheel carries a complete ``tritonserver`` build with only the Python backend. :class:`EmbeddedServer`
prepares a private backend directory per start (the Python backend, the stub for the running interpreter,
and this package's Python-based ONNX Runtime backend under the name ``onnxruntime``), so an ordinary model
repository with ``platform: "onnxruntime_onnx"`` configs loads unchanged. It binds to loopback by default,
waits until ``/v2/health/ready`` answers, reports Triton's own reason when the server does not come up, and
stops the whole process group (server and stubs) on :meth:`EmbeddedServer.stop`, on context exit, and at
interpreter exit.

While it runs, a watcher thread supervises it (Triton 2.51 has neither a request-size limit nor a way to
restart a dead backend stub):

* if ``tritonserver`` dies (one HTTP request declaring a shape such as ``[2147483648, 64]`` makes this
  build abort with ``std::bad_alloc``), the outage is logged and the server is restarted on the same ports,
  its output appended to the same log; after ``immediate_restarts`` crashes within a minute each restart
  waits a back-off (1 s, doubling, at most 30 s), and it is restarted for as long as it comes back up;
* if a model's Python backend stub dies, Triton keeps reporting the model ready while the requests routed
  to that instance fail, so the model is reloaded through Triton's model-control API (models are loaded
  with ``--model-control-mode=explicit --load-model=*``); if the reload fails, the model is unloaded so that
  its readiness tells the truth. The previous load's healthy stubs, which Triton never stops once a
  request failed on the dead one, are killed after ``exit_timeout`` seconds.

Triton is started without a response cache: its core caches a backend's failed response as an empty
success keyed on the input bytes alone, so models whose config enables ``response_cache`` are served
uncached (and a warning says so).

Stopping unloads every model first, so new requests fail at once with Triton's "unknown model" error while
in-flight ones finish, then stops the process. A small reaper process (:mod:`generator.serve.reaper`) kills the
server's process group if the owning process dies without stopping it.

Example::

    with EmbeddedServer("model_repository", http_port=find_free_port()) as server:
        client = tritonclient.http.InferenceServerClient(server.endpoints.http)
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes.util
import importlib.util
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import psutil

from generator.core.errors import ServerError
from generator.core.uris import S3_ENDPOINT
from generator.push.check import check_pushed
from generator.serve.control import ServerControl, Target, release_thread_hub

__all__ = ["EmbeddedServer", "Endpoints", "TritonInstall", "find_free_port", "launch_files", "locate_triton"]

logger = logging.getLogger(__name__)

_INSTALL_HINT = "install it with: pip install nvidia-pytriton"
_STUB_NAME = "triton_python_backend_stub"
#: The Python-based backend that serves ONNX (through ONNX Runtime) and TorchScript (through libtorch) models.
_CPU_BACKEND = Path(__file__).resolve().parent / "backends" / "onnx_torchscript_model.py"
_REAPER = Path(__file__).resolve().parent / "reaper.py"
_WATCH_SECONDS = 0.25
_RESTART_WINDOW_SECONDS = 60.0
# Triton 2.51 waits up to its exit timeout for idle keep-alive HTTP connections to close even when nothing
# is in flight; stop() drains by unloading the models first, so Triton itself needs only a short one.
_TRITON_EXIT_SECONDS = 3
_BUSY_STATES = ("READY", "LOADING", "UNLOADING")
_UNCAUGHT = re.compile(r"terminate called after throwing an instance of '([^']+)'")
_LOG_TAIL_BYTES = 1 << 20
_SHM_DIR = Path("/dev/shm")
_LOG_LINE = re.compile(r"^([IWE])\d{4} [\d:.]+\s+\d+ [^\]]+\] ?(.*)$")
_HARMLESS = ("CudaDriverHelper", "NVML", "DCGM", "pinned", "CUDA")
_FAILED_LOAD = re.compile(r"failed to load '([^']+)' version (\d+): (.*)$")
_FAILED_POLL = re.compile(r"Poll failed for model directory '([^']+)': (.*)$")
_SERVING = re.compile(r"Started (HTTPService|GRPCInferenceService) at ")
_BACKOFF_MAX_SECONDS = 30.0


def _backoff(crashes: int, immediate: int) -> float:
    """Seconds to wait before a restart, after ``crashes`` crashes within the restart window.

    The first ``immediate`` restart at once; each later one waits twice as long as the one before, from
    1 s up to 30 s, so a server that keeps crashing does not spin while a client can still be served
    between crashes.
    """
    beyond = crashes - max(immediate, 0)
    return 0.0 if beyond <= 0 else min(_BACKOFF_MAX_SECONDS, 2.0 ** (beyond - 1))


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


@dataclass(frozen=True)
class TritonInstall:
    """The files of the Triton build inside the ``nvidia-pytriton`` wheel.

    Attributes:
        binary: The ``tritonserver`` executable.
        backends_dir: Directory holding ``python/`` (the Python backend).
        stubs_dir: Directory holding one ``3.X/triton_python_backend_stub`` per Python version.
        caches_dir: Directory holding ``local/`` (the response cache implementation).
        libs_dir: The wheel's bundled shared libraries (``nvidia_pytriton.libs``).
    """

    binary: Path
    backends_dir: Path
    stubs_dir: Path
    caches_dir: Path
    libs_dir: Path

    def stub_for(self, version: tuple[int, int] | None = None) -> Path:
        """Return the Python backend stub for ``version`` (default: the running interpreter).

        Raises:
            ServerError: The wheel has no stub for that Python version.
        """
        major, minor = version or sys.version_info[:2]
        stub = self.stubs_dir / f"{major}.{minor}" / _STUB_NAME
        if not stub.is_file():
            have = sorted(p.name for p in self.stubs_dir.iterdir() if (p / _STUB_NAME).is_file())
            raise ServerError(
                f"the Triton wheel has no Python backend stub for Python {major}.{minor} "
                f"(it has {', '.join(have) or 'none'}); run tritongen with one of those Python versions"
            )
        return stub


#: Repository locations Triton reads itself (S3, Google Cloud Storage, Azure Storage).
REMOTE_SCHEMES = ("s3://", "gs://", "as://")


def is_remote_repository(repository: str | Path) -> bool:
    """Whether ``repository`` is an object storage URI Triton downloads from, not a local directory."""
    return isinstance(repository, str) and repository.lower().startswith(REMOTE_SCHEMES)


def _remote_endpoint(repository: str) -> tuple[str, str, int] | None:
    """(what, host, port) of the store a repository URI reads from, where it is not the cloud's own.

    S3 names it in the URI (``s3://http://HOST:PORT/...``); for ``gs://`` Triton's GCS client reads an
    emulator from ``CLOUD_STORAGE_EMULATOR_ENDPOINT``.
    """
    match = S3_ENDPOINT.match(repository)
    if match is not None:
        return "S3 endpoint", match.group(2), int(match.group(3))
    emulator = os.environ.get("CLOUD_STORAGE_EMULATOR_ENDPOINT", "")
    if repository.lower().startswith("gs://") and emulator:
        try:
            parsed = urllib.parse.urlsplit(emulator if "://" in emulator else f"http://{emulator}")
            port = parsed.port or (443 if parsed.scheme == "https" else 80)
            host = parsed.hostname
        except ValueError:  # a bad port, an unclosed '['
            host = port = None
        if not host or port is None:
            raise ServerError(
                f"CLOUD_STORAGE_EMULATOR_ENDPOINT '{emulator}' is not an http://HOST:PORT address; fix or unset it"
            )
        return "GCS emulator (CLOUD_STORAGE_EMULATOR_ENDPOINT)", host, port
    return None


def check_remote_endpoint(repository: str, timeout: float = 3.0) -> None:
    """Fail fast when the store of an ``s3://HOST:PORT/...`` URI (or a GCS emulator) refuses connections.

    Triton itself retries an unreachable endpoint for about a minute before it gives up.

    Raises:
        ServerError: Nothing listens at the endpoint.
    """
    endpoint = _remote_endpoint(repository)
    if endpoint is None:
        return
    what, host, port = endpoint
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except (OSError, UnicodeError) as error:  # UnicodeError: a host name IDNA cannot encode
        raise ServerError(
            f"cannot reach the {what} {host}:{port} of {repository} ({getattr(error, 'strerror', None) or error}); "
            "check that the store is running at that host and port"
        ) from error


def locate_triton() -> TritonInstall:
    """Find the Triton server files of the installed ``nvidia-pytriton`` wheel without importing it.

    Raises:
        ServerError: The wheel is not installed or is missing files.
    """
    spec = importlib.util.find_spec("pytriton")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise ServerError(f"the Triton server (package 'nvidia-pytriton') is not installed; {_INSTALL_HINT}")
    package = Path(locations[0])
    root = package / "tritonserver"
    install = TritonInstall(
        binary=root / "bin" / "tritonserver",
        backends_dir=root / "backends",
        stubs_dir=root / "python_backend_stubs",
        caches_dir=root / "caches",
        libs_dir=package.parent / "nvidia_pytriton.libs",
    )
    for path in (install.backends_dir / "python", install.stubs_dir, install.caches_dir, install.libs_dir):
        if not path.is_dir():
            raise ServerError(f"the nvidia-pytriton install is incomplete ({path} is missing); reinstall it")
    if not os.access(install.binary, os.X_OK):
        raise ServerError(f"{install.binary} is missing or not executable; reinstall nvidia-pytriton")
    return install


def find_free_port(address: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on ``address`` right now (another process may still take it)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


def _port_in_use(address: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR: a port only in TIME_WAIT is usable by the server, so it does not count as taken.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address, port))
        except OSError:
            return True
    return False


def _libpython_dir() -> Path | None:
    """Return the directory of the interpreter's shared libpython to put on LD_LIBRARY_PATH.

    Raises:
        ServerError: The interpreter has no shared libpython, which the Python backend stub links.
    """
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    soname = sysconfig.get_config_var("INSTSONAME") or f"libpython{version}.so.1.0"
    if not soname.endswith(".so") and ".so." not in soname:  # static builds report libpython3.X.a
        soname = f"libpython{version}.so.1.0"
    libdir = sysconfig.get_config_var("LIBDIR")
    multiarch = sysconfig.get_config_var("MULTIARCH")
    candidates = [Path(libdir)] if libdir else []
    if libdir and multiarch:
        candidates.append(Path(libdir) / multiarch)
    for directory in candidates:
        if (directory / soname).exists():
            return directory
    if ctypes.util.find_library(f"python{version}"):
        return None  # on the system loader path already
    raise ServerError(
        f"this Python ({sys.executable}) has no shared library {soname}, which Triton's Python backend "
        f"needs; install it (Debian/Ubuntu: apt install libpython{version}) or use a Python built with "
        f"--enable-shared (pyenv: PYTHON_CONFIGURE_OPTS=--enable-shared pyenv install {version})"
    )


def _client_host(address: str) -> str:
    if address in ("", "0.0.0.0"):
        return "127.0.0.1"
    if address == "::":
        return "[::1]"
    return f"[{address}]" if ":" in address else address


def _log_lines(log_path: Path, offset: int = 0) -> list[str]:
    """The last lines of the log written from byte ``offset`` on (at most about a megabyte)."""
    try:
        with log_path.open("rb") as handle:
            handle.seek(max(offset, log_path.stat().st_size - _LOG_TAIL_BYTES))
            return handle.read().decode("utf-8", errors="replace").splitlines()
    except OSError:
        return []


def _crash_reason(log_path: Path, offset: int, code: int) -> str:
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


def _failure_reason(log_path: Path, offset: int = 0) -> str:
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


def _lay_out_backends(install: TritonInstall, stub: Path, backends: Path) -> Path:
    """The backend directory the server runs with: the Python backend and tritongen's CPU backend."""
    python_dir = backends / "python"
    python_dir.mkdir(parents=True)
    for item in (install.backends_dir / "python").iterdir():
        if item.is_file():
            shutil.copy2(item, python_dir / item.name)
    shutil.copy2(stub, python_dir / _STUB_NAME)
    if not _CPU_BACKEND.is_file():
        raise ServerError(
            f"tritongen's ONNX/TorchScript backend ({_CPU_BACKEND}) is missing; reinstall tritongen"
        )
    for name in ("onnxruntime", "pytorch"):  # platforms onnxruntime_onnx and pytorch_libtorch
        (backends / name).mkdir()
        shutil.copy2(_CPU_BACKEND, backends / name / "model.py")
    return backends


def launch_files(directory: Path) -> tuple[Path, Path, dict[str, str]]:
    """What another launcher (Model Analyzer's, a script) needs to run the bundled ``tritonserver`` as the
    embedded server does: the binary, a backend directory laid out in ``directory``, and the environment.

    Raises:
        ServerError: The server or its backends are missing.
    """
    install = locate_triton()
    backends = _lay_out_backends(install, install.stub_for(), Path(directory) / "backends")
    return install.binary, backends, EmbeddedServer._environment(install, _libpython_dir())


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

    Attributes:
        restarts: How often the watcher restarted the server since the last :meth:`start`.
        reloads: How often the watcher reloaded a model whose backend stub died since the last start.
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
        self._log_offset = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._reaper: subprocess.Popen[bytes] | None = None
        self._command_line: list[str] = []
        self._env: dict[str, str] = {}
        self._returncode: int | None = None
        self._workdir: Path | None = None
        self._lock = threading.RLock()
        self._watcher: threading.Thread | None = None
        self._stopping = threading.Event()
        self._down = threading.Event()
        self._down.set()
        self._crash_times: list[float] = []
        self._crashed = False
        self._failure: str | None = None
        self._stubs: dict[int, str] = {}  # pid -> model of the live backend stubs seen
        self._handled: set[int] = set()  # dead stubs already acted on
        self._retired: dict[int, float] = {}  # pid -> deadline of the stubs of a reloaded model's old load
        self.restarts = 0
        self.reloads = 0
        host = _client_host(address)
        self._endpoints = Endpoints(
            http=f"{host}:{self.ports['HTTP']}",
            grpc=f"{host}:{self.ports['gRPC']}",
            metrics=f"http://{host}:{self.ports['metrics']}/metrics",
        )
        self._control_target = Target("http", host.strip("[]"), self.ports["HTTP"])

    @property
    def endpoints(self) -> Endpoints:
        """Where the server answers (known before it starts)."""
        return self._endpoints

    @property
    def pid(self) -> int | None:
        """Process id of ``tritonserver`` while it runs, else None."""
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

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
        return self._failure

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
            return _failure_reason(self.log_path, offset)
        except ServerError:
            return ""

    def is_running(self) -> bool:
        """Whether the ``tritonserver`` process is alive."""
        process = self._process
        return process is not None and process.poll() is None

    def start(self) -> Endpoints:
        """Start ``tritonserver``, wait until it and all its models are ready, and start supervising it.

        Returns:
            The endpoints to connect to.

        Raises:
            ServerError: The server could not be started or did not become ready; the message carries
                Triton's reason and the log path. Nothing is left running.
            StorageError: An object-storage repository whose push did not complete, or whose store
                cannot be read (see :func:`generator.push.storage.check_pushed`).
        """
        with self._lock:
            if self.is_running():
                raise ServerError(f"the Triton server is already running (pid {self.pid})")
            self.stop()
            install = locate_triton()
            stub = install.stub_for()
            libpython = _libpython_dir()
            if isinstance(self.repository, Path) and not self.repository.is_dir():
                raise ServerError(
                    f"the model repository {self.repository} does not exist or is not a directory"
                )
            if isinstance(self.repository, str):
                check_remote_endpoint(self.repository)
                check_pushed(self.repository)  # else Triton serves whatever an interrupted push left
            flags = {"HTTP": "--http-port", "gRPC": "--grpc-port", "metrics": "--metrics-port"}
            for kind, port in self.ports.items():
                if _port_in_use(self.address, port):
                    raise ServerError(
                        f"port {port} ({kind}) is already in use on {self.address}; "
                        f"pick another with {flags[kind]}"
                    )

            self._workdir = Path(tempfile.mkdtemp(prefix="tritongen-triton-"))
            self._log_path = self._requested_log or self._workdir / "tritonserver.log"
            self._stopping.clear()
            self._down.clear()
            self._failure, self._crashed, self._crash_times = None, False, []
            self.restarts = self.reloads = 0
            self._returncode = None
            try:
                self._command_line = self._command(install, self._prepare_backends(install, stub))
                self._env = self._environment(install, libpython)
                logger.info("starting Triton: %s", " ".join(self._command_line))
                self._spawn(append=False)
                self._wait_ready()
            except BaseException:
                self._release(keep_log=True, drain=False)
                self._down.set()
                raise
            assert self._process is not None
            logger.info("Triton is ready (pid %d): %s", self._process.pid, self._endpoints)
            self._warn_uncached()
            self._stubs.clear()
            self._handled.clear()
            self._retired.clear()
            self._dead_stubs(self._process.pid)  # know every stub before one can die unseen
            self._watcher = threading.Thread(target=self._watch, name="tritonserver-watcher", daemon=True)
            self._watcher.start()
            return self._endpoints

    def stop(self) -> None:
        """Stop the server and its stub processes and delete the temporary directory. Idempotent.

        Unloads every model first, so that new requests are refused at once while in-flight ones finish
        (up to ``exit_timeout`` seconds), then SIGTERMs the server and SIGKILLs whatever is left of its
        process group. The log is kept, and its path logged, when the server had crashed.
        """
        self._stopping.set()
        watcher = self._watcher
        if watcher is not None and watcher is not threading.current_thread():
            watcher.join()
        with self._lock:
            self._watcher = None
            self._release(keep_log=self._crashed)
            self._down.set()

    def wait(self) -> int:
        """Block until the server is down for good and return the exit code of its last process.

        Down for good means stopped with :meth:`stop`, or dead and not restarted (then :attr:`failure`
        says why). With ``supervise``, a crash the watcher recovers from does not end the wait.

        Raises:
            ServerError: The server was never started.
        """
        while not self._down.wait(0.5):
            pass
        if self._returncode is None:
            raise ServerError("the Triton server has not been started")
        return self._returncode

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

    def _spawn(self, append: bool) -> None:
        """Run ``tritonserver`` in a new process group, and a reaper that kills the group if we die."""
        assert self._log_path is not None and self._workdir is not None
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with self._log_path.open("ab" if append else "wb") as log:
                self._log_offset = log.tell()
                self._process = subprocess.Popen(
                    self._command_line,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self._env,
                    start_new_session=True,
                    close_fds=True,
                )
        except OSError as error:
            raise ServerError(f"could not run {self._command_line[0]}: {error}") from error
        _RUNNING.add(self)
        reaper = [sys.executable, "-I", str(_REAPER), str(self._process.pid), str(self._workdir)]
        try:
            self._reaper = subprocess.Popen(
                [*reaper, self._shm_prefix()],
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
                self._process.pid,
            )

    def _prepare_backends(self, install: TritonInstall, stub: Path) -> Path:
        assert self._workdir is not None
        return _lay_out_backends(install, stub, self._workdir / "backends")

    def _command(self, install: TritonInstall, backends: Path) -> list[str]:
        return [
            str(install.binary),
            f"--model-repository={self._repository_argument()}",
            f"--backend-directory={backends}",
            f"--http-address={self.address}",
            f"--http-port={self.ports['HTTP']}",
            f"--grpc-address={self.address}",
            f"--grpc-port={self.ports['gRPC']}",
            f"--metrics-address={self.address}",
            f"--metrics-port={self.ports['metrics']}",
            "--allow-gpu-metrics=false",
            # No --cache-config: Triton 2.51 caches a backend's failed response as an empty success (see
            # _warn_uncached), so models that ask for the response cache load and are served uncached.
            f"--exit-timeout-secs={min(self.exit_timeout, _TRITON_EXIT_SECONDS)}",
            # Every model loads at start-up as in the default mode; explicit control lets the watcher
            # reload a model whose stub died and stop() unload models before stopping.
            "--model-control-mode=explicit",
            "--load-model=*",
            f"--backend-config=python,shm-region-prefix-name={self._shm_prefix()}",
            *self.extra_args,
        ]

    def _repository_argument(self) -> str:
        if isinstance(self.repository, Path):
            return str(self.repository.resolve())
        return self.repository  # Triton downloads a remote repository's models into a local directory

    def _shm_prefix(self) -> str:
        # Per start, so regions a killed stub leaves in /dev/shm can be found and removed on stop.
        assert self._workdir is not None
        return f"{self._workdir.name}_"

    @staticmethod
    def _environment(install: TritonInstall, libpython: Path | None) -> dict[str, str]:
        env = dict(os.environ)
        libraries = [str(p) for p in (libpython, install.libs_dir) if p is not None]
        if env.get("LD_LIBRARY_PATH"):
            libraries.append(env["LD_LIBRARY_PATH"])
        env["LD_LIBRARY_PATH"] = os.pathsep.join(libraries)
        # The stub embeds the first python on PATH; it must be this interpreter to see its packages.
        bindir = os.path.dirname(sys.executable)
        env["PATH"] = os.pathsep.join([bindir, env["PATH"]]) if env.get("PATH") else bindir
        return env

    def _control(self, timeout: float = 10.0) -> ServerControl:
        """A control client for the server's HTTP endpoint; close it before the server stops (Triton waits
        for idle keep-alive connections to close), and use it in the thread that made it."""
        return ServerControl(self._control_target, timeout=timeout)

    def _wait_ready(self) -> None:
        assert self._process is not None and self._log_path is not None
        deadline = time.monotonic() + self.startup_timeout
        with self._control(timeout=1.0) as control:
            while True:
                code = self._process.poll()
                if code is not None:
                    reason = _failure_reason(self._log_path, self._log_offset)
                    reason = reason or f"tritonserver exited with code {code}"
                    raise ServerError(f"Triton did not start: {reason} (server log: {self._log_path})")
                if control.is_ready():
                    return
                if time.monotonic() >= deadline:
                    reason = _failure_reason(self._log_path, self._log_offset)
                    detail = f": {reason}" if reason else ""
                    raise ServerError(
                        f"Triton was not ready within {self.startup_timeout:g} s{detail} "
                        f"(server log: {self._log_path})"
                    )
                if self._stopping.wait(0.1):
                    raise ServerError("the Triton server was stopped while it was starting")

    def _warn_uncached(self) -> None:
        """Say which loaded models ask for the response cache, which this server does not enable.

        Triton 2.51 (and Triton's core to this day) stores every response a backend sends in the cache,
        a failed one included, as an entry without outputs, keyed on the model and the request's input
        bytes, not its shape: after one failure (a stub that died, a batch-0 request whose row of data
        passes Triton's checks) every later request with the same bytes would answer 200 with no outputs.
        """
        try:
            with self._control() as control:
                names = [m["name"] for m in control.index() if m.get("state") == "READY"]
                cached = []
                for name in dict.fromkeys(names):
                    if (control.config(name).get("response_cache") or {}).get("enable"):
                        cached.append(name)
        except (KeyError, ServerError) as error:
            logger.debug("could not read the models' configs: %s", error)
            return
        if cached:
            logger.warning(
                "serving %s without the response cache %s: Triton 2.51 caches a failed request as an "
                "empty success for every later request with the same input bytes",
                ", ".join(f"'{name}'" for name in cached),
                "it asks for" if len(cached) == 1 else "they ask for",
            )

    def _watch(self) -> None:
        """The watcher thread: restart a dead server, reload models whose stub died."""
        try:
            self._watch_until_down()
        finally:
            release_thread_hub()

    def _watch_until_down(self) -> None:
        while not self._stopping.wait(_WATCH_SECONDS):
            process = self._process
            if process is None:
                return
            code = process.poll()
            if code is not None:
                if self._stopping.is_set() or not self._recover(process, code):
                    self._down.set()
                    return
                self._stubs.clear()
                self._handled.clear()
                self._retired.clear()
                if self._process is not None:
                    self._dead_stubs(self._process.pid)
            elif self.supervise:
                for model, pids in self._dead_stubs(process.pid).items():
                    self._reload(model, pids)
                    self._dead_stubs(process.pid)  # learn the new stubs at once
                self._stop_retired(process.pid)

    def _recover(self, process: subprocess.Popen[bytes], code: int) -> bool:
        """Log the crash and restart the server on the same ports; False when it stays down.

        A server that crashes again after its endpoints came back (a client repeating a request that
        aborts it) is restarted again, after a back-off once crashes are frequent; it stays down only
        when a restart fails to come up at all (or :meth:`stop` is called).
        """
        assert self._log_path is not None
        self._crashed = True
        where = f"(server log: {self._log_path})"
        crashed_at = time.monotonic()
        while True:
            self._returncode = code
            reason = _crash_reason(self._log_path, self._log_offset, code)
            now = time.monotonic()
            self._crash_times = [t for t in self._crash_times if now - t < _RESTART_WINDOW_SECONDS]
            self._crash_times.append(now)
            self._kill_group(process)
            if not self.supervise:
                self._failure = f"tritonserver exited unexpectedly ({reason}) {where}"
                logger.error("%s", self._failure)
                return False
            delay = _backoff(len(self._crash_times), self.immediate_restarts)
            logger.error(
                "tritonserver (pid %d) exited unexpectedly (%s); restarting it on the same ports%s %s",
                process.pid,
                reason,
                f" in {delay:g} s ({len(self._crash_times)} crashes within {_RESTART_WINDOW_SECONDS:g} s)"
                if delay
                else "",
                where,
            )
            if self._stopping.wait(delay):
                return False
            try:
                self._spawn(append=True)
                self._wait_ready()
                break
            except ServerError as error:
                if self._stopping.is_set():
                    return False
                again = self._process
                if again is not None and again.poll() is not None and self._served_since_spawn():
                    process, code = again, again.returncode  # up, then aborted again: one more crash
                    continue
                self._failure = f"tritonserver exited unexpectedly ({reason}) and did not restart: {error}"
                logger.error("%s", self._failure)
                return False
        self.restarts += 1
        logger.warning(
            "Triton is serving again (pid %d) after an outage of %.1f s",
            self._process.pid if self._process else -1,
            time.monotonic() - crashed_at,
        )
        return True

    def _served_since_spawn(self) -> bool:
        """Whether the last server started its HTTP or gRPC endpoint (it got as far as taking requests)."""
        assert self._log_path is not None
        return any(_SERVING.search(line) for line in _log_lines(self._log_path, self._log_offset))

    def _kill_group(self, process: subprocess.Popen[bytes]) -> None:
        """After the server died: kill its orphaned stubs, release its reaper, remove its shm regions."""
        _terminate(process, 0.0)
        self._release_reaper()
        self._remove_shm()

    def _dead_stubs(self, server: int) -> dict[str, list[int]]:
        """Models whose backend stub process died since the last look, with the stubs' pids.

        A stub that dies on its own stays a zombie child of ``tritonserver`` (Triton does not reap it),
        while Triton reaps the stubs it stops itself; so a zombie stub is a dead model instance. A
        zombie's command line cannot be read, so each live stub's model is noted when it is first seen.
        """
        stubs, handled = self._stubs, self._handled
        try:
            children = psutil.Process(server).children()
        except psutil.Error:
            return {}
        dead: dict[str, list[int]] = {}
        present = set()
        for child in children:
            present.add(child.pid)
            try:
                if child.status() == psutil.STATUS_ZOMBIE:
                    if child.pid in stubs and child.pid not in handled:
                        handled.add(child.pid)
                        dead.setdefault(stubs[child.pid], []).append(child.pid)
                elif child.pid not in stubs and child.pid not in self._retired:
                    command = child.cmdline()
                    if len(command) > 1 and Path(command[0]).name == _STUB_NAME:
                        stubs[child.pid] = self._model_of(Path(command[1]))
            except psutil.Error:
                continue
        for pid in set(stubs) - present:
            del stubs[pid]
        handled &= present
        return dead

    def _model_of(self, model_file: Path) -> str:
        """The model a stub serves, from its first argument: ``<repository>/<model>/<version>/<file>``."""
        try:
            return model_file.relative_to(Path(self._repository_argument()).resolve()).parts[0]
        except ValueError:
            return model_file.parents[1].name

    def _reload(self, model: str, pids: list[int]) -> None:
        """Reload ``model`` in place (its healthy instances serve meanwhile); unload it if that fails."""
        logger.error(
            "the backend stub process of model '%s' (pid %s) died; reloading the model",
            model,
            ", ".join(map(str, pids)),
        )
        began = time.monotonic()
        old = [pid for pid, owner in self._stubs.items() if owner == model and pid not in pids]
        try:
            with self._control() as control, self._control(timeout=self.startup_timeout) as loader:
                # A load that carries a config always reloads, even when the files are unchanged.
                loader.load(model, json.dumps(control.config(model)))
        except ServerError as error:
            logger.error("could not reload model '%s' (%s); unloading it so it reports unready", model, error)
            with contextlib.suppress(ServerError), self._control() as control:
                control.unload(model)
            return
        finally:
            self._retire(old)
        self.reloads += 1
        logger.warning("model '%s' was reloaded in %.1f s", model, time.monotonic() - began)

    def _retire(self, pids: list[int]) -> None:
        """Note the healthy stubs of a model's previous load, which :meth:`_stop_retired` makes sure end.

        Triton 2.51 never finishes unloading a model's previous load once a request failed on its dead
        stub, so its healthy stubs would run (and hold their memory) until the server stops.
        """
        deadline = time.monotonic() + self.exit_timeout  # in-flight requests on them finish first
        for pid in pids:
            self._stubs.pop(pid, None)
            self._retired[pid] = deadline

    def _stop_retired(self, server: int) -> None:
        """Kill the retired stubs still running past their deadline; forget those that ended."""
        for pid, deadline in list(self._retired.items()):
            try:
                child = psutil.Process(pid)
                running = child.ppid() == server and child.status() != psutil.STATUS_ZOMBIE
            except psutil.Error:
                running = False
            if not running:
                del self._retired[pid]
            elif time.monotonic() >= deadline:
                logger.warning(
                    "the backend stub (pid %d) of a model's previous load was still running %d s after "
                    "the reload; stopping it",
                    pid,
                    self.exit_timeout,
                )
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
                self._retired[pid] = float("inf")  # forgotten once it is gone

    def _drain(self) -> None:
        """Unload every model so that new requests fail at once; wait for in-flight ones to finish."""
        deadline = time.monotonic() + self.exit_timeout
        try:
            with self._control() as control:
                index = control.index()
                for name in dict.fromkeys(m["name"] for m in index if m.get("state") in _BUSY_STATES):
                    control.unload(name)
                while time.monotonic() < deadline:
                    if not any(m.get("state") in _BUSY_STATES for m in control.index()):
                        return
                    time.sleep(0.05)
            logger.warning(
                "requests were still in flight after %d s; stopping Triton anyway", self.exit_timeout
            )
        except (KeyError, ServerError) as error:
            logger.warning("could not unload the models before stopping Triton: %s", error)

    def _release_reaper(self) -> None:
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

    def _remove_shm(self) -> None:
        if self._workdir is not None and _SHM_DIR.is_dir():
            for region in _SHM_DIR.glob(f"{self._shm_prefix()}*"):
                region.unlink(missing_ok=True)

    def _release(self, keep_log: bool = False, drain: bool = True) -> None:
        """Stop the process group (if any) and delete the temporary directory."""
        process, self._process = self._process, None
        _RUNNING.discard(self)
        if process is not None:
            if drain and process.poll() is None:
                self._drain()
            code = _terminate(process, _TRITON_EXIT_SECONDS + 10.0)
            if self._failure is None:
                self._returncode = code
        self._release_reaper()
        self._remove_shm()
        workdir, self._workdir = self._workdir, None
        if workdir is None:
            return
        log_inside = self._log_path is not None and self._log_path.parent == workdir
        if keep_log and log_inside:
            shutil.rmtree(workdir / "backends", ignore_errors=True)
            logger.info("the server log is kept at %s", self._log_path)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def _terminate(process: subprocess.Popen[bytes], grace: float) -> int:
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


_RUNNING: set[EmbeddedServer] = set()


@atexit.register
def _stop_all() -> None:
    for server in list(_RUNNING):
        try:
            server.stop()
        except Exception:  # best effort at interpreter exit
            logger.exception("could not stop the Triton server at exit")
