"""Runs a Python model's ``auto_complete_config`` the way Triton's Python backend stub does, in a child.

    python python_child.py <version>/model.py <backend utilities directory> <result file>  < config.json

The model directory and the version directory go on ``sys.path`` and the module is imported as
``<version>.model``; ``triton_python_backend_utils`` comes from the server's Python backend, with its
``get_model_dir`` (which only the stub defines) naming the version directory. The config JSON read from
standard input becomes a ``ModelConfig``; ``TritonPythonModel.auto_complete_config`` is called on it when
the class has one, never ``initialize`` or ``execute``. The result file receives one JSON object:
``{"config": ...}`` (the returned ``ModelConfig`` as a dict), or ``{"stage": ..., "type": ..., "message":
...}`` where it failed (``import``, ``class``, ``auto_complete_config``, ``result``).

This file is run by path and imports nothing of tritongen: the model's own code runs beside it.
"""

from __future__ import annotations

import importlib
import json
import os
import sys


def _write(path: str, result: dict) -> None:
    with open(path, "w", encoding="utf-8") as stream:
        json.dump(result, stream)


def _failure(stage: str, error: BaseException) -> dict:
    return {"stage": stage, "type": type(error).__name__, "message": " ".join(str(error).split())}


def _run(model_file: str, utils_dir: str, config_text: str) -> dict:
    version_dir = os.path.dirname(os.path.abspath(model_file))
    sys.path += [version_dir, os.path.dirname(version_dir), utils_dir]
    import triton_python_backend_utils as pb_utils

    pb_utils.get_model_dir = lambda: version_dir
    stem = os.path.splitext(os.path.basename(model_file))[0]
    try:
        module = importlib.import_module(f"{os.path.basename(version_dir)}.{stem}")
    except BaseException as error:  # whatever the model's module-level code raises
        return _failure("import", error)
    model_class = getattr(module, "TritonPythonModel", None)
    if model_class is None:
        return _failure("class", AttributeError("module has no attribute 'TritonPythonModel'"))
    config = pb_utils.ModelConfig(config_text)
    if hasattr(model_class, "auto_complete_config"):
        try:
            config = model_class.auto_complete_config(config)
        except BaseException as error:
            return _failure("auto_complete_config", error)
    if not isinstance(config, pb_utils.ModelConfig):
        name = json.loads(config_text).get("name", "")
        return _failure(
            "result",
            TypeError(
                f"auto_complete_config function in model '{name}' must return a valid pb.ModelConfig object."
            ),
        )
    try:
        return {"config": json.loads(json.dumps(config._model_config))}
    except (TypeError, ValueError) as error:  # a value json cannot write, as the stub's json.dumps fails
        return _failure("result", error)


def main() -> None:
    """Run one model's ``auto_complete_config``; arguments as the module docstring shows."""
    sys.path.pop(0)  # this file's directory: the model's imports must not find tritongen's modules
    model_file, utils_dir, result_file = sys.argv[1:4]
    _write(result_file, _run(model_file, utils_dir, sys.stdin.read()))


if __name__ == "__main__":
    main()
