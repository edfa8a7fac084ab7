"""Parity: the exported model, run in ONNX Runtime, against the source framework on the same inputs.

Inputs are drawn from a seeded generator at each batch size (by default 1 and ``max_batch_size``) and,
for inputs with -1 axes, at each of the ``min``, ``opt`` and ``max`` lengths (the model's ``shapes``,
else 1, 16 and 64; see :mod:`generator.build.input_values`). Integer inputs take values from their range
(``values``, else what the model shows, else 0..1). Every mismatch (a missing output, a shape, values
beyond ``atol + rtol * |reference|``) is collected into one error naming its batch size and length; the
figures go into the build manifest either way.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from generator.build.exporters.base import ExportResult
from generator.build.input_values import (
    Range,
    ShapePoint,
    artifact_index_ranges,
    sample,
    shape_points,
    signature_inputs,
    value_ranges,
)
from generator.build.runners import onnx_runner
from generator.core import dtypes
from generator.core.errors import VerificationError
from generator.core.signature import Signature
from generator.spec.models import ModelSpec, Verify


@dataclass
class OutputParity:
    """How one output compared at one batch size (and length: ``min``, ``opt`` or ``max``)."""

    output: str
    batch_size: int
    max_abs_error: float
    max_rel_error: float
    mismatched: int
    total: int
    length: str | None = None


@dataclass
class ParityReport:
    """Parity figures for one model."""

    compared: bool
    atol: float
    rtol: float
    batch_sizes: list[int]
    outputs: list[OutputParity] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    #: Length label -> input -> sizes of its -1 axes (empty when no input has a -1 axis).
    lengths: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    #: Integer input -> [low, high], the values its parity inputs were drawn from.
    value_ranges: dict[str, list[int]] = field(default_factory=dict)

    @property
    def max_abs_error(self) -> float:
        """Largest absolute error over every output and batch size."""
        return max((o.max_abs_error for o in self.outputs), default=0.0)

    @property
    def max_rel_error(self) -> float:
        """Largest relative error over every output and batch size."""
        return max((o.max_rel_error for o in self.outputs), default=0.0)

    def per_length(self) -> dict[str, dict[str, float]]:
        """Length label -> the largest absolute and relative error at that length."""
        figures: dict[str, dict[str, float]] = {}
        for label in self.lengths:
            at = [o for o in self.outputs if o.length == label]
            figures[label] = {
                "max_abs_error": max((o.max_abs_error for o in at), default=0.0),
                "max_rel_error": max((o.max_rel_error for o in at), default=0.0),
            }
        return figures

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the manifest."""
        data = asdict(self)
        data["max_abs_error"] = self.max_abs_error
        data["max_rel_error"] = self.max_rel_error
        data["per_length"] = self.per_length()
        return data


def input_plan(
    model: ModelSpec,
    signature: Signature,
    batching: bool,
    model_file: Path | None,
    details: dict | None = None,
) -> tuple[list[ShapePoint], dict[str, Range]]:
    """The shapes (``min``/``opt``/``max``) and integer ranges that parity and the optimize gate use.

    Args:
        model: The spec entry (``shapes``, ``values``, spec dims).
        signature: The exported model's I/O.
        batching: Whether the first axis is the batch axis.
        model_file: The exported file, read for index ranges when it is ONNX.
        details: The exporter's details (a TensorRT plan's index ranges).

    Raises:
        SpecError: a ``shapes`` or ``values`` entry does not fit the model's inputs.
    """
    spec_dims = {t.name: (t.reshape or t.dims) for t in model.inputs or []}
    tensors = signature_inputs(signature, batching, spec_dims)
    inferred = artifact_index_ranges(model_file, details)
    return shape_points(model.name, model, tensors), value_ranges(model.name, model, tensors, inferred)


def make_inputs(
    signature: Signature,
    model: ModelSpec,
    batch_size: int | None,
    seed: int,
    shapes: ShapePoint | None = None,
    ranges: dict[str, Range] | None = None,
) -> dict[str, np.ndarray]:
    """Seeded inputs matching ``signature`` (``batch_size`` None: the model has no batch axis).

    Args:
        signature: The model's I/O.
        model: Its spec entry.
        batch_size: Rows per input, or ``None`` for a model without a batch axis.
        seed: Seed of the values.
        shapes: The input shapes to use (from :func:`input_plan`); default: its ``opt`` point.
        ranges: Integer input -> the values to draw from; default: from :func:`input_plan`.
    """
    if shapes is None or ranges is None:
        points, planned = input_plan(model, signature, batch_size is not None, None)
        shapes = shapes or next((p for p in points if p.label == "opt"), points[0])
        ranges = planned if ranges is None else ranges
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for tensor in signature.inputs:
        shape = ([batch_size] if batch_size is not None else []) + shapes.shapes[tensor.name]
        dtype = dtypes.to_numpy(tensor.dtype)
        _check_size(model.name, tensor.name, shape, dtype.itemsize if dtype.kind != "O" else 8)
        feeds[tensor.name] = sample(rng, tensor.dtype, shape, ranges.get(tensor.name))
    return feeds


#: The largest input the parity check makes (per tensor); more is a spec mistake, not a model.
MAX_INPUT_BYTES = 1 << 30


