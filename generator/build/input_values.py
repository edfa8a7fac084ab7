"""The inputs this tool makes up for a model: the values integer inputs may take and the lengths of -1 axes.

Parity, the optimize gate, the warm-up and perf_analyzer's data all draw their inputs through here, so
none of them sends a token id past the end of the vocabulary or a length the model was not meant for.

* Integer ranges (:func:`value_ranges`): a model's ``values`` entry; else a range read from the model
  (:func:`index_ranges`: an input used as the indices of a ``Gather`` whose data is a table of ``V`` rows
  can take ``0 .. V-1``); else ``0 .. 1``, which indexes, flags and counts alike.
* Lengths (:func:`shape_points`): each input's -1 axes at ``min``, ``opt`` and ``max`` from the model's
  ``shapes`` (else ``tensorrt.shapes``); an input without an entry takes the sizes of the first input
  whose entry has as many -1 axes (``input_ids`` and ``attention_mask`` grow together), else 1, 16, 64.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from generator.core import dtypes
from generator.core.errors import SpecError
from generator.core.signature import Signature
from generator.spec.models import ModelSettings, ShapeRange

#: An integer input's values, both ends included.
Range = tuple[int, int]

POINTS = ("min", "opt", "max")
#: Sizes of a -1 axis when no ``shapes`` entry says otherwise: one token, a sentence, a paragraph.
DEFAULT_LENGTHS = {"min": 1, "opt": 16, "max": 64}
#: The range of an integer input nothing else bounds.
DEFAULT_RANGE: Range = (0, 1)
#: Ops an index passes through unchanged in value on its way to a ``Gather``.
_INDEX_PASS_THROUGH = frozenset({"Cast", "Unsqueeze", "Squeeze", "Reshape", "Flatten", "Identity", "Expand"})
#: Ops that hand on a table (an initializer) without changing its shape.
_TABLE_PASS_THROUGH = frozenset({"Cast", "Identity", "DequantizeLinear"})
_LIBTORCH_SUFFIX = re.compile(r"^(.*)__\d+$")
_STRINGS = (b"hello world", b"the quick brown fox", b"tritongen", b"a b c d e f g", b"Triton serves text")


@dataclass(frozen=True)
class InputTensor:
    """One input as requests carry it.

    Attributes:
        name: The served name.
        dtype: Triton dtype without ``TYPE_`` (``INT64``, ``STRING``).
        dims: Shape without the batch axis; -1 for a variable axis.
    """

    name: str
    dtype: str
    dims: tuple[int, ...]


@dataclass(frozen=True)
class ShapePoint:
    """Concrete shapes of every input at one of ``min``, ``opt``, ``max``.

    Attributes:
        label: ``min``, ``opt`` or ``max``.
        shapes: Input name -> shape without the batch axis, every axis a size.
        lengths: Input name -> the sizes of its -1 axes (only inputs that have some).
    """

    label: str
    shapes: dict[str, list[int]]
    lengths: dict[str, list[int]] = field(default_factory=dict)

    def describe(self) -> str:
        """`` at length opt (input_ids [16], mask [16])``, or nothing for a model without -1 axes."""
        if not self.lengths:
            return ""
        sizes = ", ".join(f"{name} {sizes}" for name, sizes in self.lengths.items())
        return f" at length {self.label} ({sizes})"


def warmup_file_name(name: str) -> str:
    """The file under ``<model>/warmup/`` that holds an input's warm-up sample (raw little-endian values):
    the input's name where it is a safe file name, else a safe form of it with a hash that keeps it unique."""
    if re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,100}", name):
        return name
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:80].lstrip(".-")
    return f"{safe}_{zlib.crc32(name.encode()):08x}"


def is_integer(dtype: str) -> bool:
    """Whether requests carry integers (or booleans) in this Triton dtype."""
    return dtype == "BOOL" or dtype.startswith(("INT", "UINT"))


