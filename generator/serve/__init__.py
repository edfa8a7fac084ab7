"""serve: the embedded tritonserver on this machine, its supervision, and Triton's control API.

``from generator.serve import EmbeddedServer`` is the entry point. Modules, each with one job:

* :mod:`~generator.serve.server` :class:`~generator.serve.server.EmbeddedServer`, the server's lifecycle
  (start, stop, wait, the context manager) composed of the modules below, and its :class:`Endpoints`;
* :mod:`~generator.serve.launch` what a launch needs: the Triton build in the ``nvidia-pytriton`` wheel,
  the stub, the backend directory, the command line and environment, the checks before a start;
* :mod:`~generator.serve.process` the server's process group: spawn, readiness wait, stop, the reaper's
  handshake, shared-memory and directory cleanup, and the reasons read from its log;
* :mod:`~generator.serve.supervisor` the watcher thread: crash restarts with back-off, dead-stub reloads,
  retired stubs, the response-cache warning, the drain before a stop;
* :mod:`~generator.serve.control` one client for Triton's control plane over tritonclient (health,
  readiness, repository index, load, unload, model config, metadata, statistics), also the load side's;
* :mod:`~generator.serve.reaper` the stdlib-only process that kills the group if its owner dies;
* :mod:`~generator.serve.backends` the Python-based ONNX Runtime/TorchScript backend the server runs.

The public names below are importable from this package; importing it imports none of the modules until
one is asked for.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "EmbeddedServer",
    "Endpoints",
    "TritonInstall",
    "check_remote_endpoint",
    "find_free_port",
    "is_remote_repository",
    "launch_files",
    "locate_triton",
]

_HOMES = {
    "EmbeddedServer": "server",
    "Endpoints": "server",
    "TritonInstall": "launch",
    "check_remote_endpoint": "launch",
    "find_free_port": "launch",
    "is_remote_repository": "launch",
    "launch_files": "launch",
    "locate_triton": "launch",
}


def __getattr__(name: str) -> Any:
    # Lazy, so that importing one module of this package (the control client, the reaper) stays cheap.
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)
