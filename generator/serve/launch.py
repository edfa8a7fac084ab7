"""What a ``tritonserver`` launch needs before the process runs, from the ``nvidia-pytriton`` wheel.

The wheel carries a complete ``tritonserver`` build with only the Python backend: :func:`locate_triton` finds
it without importing the wheel, and :meth:`TritonInstall.stub_for` the Python backend stub for the running
interpreter. :func:`lay_out_backends` prepares a backend directory per start (the Python backend, the stub,
and this package's Python-based ONNX Runtime/TorchScript backend under the names ``onnxruntime`` and
``pytorch``), so an ordinary model repository with ``platform: "onnxruntime_onnx"`` configs loads unchanged.
:func:`command_line` and :func:`environment` are the server's command line and environment;
:func:`launch_files` hands the same to another launcher. The checks before a start live here too: a local
repository that exists, the store of a remote one answering (:func:`check_remote_endpoint`), free ports.
"""

from __future__ import annotations

import ctypes.util
import importlib.util
import os
import shutil
import socket
import sys
import sysconfig
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from generator.core.errors import ServerError
from generator.core.triton import STAND_IN_BACKENDS
from generator.core.uris import S3_ENDPOINT

__all__ = [
    "REMOTE_SCHEMES",
    "STUB_NAME",
    "TRITON_EXIT_SECONDS",
    "TritonInstall",
    "check_ports",
    "check_remote_endpoint",
    "check_repository",
    "client_host",
    "command_line",
    "environment",
    "find_free_port",
    "is_remote_repository",
    "launch_files",
    "lay_out_backends",
    "libpython_dir",
    "locate_triton",
    "port_in_use",
    "repository_argument",
]

_INSTALL_HINT = "install it with: pip install nvidia-pytriton"
#: The file name of the Python backend stub, the process Triton runs per Python-backend model instance.
STUB_NAME = "triton_python_backend_stub"
#: The Python-based backend that serves ONNX (through ONNX Runtime) and TorchScript (through libtorch) models.
_CPU_BACKEND = Path(__file__).resolve().parent / "backends" / "onnx_torchscript_model.py"
#: Triton's own exit timeout. Triton 2.51 waits up to it for idle keep-alive HTTP connections to close even
#: when nothing is in flight; a stop drains by unloading the models first, so Triton needs only a short one.
TRITON_EXIT_SECONDS = 3
_PORT_FLAGS = {"HTTP": "--http-port", "gRPC": "--grpc-port", "metrics": "--metrics-port"}


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
        stub = self.stubs_dir / f"{major}.{minor}" / STUB_NAME
        if not stub.is_file():
            have = sorted(p.name for p in self.stubs_dir.iterdir() if (p / STUB_NAME).is_file())
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


def check_repository(repository: Path | str) -> None:
    """Check that a local repository is a directory, or that the store of a remote one answers.

    Raises:
        ServerError: The directory is missing, or nothing listens at the remote store's endpoint.
    """
    if isinstance(repository, Path) and not repository.is_dir():
        raise ServerError(f"the model repository {repository} does not exist or is not a directory")
    if isinstance(repository, str):
        check_remote_endpoint(repository)


def check_ports(address: str, ports: Mapping[str, int]) -> None:
    """Check that every port (``{"HTTP": ..., "gRPC": ..., "metrics": ...}``) is free on ``address``.

    Raises:
        ServerError: A port is taken; the message names the option that picks another.
    """
    for kind, port in ports.items():
        if port_in_use(address, port):
            raise ServerError(
                f"port {port} ({kind}) is already in use on {address}; pick another with {_PORT_FLAGS[kind]}"
            )


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