def lookup(mapping: Mapping[str, Any] | None, name: str) -> Any:
    """``mapping[name]``, also for a TorchScript tensor ``NAME__0`` listed under ``NAME``; else None."""
    if not mapping:
        return None
    if name in mapping:
        return mapping[name]
    match = _LIBTORCH_SUFFIX.match(name)
    return mapping.get(match.group(1)) if match else None


def signature_inputs(
    signature: Signature, batching: bool, spec_dims: Mapping[str, Sequence[int]]
) -> list[InputTensor]:
    """A model file's inputs (batch axis dropped), a dynamic axis the spec fixes taking the spec's size.

    Args:
        signature: The model file's I/O.
        batching: Whether the first axis is the batch axis.
        spec_dims: Input name -> the shape the model takes per the spec (``reshape`` else ``dims``).
    """
    tensors = []
    for tensor in signature.inputs:
        rest = list(tensor.shape[1:] if batching else tensor.shape)
        wanted = lookup(spec_dims, tensor.name)
        if wanted is not None and len(wanted) == len(rest):
            rest = [w if r == -1 else r for r, w in zip(rest, wanted, strict=True)]
        tensors.append(InputTensor(tensor.name, tensor.dtype, tuple(rest)))
    return tensors


def config_inputs(inputs: Iterable[Mapping[str, Any]]) -> list[InputTensor]:
    """The inputs of config data (``build_config``'s ``input`` list, proto field names)."""
    return [
        InputTensor(
            str(t["name"]), str(t["data_type"]).removeprefix("TYPE_"), tuple(int(d) for d in t["dims"])
        )
        for t in inputs
    ]


def _shape_entry(settings: ModelSettings | None, name: str) -> tuple[ShapeRange | None, str]:
    """An input's ``shapes`` entry (the model-level one wins over ``tensorrt.shapes``) and its field."""
    if settings is None:
        return None, ""
    given = lookup(settings.shapes, name)
    if given is not None:
        return given, f"shapes.{name}"
    given = lookup(settings.tensorrt.shapes if settings.tensorrt else None, name)
    return given, f"tensorrt.shapes.{name}"


def free_sizes(model_name: str, tensor: InputTensor, given: ShapeRange, where: str) -> dict[str, list[int]]:
    """The sizes of an input's -1 axes at each point, from a ``shapes`` entry.

    The entry gives one size per -1 axis, or one per axis (the fixed ones as the input declares them).

    Raises:
        SpecError: the entry has another rank, or changes a fixed axis.
    """
    free = [i for i, d in enumerate(tensor.dims) if d == -1]
    rank = len(given.min)
    if rank == len(free):
        return {p: list(getattr(given, p)) for p in POINTS}
    if rank == len(tensor.dims):
        fixed = [i for i in range(rank) if i not in free]
        if any(getattr(given, p)[i] != tensor.dims[i] for p in POINTS for i in fixed):
            raise SpecError(
                f"model '{model_name}': {where} changes a fixed axis of input '{tensor.name}' "
                f"{list(tensor.dims)}; give sizes for its -1 axes only"
            )
        return {p: [getattr(given, p)[i] for i in free] for p in POINTS}
    raise SpecError(
        f"model '{model_name}': {where} gives {rank} sizes but input '{tensor.name}' has dims "
        f"{list(tensor.dims)} ({len(free)} of them -1); give one size per -1 axis"
    )


def _check_names(model_name: str, settings: ModelSettings | None, tensors: Sequence[InputTensor]) -> None:
    """Refuse ``shapes`` and ``values`` entries for inputs the model lacks, and ``values`` for non-integers."""
    if settings is None:
        return
    for setting in ("shapes", "values"):
        for key in getattr(settings, setting) or {}:
            tensor = next((t for t in tensors if lookup({key: True}, t.name)), None)
            if tensor is None:
                raise SpecError(
                    f"model '{model_name}': {setting}.{key} names no input of the model (it has "
                    f"{', '.join(t.name for t in tensors) or 'none'}); fix the name"
                )
            if setting == "values" and not is_integer(tensor.dtype):
                raise SpecError(
                    f"model '{model_name}': values.{key} applies to integer inputs, but '{tensor.name}' is "
                    f"{tensor.dtype}; remove it"
                )


