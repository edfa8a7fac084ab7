"""Names a spec must not give twice, each repeat reported at its field path with the first one.

Triton keeps a model's inputs (and outputs) in a map by name: a second input of the same name is
dropped from the map but still counted as required, so every request fails. An ONNX graph's inputs and
outputs share one set of value names (a served name is what the exported file is renamed to), so a
non-Python model cannot have an input and an output of one name; a Python model can (Triton and the
Python backend keep them apart). An ensemble's tensors are one set of names: its inputs, its outputs
and what its steps write (Triton's ensemble graph is keyed by tensor name). Model names identify
model directories; a Python model's ``files`` land beside ``model.py`` under their last path
component, so two of them with one name (or one named ``model.py``) would overwrite each other.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from generator.spec.models import EnsembleSpec, ModelSpec, Spec, TensorSpec

#: The file a Python model is served from, in its version directory.
PYTHON_MODEL_FILE = "model.py"


def shown(name: str) -> str:
    """A name quoted for a one-line message: ``'x'``, or JSON-escaped when it holds control characters."""
    return f"'{name}'" if name.isprintable() else json.dumps(name)


def repeats(names: Sequence[object]) -> Iterator[tuple[int, int]]:
    """``(index, index of its first occurrence)`` for each item equal to an earlier one."""
    first: dict[object, int] = {}
    for index, name in enumerate(names):
        if name in first:
            yield index, first[name]
        else:
            first[name] = index


def files_destination(entry: str) -> str:
    """The name a ``files`` entry is copied under, beside ``model.py``: its last path component.

    ``''`` for an entry that names no file of its own (``.``, ``a/..``); ``..`` for one ending in ``..``.
    """
    normal = posixpath.normpath(entry)
    return "" if normal == "." else posixpath.basename(normal)


def model_problems(model: ModelSpec, where: str) -> list[str]:
    """Repeated tensor names and ``files`` destinations of one model (``where``: ``models[1]``)."""
    found: list[str] = []
    for kind in ("input", "output"):
        tensors: list[TensorSpec] = getattr(model, f"{kind}s") or []
        for index, first in repeats([t.name for t in tensors]):
            found.append(
                f"{where}.{kind}s[{index}].name: duplicate {kind} name {shown(tensors[index].name)} (also "
                f"{where}.{kind}s[{first}]); give each {kind} its own name"
            )
        found += _source_repeats(tensors, kind, where)
    if model.target != "python":
        inputs = {t.name: i for i, t in reversed(list(enumerate(model.inputs or [])))}
        for index, tensor in enumerate(model.outputs or []):
            if tensor.name in inputs:
                found.append(
                    f"{where}.outputs[{index}].name: {shown(tensor.name)} is also an input ({where}.inputs"
                    f"[{inputs[tensor.name]}]); a model file's inputs and outputs share one set of names: "
                    "rename one"
                )
    return found + _files_problems(model.files or [], where)


def _source_repeats(tensors: list[TensorSpec], kind: str, where: str) -> list[str]:
    """Two served tensors renamed from one tensor of the model file (``source_name``)."""
    if not any(t.source_name for t in tensors):
        return []
    found = []
    for index, first in repeats([t.source_name or t.name for t in tensors]):
        if tensors[index].name == tensors[first].name:
            continue  # reported as a duplicate name
        found.append(
            f"{where}.{kind}s[{index}].source_name: the model's {kind} {shown(tensors[index].source_name or tensors[index].name)} "
            f"is already served as {shown(tensors[first].name)} ({where}.{kind}s[{first}]); a model {kind} is "
            "served under one name"
        )
    return found


def _files_problems(files: list[str], where: str) -> list[str]:
    found = []
    destinations = [files_destination(entry) for entry in files]
    for index, (entry, destination) in enumerate(zip(files, destinations, strict=True)):
        if destination in ("", ".."):
            found.append(
                f"{where}.files[{index}]: {shown(entry)} names a directory above or at the spec's, not a file "
                "or directory of its own; list what the model needs"
            )
        elif destination == PYTHON_MODEL_FILE:
            found.append(
                f"{where}.files[{index}]: {shown(entry)} would be copied over the model file {PYTHON_MODEL_FILE} "
                "(files land beside it by name); rename it"
            )
    for index, first in repeats(destinations):
        if destinations[index] not in ("", "..", PYTHON_MODEL_FILE):
            found.append(
                f"{where}.files[{index}]: duplicate destination {shown(destinations[index])} (also {where}.files"
                f"[{first}] {shown(files[first])}); files land beside model.py by their last name: rename one"
            )
    return found


def spec_problems(spec: Spec) -> list[str]:
    """Ensemble names taken by a model or an earlier ensemble, and each ensemble's repeated tensors."""
    found: list[str] = []
    taken = {model.name: f"models[{i}]" for i, model in reversed(list(enumerate(spec.models)))}
    for index, ensemble in enumerate(spec.ensembles):
        where = f"ensembles[{index}]"
        if ensemble.name in taken:
            found.append(
                f"{where}.name: {shown(ensemble.name)} is already the name of {taken[ensemble.name]}; "
                "models and ensembles share one set of names: rename it"
            )
        else:
            taken[ensemble.name] = where
            found += [
                f"{where}.steps[{step}].model: runs the ensemble itself; name another model"
                for step, entry in enumerate(ensemble.steps)
                if entry.model == ensemble.name
            ]
        found += _ensemble_problems(ensemble, where)
    return found


def _ensemble_problems(ensemble: EnsembleSpec, where: str) -> list[str]:
    from generator.spec.models import field_path  # spec imports this module

    found: list[str] = []
    declared: dict[str, str] = {}  # ensemble tensor -> where it is declared (input or output)
    for kind in ("input", "output"):
        tensors: list[TensorSpec] = getattr(ensemble, f"{kind}s") or []
        for index, first in repeats([t.name for t in tensors]):
            found.append(
                f"{where}.{kind}s[{index}].name: duplicate {kind} name {shown(tensors[index].name)} (also "
                f"{where}.{kind}s[{first}]); give each {kind} its own name"
            )
        for index, tensor in enumerate(tensors):
            other = declared.get(tensor.name)
            if kind == "output" and other is not None and other.startswith(f"{where}.inputs"):
                found.append(
                    f"{where}.outputs[{index}].name: {shown(tensor.name)} is also an input of the ensemble "
                    f"({other}); an ensemble's inputs and outputs are one set of tensors: rename one"
                )
            declared.setdefault(tensor.name, f"{where}.{kind}s[{index}]")
    inputs = {t.name: f"{where}.inputs[{i}]" for i, t in reversed(list(enumerate(ensemble.inputs or [])))}
    writers: dict[str, str] = {}
    for step_index, step in enumerate(ensemble.steps):
        for output, tensor in step.output_map.items():
            path = field_path(("steps", step_index, "output_map", output), where)
            if tensor in inputs:
                found.append(
                    f"{path}: writes {shown(tensor)}, an input of the ensemble ({inputs[tensor]}); the request "
                    "gives it, so no step may write it: write another tensor"
                )
            elif tensor in writers:
                found.append(
                    f"{path}: writes {shown(tensor)}, which {writers[tensor]} writes too; each ensemble tensor is "
                    "written once: write another tensor"
                )
            else:
                writers[tensor] = path
    return found
