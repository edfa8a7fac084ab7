"""What every exporter takes and returns."""

from __future__ import annotations

import importlib.util
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

from generator.build.runners import ModelRunner
from generator.core.errors import ExportError
from generator.core.signature import Signature
from generator.spec.models import ModelSpec, factory_parts

#: A terminal control sequence (colours, cursor moves), also as a repr writes it (``\\x1b[96m``, in a
#: KeyError's message): torch colours words in its error messages.
_TERMINAL_CODE = re.compile(r"(?:\x1b|\\x1b|\\033|\\u001b)(?:\[[0-?]*[ -/]*[@-~]|[@-_])")


def one_line(text: str) -> str:
    """``text`` as one plain line: terminal colour codes removed, other control characters and runs of
    whitespace (newlines too) made one space."""
    text = _TERMINAL_CODE.sub("", text)
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())


def error_line(exc: BaseException) -> str:
    """``Type: first line of the message`` as one plain line (see :func:`one_line`); ``Type`` alone when
    the message is empty."""
    lines = [one_line(line) for line in _TERMINAL_CODE.sub("", str(exc)).splitlines()]
    lines = [line for line in lines if line]
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def check_opset(model: ModelSpec, written: int | None, exporter: str, honoured: str) -> None:
    """Refuse an export that did not write the opset the spec asks for (exporters fall back silently).

    Args:
        model: The model; its ``opset`` is what was asked for (None: anything goes).
        written: The ``ai.onnx`` opset of the written file.
        exporter: Who wrote it, for the message (``torch.onnx.export``).
        honoured: Which opsets that exporter writes, and what to do (the message's fix).

    Raises:
        ExportError: the opsets differ.
    """
    if model.opset is not None and written != model.opset:
        raise ExportError(
            f"model '{model.name}': {exporter} wrote opset {written}, not the opset {model.opset} the spec "
            f"asks for; {honoured}"
        )


@dataclass
class ExportResult:
    """An exported model in a version directory.

    Attributes:
        files: Files written into the version directory (the first is the model file).
        platform: Triton platform of the artifact (``onnxruntime_onnx``).
        signature: I/O read back from the written artifact.
        reference: Runs the source model (for parity); ``None`` when the source is the artifact itself.
        runner: Runs the artifact; ``None`` means an ONNX file that parity runs in ONNX Runtime.
        details: Facts for the manifest (opset, framework version, export time); plain data.
        cc_model_filenames: Plan file per GPU compute capability (``{"8.0": "model_sm80.plan"}``) when
            one plan was built per capability, for the config's ``cc_model_filenames``; else ``None``.
    """

    files: list[Path]
    platform: str
    signature: Signature
    reference: ModelRunner | None = None
    runner: ModelRunner | None = None
    details: dict[str, Any] = field(default_factory=dict)
    cc_model_filenames: dict[str, str] | None = None

    @property
    def model_file(self) -> Path:
        """The file Triton loads (``model.onnx``)."""
        return self.files[0]


@dataclass(frozen=True)
class ExportContext:
    """What a build knows beyond the model's spec entry.

    Attributes:
        spec_dir: Directory of the spec file (relative data paths resolve against it).
        gpus: GPUs detected with NVML for this build (``--gpus all``); empty when not detected.
        gpu_ids: GPU ids the build targets (``--gpus``), or ``None`` for every visible GPU.
        step_files: Model name -> built-in step settings replaced by files made at build time (a
            ``tokenizer: text.py:tokenizer`` factory's saved tokenizer.json).
    """

    spec_dir: Path = Path(".")
    gpus: tuple[Any, ...] = ()
    gpu_ids: tuple[int, ...] | None = None
    step_files: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    def step_settings(self, model: ModelSpec) -> dict[str, Any]:
        """A built-in step's settings, with files made at build time in place of their factories."""
        return {**(model.step or {}), **self.step_files.get(model.name, {})}


class Exporter(Protocol):
    """Exports one model's source into a version directory."""

    framework: str

    def export(self, model: ModelSpec, source: Path, version_dir: Path) -> ExportResult:
        """Write the served artifact into ``version_dir`` and describe it."""
        ...


def load_factory(source: Path, function: str, model_name: str) -> Callable[[], Any]:
    """Import ``function`` from the Python file ``source`` (not added to ``sys.path`` for good).

    The module is registered in ``sys.modules`` while it runs and stays there, as an imported module
    would, so code that looks itself up there (dataclasses, ``inspect.getsource``, pickling) works.

    Raises:
        ExportError: the file does not import (or exits while importing), or has no callable of that name.
    """
    module_name = f"_tritongen_factory_{model_name.replace('-', '_').replace('.', '_')}"
    spec = importlib.util.spec_from_file_location(module_name, source)
    if spec is None or spec.loader is None:
        raise ExportError(f"model '{model_name}': cannot import {source}; the source must be a .py file")
    module: ModuleType = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    sys.path.insert(0, str(source.parent))
    try:
        spec.loader.exec_module(module)
    except KeyboardInterrupt:
        sys.modules.pop(module_name, None)
        raise
    except BaseException as exc:  # SystemExit or KeyboardInterrupt from the module is its failure too
        sys.modules.pop(module_name, None)
        raise ExportError(
            f"model '{model_name}': importing {source} failed: {error_line(exc)}; fix the factory module"
        ) from exc
    finally:
        sys.path.remove(str(source.parent))
    factory = getattr(module, function, None)
    if not callable(factory):
        found = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        raise ExportError(
            f"model '{model_name}': {source.name} has no function '{function}'; "
            f"use one of {', '.join(found) or '(none)'} after the ':' in source"
        )
    return factory


def call_function(function: Callable[[], Any], what: str) -> Any:
    """Call a user's function; anything it raises (``sys.exit()`` too) is an ExportError naming ``what``.

    Raises:
        ExportError: ``WHAT raised ...; fix the factory``.
    """
    try:
        return function()
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # sys.exit() in a factory must not end the build
        raise ExportError(f"{what} raised {error_line(exc)}; fix the factory") from exc


def call_factory(model: ModelSpec, source: Path) -> tuple[Any, Any]:
    """Run the ``file.py:function`` factory a model's source names.

    Returns:
        ``(model_object, example_inputs)``; ``example_inputs`` is ``None`` when the factory returned
        only the model.

    Raises:
        ExportError: the factory cannot be imported, raises, or exits.
    """
    parts = factory_parts(model.source)
    assert parts is not None
    factory = load_factory(source, parts[1], model.name)
    produced = call_function(factory, f"model '{model.name}': the factory {model.source}")
    return produced if isinstance(produced, tuple) and len(produced) == 2 else (produced, None)