def axis_sizes(
    model_name: str, settings: ModelSettings | None, tensors: Sequence[InputTensor], defaults: bool = True
) -> dict[str, dict[str, list[int]]]:
    """Input name -> point (``min``, ``opt``, ``max``) -> sizes of its -1 axes, for inputs that have any.

    From the input's ``shapes`` entry (else ``tensorrt.shapes``); else the first entry with as many -1
    axes; else (with ``defaults``) 1, 16 and 64, or (without) no sizes for that input.

    Raises:
        SpecError: a ``shapes`` or ``values`` entry names no input or does not fit its input.
    """
    _check_names(model_name, settings, tensors)
    sizes: dict[str, dict[str, list[int]]] = {}
    for tensor in tensors:
        if -1 in tensor.dims:
            given, where = _shape_entry(settings, tensor.name)
            if given is not None:
                sizes[tensor.name] = free_sizes(model_name, tensor, given, where)
    given_sizes = list(sizes.values())
    for tensor in tensors:
        count = list(tensor.dims).count(-1)
        if count and tensor.name not in sizes:
            same = next((s for s in given_sizes if len(s["min"]) == count), None)
            if same is not None:
                sizes[tensor.name] = same
            elif defaults:
                sizes[tensor.name] = {p: [DEFAULT_LENGTHS[p]] * count for p in POINTS}
    return sizes


def fill(dims: Sequence[int], sizes: Sequence[int]) -> list[int]:
    """``dims`` with its -1 axes replaced by ``sizes``, in order."""
    free = iter(sizes)
    return [next(free) if d == -1 else d for d in dims]


def shape_points(
    model_name: str, settings: ModelSettings | None, tensors: Sequence[InputTensor]
) -> list[ShapePoint]:
    """The input shapes at ``min``, ``opt`` and ``max`` (one point when no input has a -1 axis).

    Points that come out equal are given once (the first label kept).

    Raises:
        SpecError: a ``shapes`` or ``values`` entry names no input or does not fit its input.
    """
    sizes = axis_sizes(model_name, settings, tensors)
    points: list[ShapePoint] = []
    for label in POINTS:
        shapes = {
            t.name: fill(t.dims, sizes[t.name][label]) if t.name in sizes else list(t.dims) for t in tensors
        }
        lengths = {t.name: list(sizes[t.name][label]) for t in tensors if t.name in sizes}
        if all(p.shapes != shapes for p in points):
            points.append(ShapePoint(label, shapes, lengths))
    return points


def point(points: Sequence[ShapePoint], label: str) -> ShapePoint:
    """The point of that label, else the nearest one kept (points equal to an earlier one are dropped)."""
    for candidate in points:
        if candidate.label == label:
            return candidate
    return points[-1] if label == "max" else points[0]


