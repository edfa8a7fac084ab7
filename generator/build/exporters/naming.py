"""The served names of an exported ONNX model's inputs and outputs.

Triton matches a config's tensors to the model file by name, so the file must carry the spec's names.
A spec tensor's ``source_name`` is its name inside the model when that differs from ``name``; exporters
that choose the names themselves (torch) export under temporary names and rename afterwards, because
an exporter may also give an inner value the name an output should have (torch names inner values
after module attributes: a submodule ``embedding`` yields a value ``embedding``), and ONNX Runtime
refuses a graph that defines a name twice.

Renaming goes through the ONNX IR (``onnx_ir``): a value renamed is renamed wherever it is used, and
its ``NameFixPass`` gives any inner value that clashes with a graph input or output a fresh name
(inputs and outputs keep theirs). Weights stay where they are (inside the file, or in its external-data
files, which are neither read nor moved).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from generator.core.errors import ExportError
from generator.spec.models import ModelSpec


def rename_io(proto: Any, inputs: Mapping[str, str], outputs: Mapping[str, str], model_name: str) -> Any:
    """A copy of an ONNX ``ModelProto`` with graph inputs and outputs renamed (old name -> new name).

    Inner values (and initializers) whose names clash with the new names are renamed instead.

    Raises:
        ExportError: a name to rename is not a graph input/output, or two tensors would share a name.
    """
    import onnx_ir as ir
    from onnx_ir.passes.common import NameFixPass

    model = ir.from_proto(proto)
    graph = model.graph
    renamed = []
    for what, values, mapping in (("input", graph.inputs, inputs), ("output", graph.outputs, outputs)):
        by_name = {value.name: value for value in values}
        missing = [old for old in mapping if old not in by_name]
        if missing:
            raise ExportError(
                f"model '{model_name}': the model has no {what} named {', '.join(repr(m) for m in missing)} "
                f"(its {what}s: {', '.join(str(n) for n in by_name) or 'none'}); fix source_name in the spec"
            )
        for old, new in mapping.items():
            by_name[old].name = new
            renamed.append((by_name[old], new))
    wanted = [*inputs.values(), *outputs.values()]
    if len(set(wanted)) != len(wanted):
        raise ExportError(
            f"model '{model_name}': two tensors would both be named {_repeated(wanted)}; rename one"
        )
    if inputs or outputs:
        NameFixPass()(model)
    lost = [new for value, new in renamed if value.name != new]  # NameFixPass kept another tensor's
    if lost:
        raise ExportError(
            f"model '{model_name}': {', '.join(repr(n) for n in lost)} already names another input or output of "
            "the model; choose another name in the spec"
        )
    return ir.to_proto(model)


def _repeated(names: list[str]) -> str:
    return next(repr(name) for name in names if names.count(name) > 1)


def rename_file(path: Path, inputs: Mapping[str, str], outputs: Mapping[str, str], model_name: str) -> None:
    """Rename an ONNX file's graph inputs and outputs in place (see :func:`rename_io`); nothing to do is
    a no-op that leaves the file's bytes as they were."""
    inputs = {old: new for old, new in inputs.items() if old != new}
    outputs = {old: new for old, new in outputs.items() if old != new}
    if not inputs and not outputs:
        return
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    renamed = rename_io(proto, inputs, outputs, model_name)
    partial = path.with_name(f".{path.name}.renamed")
    onnx.save(renamed, str(partial))
    os.replace(partial, path)


def source_renames(model: ModelSpec) -> tuple[dict[str, str], dict[str, str]]:
    """(inputs, outputs) ``source_name -> name`` for the spec tensors whose names differ."""

    def renames(tensors: Any) -> dict[str, str]:
        return {t.source_name: t.name for t in tensors or [] if t.source_name and t.source_name != t.name}

    return renames(model.inputs), renames(model.outputs)


def apply_source_names(model: ModelSpec, path: Path) -> None:
    """Give an ONNX file's tensors the spec's names where the spec says they are called otherwise inside.

    Raises:
        ExportError: a ``source_name`` is not a tensor of the file, or the new names collide.
    """
    inputs, outputs = source_renames(model)
    rename_file(path, inputs, outputs, model.name)
