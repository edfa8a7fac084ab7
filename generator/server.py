"""Run a real Triton Inference Server on this machine, CPU only, from the ``nvidia-pytriton`` wheel.

The wheel carries a complete ``tritonserver`` build with only the Python backend. :class:`EmbeddedServer`
prepares a private backend directory per start (the Python backend, the stub for the running interpreter,
and this package's Python-based ONNX Runtime backend under the name ``onnxruntime``), so an ordinary model
repository with ``platform: "onnxruntime_onnx"`` configs loads unchanged. It binds to loopback by default,
waits until ``/v2/health/ready`` answers, reports Triton's own reason when the server does not come up, and
stops the whole process group (server and stubs) on :meth:`EmbeddedServer.stop`, on context exit, and at
interpreter exit.

Example::

    with EmbeddedServer("model_repository", http_port=find_free_port()) as server:
        client = tritonclient.http.InferenceServerClient(server.endpoints.http)
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes.util
import importlib.util
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
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from generator.errors import ServerError

__all__ = ["EmbeddedServer", "Endpoints", "TritonInstall", "find_free_port", "locate_triton"]

logger = logging.getLogger(__name__)

RESPONSE_CACHE_BYTES = 64 * 1024 * 1024
"""Size of the local response cache, always configured so models with ``response_cache`` load."""

_INSTALL_HINT = "install it with: pip install nvidia-pytriton"
_STUB_NAME = "triton_python_backend_stub"
_ORT_BACKEND = Path(__file__).resolve().parent / "backends" / "onnxruntime" / "model.py"
_LOG_TAIL_BYTES = 1 << 20
_SHM_DIR = Path("/dev/shm")
_LOG_LINE = re.compile(r"^([IWE])\d{4} [\d:.]+\s+\d+ [^\]]+\] ?(.*)$")
_HARMLESS = ("CudaDriverHelper", "NVML", "DCGM", "pinned", "CUDA")
_FAILED_LOAD = re.compile(r"failed to load '([^']+)' version (\d+): (.*)$")
_FAILED_POLL = re.compile(r"Poll failed for model directory '([^']+)': (.*)$")


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


def _failure_reason(log_path: Path) -> str:
    """Triton's own reason for not coming up, from its log, as one line ('' if none found)."""
    try:
        with log_path.open("rb") as handle:
            handle.seek(max(0, log_path.stat().st_size - _LOG_TAIL_BYTES))
            lines = handle.read().decode("utf-8", errors="replace").splitlines()
    except OSError:
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