def index_ranges(onnx_file: str | Path) -> dict[str, Range]:
    """Ranges an ONNX model shows for its integer inputs: ``0 .. V-1`` for an input used as the indices of
    a ``Gather`` (possibly through Cast, Unsqueeze, Reshape...) whose data is a table of ``V`` rows.

    A table is an initializer or a ``Constant`` (possibly cast or dequantized). An input that indexes
    several tables takes the smallest range.
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_file), load_external_data=False)
    graph = model.graph
    tables: dict[str, list[int]] = {t.name: list(t.dims) for t in graph.initializer}
    consumers: dict[str, list[tuple[Any, int]]] = {}
    for node in graph.node:
        if node.op_type == "Constant":
            for attribute in node.attribute:
                if attribute.name == "value" and attribute.HasField("t"):
                    tables[node.output[0]] = list(numpy_helper.to_array(attribute.t).shape)
        elif node.op_type in _TABLE_PASS_THROUGH and node.input and node.input[0] in tables:
            tables[node.output[0]] = tables[node.input[0]]
        for index, name in enumerate(node.input):
            consumers.setdefault(name, []).append((node, index))
    initializers = {t.name for t in graph.initializer}
    ranges: dict[str, Range] = {}
    for value in graph.input:
        if value.name in initializers:
            continue
        rows = _indexed_rows(value.name, consumers, tables)
        if rows:
            ranges[value.name] = (0, min(rows) - 1)
    return ranges


def _indexed_rows(
    name: str, consumers: Mapping[str, list[tuple[Any, int]]], tables: Mapping[str, list[int]]
) -> list[int]:
    """The row counts of the tables a value indexes, following it through value-preserving ops."""
    rows: list[int] = []
    pending, seen = [name], {name}
    while pending:
        current = pending.pop()
        for node, index in consumers.get(current, []):
            if node.op_type in _INDEX_PASS_THROUGH and index == 0:
                for out in node.output[:1]:
                    if out not in seen:
                        seen.add(out)
                        pending.append(out)
            elif node.op_type == "Gather" and index == 1 and node.input[0] in tables:
                shape = tables[node.input[0]]
                axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
                if shape and -len(shape) <= axis < len(shape) and shape[axis] > 0:
                    rows.append(int(shape[axis]))
    return rows


def artifact_index_ranges(
    model_file: Path | None, details: Mapping[str, Any] | None = None
) -> dict[str, Range]:
    """:func:`index_ranges` of a served ONNX file, else the ranges its exporter recorded in ``details``
    (a TensorRT plan's, read from the ONNX file it was built from); nothing where neither is known."""
    if model_file is not None and model_file.suffix == ".onnx" and model_file.is_file():
        try:
            return index_ranges(model_file)
        except Exception:  # an unreadable file: its own checks report it
            return {}
    recorded = (details or {}).get("index_ranges") or {}
    return {str(k): (int(v[0]), int(v[1])) for k, v in recorded.items()}


def value_ranges(
    model_name: str,
    settings: ModelSettings | None,
    tensors: Sequence[InputTensor],
    inferred: Mapping[str, Range] | None = None,
) -> dict[str, Range]:
    """The values each integer input may take: its ``values`` entry, else the ``inferred`` range (read
    from the model), else 0..1 (``False``/``True`` for BOOL). Unsigned inputs never go below 0.

    Raises:
        SpecError: a ``values`` entry names no input, or an input that is not an integer.
    """
    _check_names(model_name, settings, tensors)
    ranges: dict[str, Range] = {}
    for tensor in tensors:
        if not is_integer(tensor.dtype):
            continue
        given = lookup(settings.values if settings is not None else None, tensor.name)
        found = (given.min, given.max) if given is not None else lookup(inferred, tensor.name)
        low, high = found if found is not None else DEFAULT_RANGE
        ranges[tensor.name] = _clipped(tensor.dtype, low, high)
    return ranges


def _clipped(dtype: str, low: int, high: int) -> Range:
    if dtype == "BOOL":
        return max(0, min(low, 1)), max(0, min(high, 1))
    info = np.iinfo(dtypes.to_numpy(dtype))
    return max(int(info.min), min(low, int(info.max))), max(int(info.min), min(high, int(info.max)))


def sample(
    rng: np.random.Generator, dtype: str, shape: Sequence[int], value_range: Range | None
) -> np.ndarray:
    """Seeded values of one input: floats from a standard normal, integers uniform in ``value_range``
    (default 0..1), a few ASCII sentences for STRING (as numpy object arrays of bytes)."""
    shape = tuple(shape)
    if dtype == "STRING":
        picks = rng.integers(0, len(_STRINGS), shape)
        return np.array([_STRINGS[i] for i in picks.reshape(-1)], dtype=object).reshape(shape)
    numpy_dtype = dtypes.to_numpy(dtype)
    if is_integer(dtype):
        low, high = value_range or DEFAULT_RANGE
        drawn = rng.integers(low, high, shape, endpoint=True, dtype=np.uint64 if low >= 0 else np.int64)
        return drawn.astype(numpy_dtype)
    return rng.standard_normal(shape).astype(numpy_dtype)