def _check_size(model: str, tensor: str, shape: list[int], itemsize: int) -> None:
    size = math.prod(shape) * itemsize
    if size > MAX_INPUT_BYTES:
        raise VerificationError(
            f"model '{model}': parity input '{tensor}' of shape {shape} would take {size / (1 << 30):,.1f} GiB; "
            "set verify.batch_sizes to smaller batches (or check max_batch_size, dims and shapes in the spec)"
        )


def compare_output(
    name: str,
    batch: int,
    got: np.ndarray,
    want: np.ndarray,
    atol: float,
    rtol: float,
    length: str | None = None,
) -> OutputParity:
    """Compare one output with its reference (``|got - want| <= atol + rtol * |want|``, NaNs equal)."""
    got64 = np.atleast_1d(np.asarray(got, dtype=np.float64))  # a scalar output too
    want64 = np.atleast_1d(np.asarray(want, dtype=np.float64))
    diff = np.abs(got64 - want64)
    both_nan = np.isnan(got64) & np.isnan(want64)
    diff[both_nan] = 0.0
    rel = diff / np.maximum(np.abs(want64), np.finfo(np.float64).tiny)
    bad = ~(diff <= atol + rtol * np.abs(want64))
    return OutputParity(
        output=name,
        batch_size=batch,
        max_abs_error=float(diff.max(initial=0.0)),
        max_rel_error=float(np.where(diff > 0, rel, 0.0).max(initial=0.0)),
        mismatched=int(bad.sum()),
        total=int(diff.size),
        length=length,
    )


def check_parity(
    model: ModelSpec, result: ExportResult, max_batch_size: int, settings: Verify
) -> ParityReport:
    """Compare the artifact against the source at each batch size and each length of the -1 axes.

    Without a reference (an ONNX source), the artifact is still run at each batch size and length,
    which proves it loads and accepts them.

    Raises:
        VerificationError: any output differs, or the artifact fails to run; one line per problem.
        SpecError: a ``shapes`` or ``values`` entry does not fit the model's inputs.
    """
    batching = max_batch_size > 0
    sizes = settings.batch_sizes or ([1, max_batch_size] if batching else [1])
    sizes = sorted(set(sizes))
    report = ParityReport(result.reference is not None, settings.atol, settings.rtol, sizes)
    if batching and not result.signature.supports_batching:
        fixed = [
            f"{t.name} {list(t.shape)}"
            for t in result.signature.inputs + result.signature.outputs
            if not t.batch_dynamic
        ]
        raise VerificationError(
            f"model '{model.name}': max_batch_size is {max_batch_size} but the model has a fixed first dimension "
            f"({', '.join(fixed)}), so Triton cannot batch it; set max_batch_size: 0 or export it with a dynamic batch axis"
        )
    points, ranges = input_plan(model, result.signature, batching, result.model_file, result.details)
    report.lengths = {p.label: p.lengths for p in points if p.lengths}
    report.value_ranges = {name: list(r) for name, r in ranges.items()}
    try:
        exported = result.runner or onnx_runner(result.model_file)
    except Exception as exc:  # ONNX Runtime refuses the graph itself (e.g. int64 fed into a float Gemm)
        reason = re.sub(r"Load model from \S+ failed:", "", " ".join(str(exc).split()))[:400]
        raise VerificationError(
            f"model '{model.name}': ONNX Runtime cannot load the exported model: {reason}; check that the "
            "spec's input dtypes are the ones the model computes with (cast inside forward() if needed)"
        ) from exc
    for size in sizes:
        for index, shapes in enumerate(points):
            seed = settings.seed + size + 7919 * index
            feeds = make_inputs(result.signature, model, size if batching else None, seed, shapes, ranges)
            _compare_at(model, result, exported, feeds, size, shapes, report, settings)
    if report.problems:
        raise VerificationError(*report.problems)
    return report


def _compare_at(
    model: ModelSpec,
    result: ExportResult,
    exported: Any,
    feeds: dict[str, np.ndarray],
    size: int,
    shapes: ShapePoint,
    report: ParityReport,
    settings: Verify,
) -> None:
    """Run the artifact (and the reference) on one set of inputs; record figures and problems."""
    where = f"at batch {size}{shapes.describe()}"
    try:
        got = exported(feeds)
    except Exception as exc:
        report.problems.append(
            f"model '{model.name}' {where}: the exported model failed to run: {' '.join(str(exc).split())[:400]}"
            + ("; set shapes in the spec to the lengths the model takes" if shapes.lengths else "")
        )
        return
    if result.reference is None:
        return
    want = result.reference(feeds)
    label = shapes.label if shapes.lengths else None
    for out_name, reference in want.items():
        if out_name not in got:
            problem = f"model '{model.name}': output '{out_name}' is missing from the export"
            if problem not in report.problems:
                report.problems.append(problem)
            continue
        if got[out_name].shape != reference.shape:
            report.problems.append(
                f"model '{model.name}' output '{out_name}' {where}: shape {list(got[out_name].shape)} "
                f"but the source gives {list(reference.shape)}"
            )
            continue
        parity = compare_output(out_name, size, got[out_name], reference, settings.atol, settings.rtol, label)
        report.outputs.append(parity)
        if parity.mismatched:
            report.problems.append(
                f"model '{model.name}' output '{out_name}' {where}: {parity.mismatched} of "
                f"{parity.total} values differ beyond atol={settings.atol:g} + rtol={settings.rtol:g}*|ref| "
                f"(max abs error {parity.max_abs_error:.3g}, max rel error {parity.max_rel_error:.3g}); "
                "fix the export or loosen verify.atol/rtol in the spec"
            )