class EmbeddedServer:
    """A ``tritonserver`` process serving one model repository, bound to ``address``.

    Args:
        repository: The model repository directory.
        http_port: HTTP/REST port.
        grpc_port: gRPC port.
        metrics_port: Prometheus metrics port.
        address: Address every endpoint binds to; loopback by default.
        startup_timeout: Seconds to wait for the server and all its models to become ready.
        log_path: Where the server's output goes (truncated on each start). By default a file in the
            per-start temporary directory, which :meth:`stop` deletes; it is kept when start fails.
        exit_timeout: Seconds the server may spend draining in-flight requests when stopped.
        extra_args: More ``tritonserver`` command-line arguments, appended last.
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
    ) -> None:
        self.repository = Path(repository)
        self.address = address
        self.ports = {"HTTP": int(http_port), "gRPC": int(grpc_port), "metrics": int(metrics_port)}
        self.startup_timeout = float(startup_timeout)
        self.exit_timeout = int(exit_timeout)
        self.extra_args = tuple(str(a) for a in extra_args)
        self._requested_log = Path(log_path) if log_path is not None else None
        self._log_path: Path | None = self._requested_log
        self._process: subprocess.Popen[bytes] | None = None
        self._returncode: int | None = None
        self._workdir: Path | None = None
        self._lock = threading.RLock()
        host = _client_host(address)
        self._endpoints = Endpoints(
            http=f"{host}:{self.ports['HTTP']}",
            grpc=f"{host}:{self.ports['gRPC']}",
            metrics=f"http://{host}:{self.ports['metrics']}/metrics",
        )

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

    def is_running(self) -> bool:
        """Whether the ``tritonserver`` process is alive."""
        process = self._process
        return process is not None and process.poll() is None

    def start(self) -> Endpoints:
        """Start ``tritonserver`` and wait until it and all its models are ready.

        Returns:
            The endpoints to connect to.

        Raises:
            ServerError: The server could not be started or did not become ready; the message carries
                Triton's reason and the log path. Nothing is left running.
        """
        with self._lock:
            if self.is_running():
                raise ServerError(f"the Triton server is already running (pid {self.pid})")
            self._release()
            install = locate_triton()
            stub = install.stub_for()
            libpython = _libpython_dir()
            if not self.repository.is_dir():
                raise ServerError(
                    f"the model repository {self.repository} does not exist or is not a directory"
                )
            flags = {"HTTP": "--http-port", "gRPC": "--grpc-port", "metrics": "--metrics-port"}
            for kind, port in self.ports.items():
                if _port_in_use(self.address, port):
                    raise ServerError(
                        f"port {port} ({kind}) is already in use on {self.address}; "
                        f"pick another with {flags[kind]}"
                    )

            self._workdir = Path(tempfile.mkdtemp(prefix="tritongen-triton-"))
            self._log_path = self._requested_log or self._workdir / "tritonserver.log"
            try:
                self._launch(install, stub, libpython)
                self._wait_ready()
            except BaseException:
                self._release(keep_log=True)
                raise
            logger.info("Triton is ready (pid %d): %s", self._process.pid, self._endpoints)
            return self._endpoints

    def stop(self) -> None:
        """Stop the server and its stub processes and delete the temporary directory. Idempotent.

        Sends SIGTERM so in-flight requests drain (up to ``exit_timeout`` seconds), then SIGKILLs the
        whole process group.
        """
        with self._lock:
            self._release()

    def wait(self) -> int:
        """Block until the server process exits and return its exit code.

        If the server has already been stopped, return the exit code of that run.

        Raises:
            ServerError: The server was never started.
        """
        process = self._process
        if process is not None:
            return process.wait()
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

    def _launch(self, install: TritonInstall, stub: Path, libpython: Path | None) -> None:
        assert self._log_path is not None
        backends = self._prepare_backends(install, stub)
        command = self._command(install, backends)
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        logger.info("starting Triton: %s", " ".join(command))
        try:
            with self._log_path.open("wb") as log:
                self._process = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self._environment(install, libpython),
                    start_new_session=True,
                    close_fds=True,
                )
        except OSError as error:
            raise ServerError(f"could not run {install.binary}: {error}") from error
        self._returncode = None
        _RUNNING.add(self)

    def _prepare_backends(self, install: TritonInstall, stub: Path) -> Path:
        assert self._workdir is not None
        backends = self._workdir / "backends"
        python_dir = backends / "python"
        python_dir.mkdir(parents=True)
        for item in (install.backends_dir / "python").iterdir():
            if item.is_file():
                shutil.copy2(item, python_dir / item.name)
        shutil.copy2(stub, python_dir / _STUB_NAME)
        if not _ORT_BACKEND.is_file():
            raise ServerError(
                f"tritongen's ONNX Runtime backend ({_ORT_BACKEND}) is missing; reinstall tritongen"
            )
        for name in ("onnxruntime", "pytorch"):  # platforms onnxruntime_onnx and pytorch_libtorch
            (backends / name).mkdir()
            shutil.copy2(_ORT_BACKEND, backends / name / "model.py")
        return backends

    def _command(self, install: TritonInstall, backends: Path) -> list[str]:
        return [
            str(install.binary),
            f"--model-repository={self.repository.resolve()}",
            f"--backend-directory={backends}",
            f"--http-address={self.address}",
            f"--http-port={self.ports['HTTP']}",
            f"--grpc-address={self.address}",
            f"--grpc-port={self.ports['gRPC']}",
            f"--metrics-address={self.address}",
            f"--metrics-port={self.ports['metrics']}",
            "--allow-gpu-metrics=false",
            f"--cache-config=local,size={RESPONSE_CACHE_BYTES}",
            f"--cache-directory={install.caches_dir}",
            f"--exit-timeout-secs={self.exit_timeout}",
            f"--backend-config=python,shm-region-prefix-name={self._shm_prefix()}",
            *self.extra_args,
        ]

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

    def _wait_ready(self) -> None:
        assert self._process is not None and self._log_path is not None
        url = f"http://{self._endpoints.http}/v2/health/ready"
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
        deadline = time.monotonic() + self.startup_timeout
        while True:
            code = self._process.poll()
            if code is not None:
                reason = _failure_reason(self._log_path) or f"tritonserver exited with code {code}"
                raise ServerError(f"Triton did not start: {reason} (server log: {self._log_path})")
            try:
                with opener.open(url, timeout=1.0) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() >= deadline:
                reason = _failure_reason(self._log_path)
                detail = f": {reason}" if reason else ""
                raise ServerError(
                    f"Triton was not ready within {self.startup_timeout:g} s{detail} "
                    f"(server log: {self._log_path})"
                )
            time.sleep(0.1)

    def _release(self, keep_log: bool = False) -> None:
        """Stop the process group (if any) and delete the temporary directory."""
        process, self._process = self._process, None
        _RUNNING.discard(self)
        if process is not None:
            self._returncode = _terminate(process, self.exit_timeout + 10.0)
        workdir, self._workdir = self._workdir, None
        if workdir is None:
            return
        if process is not None and _SHM_DIR.is_dir():
            for region in _SHM_DIR.glob(f"{workdir.name}_*"):
                region.unlink(missing_ok=True)
        log_inside = self._log_path is not None and self._log_path.parent == workdir
        if keep_log and log_inside:
            shutil.rmtree(workdir / "backends", ignore_errors=True)
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
