"""Where the files that ship with tritongen are: templates, examples, the Python-based backend.

In a source checkout they sit at the top level (``templates/``, ``examples/``); in an installed wheel
they are packaged as ``generator/templates`` and ``generator/examples``.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent.parent


def _find(name: str) -> Path:
    for candidate in (_PACKAGE / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"tritongen's '{name}' directory is missing; reinstall tritongen")


def templates_dir() -> Path:
    """The built-in Jinja templates for config.pbtxt."""
    return _find("templates")


def examples_dir() -> Path:
    """The bundled examples (specs, model factories, small model files)."""
    return _find("examples")


def steps_dir() -> Path:
    """The built-in pipeline steps (Triton Python-backend model files: tokenizer, image, postprocess)."""
    return _PACKAGE / "steps"