def port_in_use(address: str, port: int) -> bool:
    """Whether ``port`` is taken on ``address`` (a port only in TIME_WAIT is free for the server)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR: a port only in TIME_WAIT is usable by the server, so it does not count as taken.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address, port))
        except OSError:
            return True
    return False


def libpython_dir() -> Path | None:
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


def client_host(address: str) -> str:
    """The host a client on this machine reaches a server bound to ``address`` at (IPv6 in brackets)."""
    if address in ("", "0.0.0.0"):
        return "127.0.0.1"
    if address == "::":
        return "[::1]"
    return f"[{address}]" if ":" in address else address


def lay_out_backends(install: TritonInstall, stub: Path, backends: Path) -> Path:
    """The backend directory the server runs with: the Python backend and tritongen's CPU backend."""
    python_dir = backends / "python"
    python_dir.mkdir(parents=True)
    for item in (install.backends_dir / "python").iterdir():
        if item.is_file():
            shutil.copy2(item, python_dir / item.name)
    shutil.copy2(stub, python_dir / STUB_NAME)
    if not _CPU_BACKEND.is_file():
        raise ServerError(
            f"tritongen's ONNX/TorchScript backend ({_CPU_BACKEND}) is missing; reinstall tritongen"
        )
    for name in STAND_IN_BACKENDS:
        (backends / name).mkdir()
        shutil.copy2(_CPU_BACKEND, backends / name / "model.py")
    return backends


def repository_argument(repository: Path | str) -> str:
    """The repository as ``--model-repository`` names it: a local one resolved, a remote URI as is.

    Triton downloads a remote repository's models into a local directory of its own.
    """
    if isinstance(repository, Path):
        return str(repository.resolve())
    return repository


def command_line(
    install: TritonInstall,
    backends: Path,
    *,
    repository: Path | str,
    address: str,
    ports: Mapping[str, int],
    exit_timeout: int,
    shm_prefix: str,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """The ``tritonserver`` command line of one start.

    Args:
        install: The Triton build.
        backends: The backend directory laid out for this start (:func:`lay_out_backends`).
        repository: The model repository (a directory or an object storage URI).
        address: The address every endpoint binds to.
        ports: ``{"HTTP": ..., "gRPC": ..., "metrics": ...}``.
        exit_timeout: Seconds a stop waits for requests in flight; Triton's own is at most
            :data:`TRITON_EXIT_SECONDS`.
        shm_prefix: Prefix of the shared-memory regions of this start's backend stubs.
        extra_args: More ``tritonserver`` arguments, appended last.
    """
    return [
        str(install.binary),
        f"--model-repository={repository_argument(repository)}",
        f"--backend-directory={backends}",
        f"--http-address={address}",
        f"--http-port={ports['HTTP']}",
        f"--grpc-address={address}",
        f"--grpc-port={ports['gRPC']}",
        f"--metrics-address={address}",
        f"--metrics-port={ports['metrics']}",
        "--allow-gpu-metrics=false",
        # No --cache-config: Triton 2.51 caches a backend's failed response as an empty success (see
        # Supervisor.warn_uncached), so models that ask for the response cache load and are served uncached.
        f"--exit-timeout-secs={min(exit_timeout, TRITON_EXIT_SECONDS)}",
        # No --disable-auto-complete-config: as in the official container, Triton completes a config that
        # leaves out the model's tensors (or is missing), through the backends' auto_complete_config.
        # Every model loads at start-up as in the default mode; explicit control lets the supervisor
        # reload a model whose stub died and a stop unload the models before stopping.
        "--model-control-mode=explicit",
        "--load-model=*",
        f"--backend-config=python,shm-region-prefix-name={shm_prefix}",
        *extra_args,
    ]


def environment(install: TritonInstall, libpython: Path | None) -> dict[str, str]:
    """The server's environment: this one, with the wheel's libraries and libpython on ``LD_LIBRARY_PATH``
    and this interpreter's directory first on ``PATH``."""
    env = dict(os.environ)
    libraries = [str(p) for p in (libpython, install.libs_dir) if p is not None]
    if env.get("LD_LIBRARY_PATH"):
        libraries.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = os.pathsep.join(libraries)
    # The stub embeds the first python on PATH; it must be this interpreter to see its packages.
    bindir = os.path.dirname(sys.executable)
    env["PATH"] = os.pathsep.join([bindir, env["PATH"]]) if env.get("PATH") else bindir
    return env


def launch_files(directory: Path) -> tuple[Path, Path, dict[str, str]]:
    """What another launcher (Model Analyzer's, a script) needs to run the bundled ``tritonserver`` as the
    embedded server does: the binary, a backend directory laid out in ``directory``, and the environment.

    Raises:
        ServerError: The server or its backends are missing.
    """
    install = locate_triton()
    backends = lay_out_backends(install, install.stub_for(), Path(directory) / "backends")
    return install.binary, backends, environment(install, libpython_dir())
