"""Python-backend models: a user's ``TritonPythonModel`` file, or a built-in pipeline step.

Nothing is converted: the file is copied as ``<model>/<version>/model.py`` (with the files it needs
beside it) and checked as far as it can be without Triton: it parses, it imports (with the server's own
``triton_python_backend_utils`` importable, as in the Python backend), and it defines
``TritonPythonModel`` with an ``execute`` method. Its I/O is what the spec declares (a built-in step
declares its own), since a Python model has no file to read a signature from.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from generator.build.exporters.base import (
    ExportContext,
    ExportResult,
    call_function,
    error_line,
    load_factory,
)
from generator.core.errors import ExportError, SpecError
from generator.core.signature import Signature, TensorInfo
from generator.core.triton import PYTHON_BACKEND, python_backend_utils_dir
from generator.spec.models import ModelSpec, TensorSpec, factory_parts
from generator.spec.names import files_destination

MODEL_FILE = "model.py"


def signature_of(model: ModelSpec) -> Signature:
    """The I/O a Python model's config declares, as a signature (a batch axis when it batches)."""
    batching = (model.max_batch_size or 0) > 0

    def tensors(specs: list[TensorSpec] | None) -> tuple[TensorInfo, ...]:
        return tuple(
            TensorInfo(t.name, t.dtype, tuple([-1, *t.dims] if batching else t.dims)) for t in specs or []
        )

    return Signature(tensors(model.inputs), tensors(model.outputs))


def extra_files(model: ModelSpec, spec_dir: Path) -> dict[str, Path]:
    """The ``files`` a user's Python model lists: the name each gets beside ``model.py`` (its last path
    component as listed, a link's own name) -> the file or directory, resolved against the spec's directory.

    Raises:
        SpecError: a listed file or directory does not exist.
    """
    found = {}
    for name in model.files or []:
        path = (spec_dir / name).resolve()
        if not path.exists():
            raise SpecError(f"model '{model.name}': files: '{name}' not found at {path}; fix the path")
        found[files_destination(name)] = path
    return found


def _copy(source: Path, target: Path) -> list[Path]:
    """Copy a file or a directory tree; the files written."""
    if source.is_dir():
        shutil.copytree(source, target, dirs_exist_ok=True)
        return sorted(p for p in target.rglob("*") if p.is_file())
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return [target]


def check_python_model(path: Path, model_name: str) -> None:
    """Parse and import a Python model file as the Python backend would, and find its model class.

    Raises:
        ExportError: a syntax error (with its line), an import that fails, or no ``TritonPythonModel``
            class with an ``execute`` method.
    """
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        tree = ast.parse(text, filename=str(path))
    except SyntaxError as exc:
        raise ExportError(
            f"model '{model_name}': {path.name} line {exc.lineno}: {exc.msg}; fix the Python model file"
        ) from None
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    if "TritonPythonModel" not in classes:
        raise ExportError(
            f"model '{model_name}': {path.name} defines no class TritonPythonModel, which the Python "
            "backend loads; define it with initialize/execute"
        )
    _import(path, model_name)


def _import(path: Path, model_name: str) -> None:
    """Import the file with the version directory and the server's backend utilities on ``sys.path``."""
    utils = python_backend_utils_dir()
    extra = [str(path.parent)] + ([str(utils)] if utils else [])
    module_name = f"_tritongen_python_model_{model_name.replace('-', '_').replace('.', '_')}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.path[:0] = extra
    try:
        spec.loader.exec_module(module)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # a module that exits or raises while importing is its failure
        raise ExportError(
            f"model '{model_name}': importing {path.name} failed: {error_line(exc)}; install what it "
            "imports in the server's Python environment, or fix the file"
        ) from None
    finally:
        for entry in extra:
            sys.path.remove(entry)
    model_class = getattr(module, "TritonPythonModel", None)
    if not callable(getattr(model_class, "execute", None)):
        raise ExportError(
            f"model '{model_name}': TritonPythonModel in {path.name} has no execute method; add "
            "execute(self, requests)"
        )


#: Built-in step settings that may name a ``file.py:function`` factory run at build time, and the
#: file its result is saved as (a ``tokenizers.Tokenizer`` -> tokenizer.json; a causal LM and its
#: tokenizer -> a model folder).
FACTORY_SETTINGS = {"tokenizer": ("tokenizer", "tokenizer.json"), "generate": ("model", "model")}


def step_factory(model: ModelSpec) -> tuple[str, tuple[str, str]] | None:
    """``(setting, (module.py, function))`` when a built-in step's setting names a factory, else None."""
    if model.builtin not in FACTORY_SETTINGS:
        return None
    setting, _ = FACTORY_SETTINGS[model.builtin]
    value = (model.step or {}).get(setting)
    parts = factory_parts(value) if isinstance(value, str) else None
    return (setting, parts) if parts is not None and parts[0].endswith(".py") else None


