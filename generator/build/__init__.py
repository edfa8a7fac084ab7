"""build: from a spec to a verified, validated Triton model repository.

``from generator.build import build`` is the entry point (see :mod:`generator.build.run`). The stages live
one per module: exporters (:mod:`~generator.build.exporters`, run in a worker process by
:mod:`~generator.build.worker`), parity (:mod:`~generator.build.parity` on :mod:`~generator.build.runners`),
:mod:`~generator.build.optimize`, :mod:`~generator.build.config`, :mod:`~generator.build.pipelines`,
:mod:`~generator.build.sample_data` and :mod:`~generator.build.input_values`. A caller that must not build in
its own process (tune) builds through :func:`generator.build.child.build_in_child`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["build"]


def __getattr__(name: str) -> Any:
    # Lazy, so that the worker process importing one exporter does not import the whole build.
    if name == "build":
        from generator.build.run import build

        return build
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
