"""Exporters: one per source framework, all with the same signature and result type.

The registry maps a spec's ``framework`` to the module that implements it; modules (and their
frameworks) are imported only when a model of that kind is built.
"""

from __future__ import annotations

import importlib

from generator.exporters.base import Exporter, ExportResult, ModelRunner

_REGISTRY: dict[str, str] = {
    "torch": "generator.exporters.torch:TorchExporter",
    "onnx": "generator.exporters.onnx:OnnxExporter",
}


def register(framework: str, target: str) -> None:
    """Register an exporter class, given as ``'package.module:ClassName'``, for a framework name."""
    _REGISTRY[framework] = target


def frameworks() -> list[str]:
    """Framework names that have an exporter."""
    return sorted(_REGISTRY)


def get_exporter(framework: str) -> Exporter:
    """Instantiate the exporter registered for ``framework``.

    Raises:
        KeyError: no exporter is registered under that name.
    """
    module_name, _, class_name = _REGISTRY[framework].partition(":")
    return getattr(importlib.import_module(module_name), class_name)()


__all__ = ["ExportResult", "Exporter", "ModelRunner", "frameworks", "get_exporter", "register"]