def make_step_file(model: ModelSpec, source: Path, target: Path, *, progress: Callable[[str], None]) -> str:
    """Run a built-in step's factory setting and save what it returns at ``target`` (in the worker).

    The factory returns a transformers ``PreTrainedTokenizerFast`` (saved as its backend's tokenizer.json,
    with its padding and truncation settings), an object with ``save(path)`` (a ``tokenizers.Tokenizer``)
    or a path to the file itself. For the generate step's ``model``: a transformers model and its
    tokenizer (anything with ``save_pretrained``, saved into one folder), or the path of a model folder.

    Raises:
        ExportError: the factory fails, or returns something that is neither.
    """
    found = step_factory(model)
    assert found is not None
    setting, (_, function) = found
    progress("prepare")
    produced = call_function(
        load_factory(source, function, model.name), f"model '{model.name}': step.{setting}"
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    from generator.steps import fast_tokenizer_json

    text = fast_tokenizer_json(produced) if setting == "tokenizer" else None
    if setting == "model":
        _save_model_folder(model, produced, target, f"{source.name}:{function}")
    elif text is not None:
        target.write_text(text, encoding="utf-8")
    elif callable(getattr(produced, "save", None)):
        produced.save(str(target))
    elif isinstance(produced, (str, Path)) and Path(produced).is_file():
        shutil.copyfile(produced, target)
    else:
        raise ExportError(
            f"model '{model.name}': step.{setting}: {source.name}:{function} returned {type(produced).__name__}; "
            "return a tokenizers.Tokenizer, a transformers PreTrainedTokenizerFast (AutoTokenizer with "
            "use_fast=True) or the path of the file"
        )
    return str(target)


def _save_model_folder(model: ModelSpec, produced: object, target: Path, factory: str) -> None:
    """Save a factory's model folder at ``target``: objects with ``save_pretrained`` (a model and its
    tokenizer), or a folder's path copied.

    Raises:
        ExportError: it returned neither.
    """
    parts = produced if isinstance(produced, (tuple, list)) else [produced]
    if parts and all(callable(getattr(part, "save_pretrained", None)) for part in parts):
        target.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(ImportError):  # save_pretrained's progress bar is noise in a build's output
            from transformers.utils import logging as transformers_logging

            transformers_logging.disable_progress_bar()
        for part in parts:
            part.save_pretrained(str(target))
    elif isinstance(produced, (str, Path)) and Path(produced).is_dir():
        shutil.copytree(produced, target, dirs_exist_ok=True)
    else:
        raise ExportError(
            f"model '{model.name}': step.model: {factory} returned {type(produced).__name__}; return the "
            "model and its tokenizer (model, tokenizer: transformers objects with save_pretrained) or the "
            "path of a model folder"
        )


class PythonExporter:
    """Places a Python-backend model (a user's file or a built-in step) into the version directory."""

    framework = PYTHON_BACKEND

    def __init__(self, context: ExportContext | None = None) -> None:
        self.context = context or ExportContext()

    def export(self, model: ModelSpec, source: Path, version_dir: Path) -> ExportResult:
        """Copy the model file and its files into ``version_dir``, and check the model file.

        Raises:
            ExportError: the file does not parse or import, or has no usable TritonPythonModel.
            SpecError: a listed file is missing, or a built-in step's settings are invalid.
        """
        version_dir.mkdir(parents=True, exist_ok=True)
        if model.builtin is not None:
            return self._builtin(model, version_dir)
        target = version_dir / MODEL_FILE
        files = _copy(source, target)
        for destination, path in extra_files(model, self.context.spec_dir).items():
            files += _copy(path, version_dir / destination)
        check_python_model(target, model.name)
        return ExportResult(
            files=files,
            platform=PYTHON_BACKEND,
            signature=signature_of(model),
            details={"python": sys.version.split()[0], "source": source.name},
        )

    def _builtin(self, model: ModelSpec, version_dir: Path) -> ExportResult:
        from generator.steps import step_definition

        settings = self.context.step_settings(model)
        definition = step_definition(model.builtin or "", settings, self.context.spec_dir)
        files: list[Path] = []
        if definition.model_file is not None:
            files += _copy(definition.model_file, version_dir / MODEL_FILE)
        for name, path in sorted(definition.version_files.items()):
            files += _copy(path, version_dir / name)
        if definition.write_dali is not None:  # Triton's DALI backend: a serialized pipeline
            dali = version_dir / "model.dali"
            definition.write_dali(dali, model.max_batch_size or 0)
            files = [dali, *files]
        else:
            check_python_model(version_dir / MODEL_FILE, model.name)
        return ExportResult(
            files=files,
            platform=definition.backend,
            signature=signature_of(model),
            details={"step": model.builtin, "python": sys.version.split()[0]},
        )
