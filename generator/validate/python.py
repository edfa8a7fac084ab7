"""Checks of a Python-backend model (``backend: "python"``) that need no Triton.

Triton's Python backend imports ``<version>/model.py`` (or ``default_model_filename``) in its stub
process and instantiates the module's ``TritonPythonModel``: a file that does not parse, or defines
no such class, fails the load; a class without ``execute`` loads but fails every request. The file is
only parsed here (:mod:`ast`), never imported or run. A config may point the stub at a packed
Python environment with the ``EXECUTION_ENV_PATH`` parameter; a path that does not exist fails the load.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tritonclient.grpc import model_config_pb2

from generator.validate.config import Found

MODEL_CLASS = "TritonPythonModel"
"""The class the Python backend instantiates."""

EXECUTION_ENV_PATH = "EXECUTION_ENV_PATH"
"""The config parameter naming a packed Python environment (a conda-pack archive or a directory)."""

MODEL_DIRECTORY_KEYWORD = "$$TRITON_MODEL_DIRECTORY"
"""What the Python backend replaces with the model's directory in ``EXECUTION_ENV_PATH``."""


@dataclass(frozen=True)
class PythonModelFile:
    """What a ``model.py`` shows without being run.

    Attributes:
        found: ``(severity, message)`` pairs.
        auto_completes: The class defines ``auto_complete_config``, so Triton may add inputs, outputs
            or ``max_batch_size`` to the config it loads.
    """

    found: Found
    auto_completes: bool = False


def _top_level(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Module-level statements, including those inside ``if``/``try``/``with`` blocks."""
    for node in body:
        yield node
        if isinstance(node, ast.If | ast.With):
            yield from _top_level(node.body)
            yield from _top_level(getattr(node, "orelse", []))
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody, *(h.body for h in node.handlers)):
                yield from _top_level(block)


def _binds(node: ast.stmt, name: str) -> bool:
    """Whether a statement binds ``name`` other than by a class definition."""
    if isinstance(node, ast.Assign):
        return any(isinstance(t, ast.Name) and t.id == name for t in node.targets)
    if isinstance(node, ast.AnnAssign | ast.AugAssign):
        return isinstance(node.target, ast.Name) and node.target.id == name
    if isinstance(node, ast.Import | ast.ImportFrom):
        return any(
            (alias.asname or alias.name.split(".")[0]) == name or alias.name == "*" for alias in node.names
        )
    return isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == name


def _plain_class(node: ast.ClassDef) -> bool:
    """Whether the class body alone decides its methods (no base class, decorator or metaclass)."""
    bases = [b for b in node.bases if not (isinstance(b, ast.Name) and b.id == "object")]
    return not bases and not node.keywords and not node.decorator_list


def _has_method(node: ast.ClassDef, method: str) -> bool:
    return any(
        (isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef) and item.name == method)
        or _binds(item, method)
        for item in _top_level(node.body)
    )


def check_python_file(path: Path, label: str) -> PythonModelFile:
    """Parse a Python-backend model file and check it defines ``TritonPythonModel`` with ``execute``.

    Args:
        path: The model file (a regular file).
        label: How messages name it, such as ``1/model.py``.
    """
    try:
        source = path.read_bytes()
    except OSError as exc:
        return PythonModelFile([("error", f"{label} cannot be read ({exc.strerror}); fix its permissions")])
    try:
        tree = ast.parse(source, filename=label)
    except (SyntaxError, ValueError) as exc:  # ValueError: null bytes, on older Pythons
        if not isinstance(exc, SyntaxError) or exc.lineno is None:
            return PythonModelFile(
                [("error", f"{label} is not Python source ({exc}); write the model's code")]
            )
        return PythonModelFile(
            [
                (
                    "error",
                    f"{label} line {exc.lineno}: {exc.msg}, so Triton's Python backend fails to load it "
                    "(SyntaxError); fix the code",
                )
            ]
        )
    definition: ast.ClassDef | None = None
    bound_otherwise = False
    for node in _top_level(tree.body):
        if isinstance(node, ast.ClassDef) and node.name == MODEL_CLASS:
            definition, bound_otherwise = node, False
        elif _binds(node, MODEL_CLASS):
            definition, bound_otherwise = None, True
    if bound_otherwise:
        return PythonModelFile([])  # imported or assigned: what it holds is not known without running it
    if definition is None:
        return PythonModelFile(
            [
                (
                    "error",
                    f"{label} defines no class {MODEL_CLASS}, so Triton's Python backend fails to load it "
                    f"(AttributeError); define class {MODEL_CLASS} with an execute(self, requests) method",
                )
            ]
        )
    auto_completes = _has_method(definition, "auto_complete_config") or not _plain_class(definition)
    if _plain_class(definition) and not _has_method(definition, "execute"):
        return PythonModelFile(
            [
                (
                    "error",
                    f"{label}: class {MODEL_CLASS} has no execute method, so Triton loads the model but fails "
                    "every request; add def execute(self, requests) returning one response per request",
                )
            ],
            auto_completes,
        )
    return PythonModelFile([], auto_completes)


def check_execution_env(config: model_config_pb2.ModelConfig, model_dir: Path) -> Found:
    """The ``EXECUTION_ENV_PATH`` parameter points at an environment that exists.

    A path under ``$$TRITON_MODEL_DIRECTORY`` travels with the repository, so a missing one fails the
    load on any server (an error); any other path may exist on the serving machine only (a warning).
    """
    if EXECUTION_ENV_PATH not in config.parameters:
        return []
    value = config.parameters[EXECUTION_ENV_PATH].string_value
    where = f"parameters {EXECUTION_ENV_PATH} '{value}'"
    if not value:
        return [("error", f"{where} is empty; point it at the packed environment or drop the parameter")]
    in_repository = MODEL_DIRECTORY_KEYWORD in value
    path = Path(value.replace(MODEL_DIRECTORY_KEYWORD, str(model_dir)))
    if not path.exists():
        if in_repository:
            return [
                (
                    "error",
                    f"{where} does not exist, so Triton fails to load the model; put the packed environment "
                    "there or fix the path",
                )
            ]
        return [
            (
                "warning",
                f"{where} does not exist here, and Triton fails to load the model where it does not exist; "
                f"make sure the serving machine has it, or ship it in the model directory as "
                f"{MODEL_DIRECTORY_KEYWORD}/<file>",
            )
        ]
    if path.is_dir() and not (path / "bin" / "activate").is_file():
        return [
            (
                "error" if in_repository else "warning",
                f"{where} is a directory without bin/activate, which Triton needs to use it; point it at a "
                "packed environment (conda-pack) or an unpacked one",
            )
        ]
    return []
