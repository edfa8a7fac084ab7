"""serve: the embedded tritonserver on this machine, its supervision, and Triton's control API.

``from generator.serve import EmbeddedServer`` is the entry point (see :mod:`generator.serve.server`).
"""

from __future__ import annotations

from typing import Any

__all__ = ["EmbeddedServer"]


def __getattr__(name: str) -> Any:
    # Lazy, so that importing one module of this package (the control client, the reaper) stays cheap.
    if name == "EmbeddedServer":
        from generator.serve.server import EmbeddedServer

        return EmbeddedServer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
