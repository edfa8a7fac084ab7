"""Exporters: one per source framework, all with the same signature and result type.

The registry maps a spec's ``framework`` to the module that implements it; modules (and their
frameworks) are imported only when a model of that kind is built.
"""

from __future__ import annotations

import importlib
from typing import Any

from generator.build.exporters.base import ExportContext, Exporter, ExportResult, ModelRunner
from generator.spec.models import ModelSpec

_REGISTRY: dict[str, str] = {
    "torch": "generator.build.exporters.torch:TorchExporter",
    "onnx": "generator.build.exporters.onnx:OnnxExporter",
    "tensorflow": "generator.build.exporters.tensorflow:TensorflowExporter",
    # Hugging Face model folders, exported with torch.onnx for their task.
    "huggingface": "generator.build.exporters.huggingface:HuggingFaceExporter",
    # Targets other than ONNX, chosen by a model's `format`:
    "torchscript": "generator.build.exporters.torchscript:TorchScriptExporter",
    "tensorrt": "generator.build.exporters.tensorrt:TensorRTExporter",
    # Python-backend models (a user's TritonPythonModel file, or a built-in step): placed, not converted.
    "python": "generator.build.exporters.python:PythonExporter",
}


def register(framework: str, target: str) -> None:
    """Register an exporter class, given as ``'package.module:ClassName'``, for a framework name."""
    _REGISTRY[framework] = target


def exporter_for(model: ModelSpec, context: ExportContext | None = None) -> Exporter:
    """The exporter that produces ``model``'s served format (its framework's, for ONNX).

    Exporters of other targets (TorchScript, TensorRT) get the build's ``context``.
    """
    if model.target == "onnx":
        return get_exporter(model.framework)
    return get_exporter(model.target, context=context or ExportContext())


def get_exporter(framework: str, **options: Any) -> Exporter:
    """Instantiate the exporter registered for ``framework`` (``options`` go to its constructor).

    Raises:
        KeyError: no exporter is registered under that name.
    """
    module_name, _, class_name = _REGISTRY[framework].partition(":")
    return getattr(importlib.import_module(module_name), class_name)(**options)


__all__ = [
    "ExportResult",
    "Exporter",
    "ModelRunner",
    "exporter_for",
    "get_exporter",
    "register",
]
