"""Parity: the exported model, run in ONNX Runtime, against the source framework on the same inputs.

Inputs are drawn from a seeded generator at each batch size (by default 1 and ``max_batch_size``).
Every mismatch (a missing output, a shape, values beyond ``atol + rtol * |reference|``) is collected
into one error; the figures go into the build manifest either way.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from generator import dtypes
from generator.errors import VerificationError
from generator.exporters.base import ExportResult
from generator.runners import onnx_runner
from generator.signature import Signature
from generator.spec import ModelSpec, Verify

DYNAMIC_DIM = 4  # size used for a dynamic non-batch axis the spec leaves open


@dataclass
class OutputParity:
    """How one output compared at one batch size."""

    output: str
    batch_size: int
    max_abs_error: float
    max_rel_error: float
    mismatched: int
    total: int


@dataclass
class ParityReport:
    """Parity figures for one model."""

    compared: bool
    atol: float
    rtol: float
    batch_sizes: list[int]
    outputs: list[OutputParity] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def max_abs_error(self) -> float:
        """Largest absolute error over every output and batch size."""
        return max((o.max_abs_error for o in self.outputs), default=0.0)

    @property
    def max_rel_error(self) -> float:
        """Largest relative error over every output and batch size."""
        return max((o.max_rel_error for o in self.outputs), default=0.0)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the manifest."""
        data = asdict(self)
        data["max_abs_error"] = self.max_abs_error
        data["max_rel_error"] = self.max_rel_error
        return data


def make_inputs(
    signature: Signature, model: ModelSpec, batch_size: int | None, seed: int
) -> dict[str, np.ndarray]:
    """Seeded inputs matching ``signature`` (``batch_size`` None: the model has no batch axis)."""
    rng = np.random.default_rng(seed)
    spec_dims = {t.name: (t.reshape or t.dims) for t in model.inputs or []}
    feeds: dict[str, np.ndarray] = {}
    for tensor in signature.inputs:
        rest = list(tensor.shape[1:] if batch_size is not None else tensor.shape)
        wanted = spec_dims.get(tensor.name)
        if wanted is not None and len(wanted) == len(rest):
            rest = [w if r == -1 else r for r, w in zip(rest, wanted, strict=True)]
        rest = [DYNAMIC_DIM if d == -1 else d for d in rest]
        shape = ([batch_size] if batch_size is not None else []) + rest
        dtype = dtypes.to_numpy(tensor.dtype)
        _check_size(model.name, tensor.name, shape, dtype.itemsize if dtype.kind != "O" else 8)
        if dtype.kind == "f":
            feeds[tensor.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind == "b" or dtype.kind in "iu":
            feeds[tensor.name] = rng.integers(0, 2, shape).astype(dtype)
        else:
            feeds[tensor.name] = np.array([b"x"] * int(np.prod(shape)), dtype=object).reshape(shape)
    return feeds


#: The largest input the parity check makes (per tensor); more is a spec mistake, not a model.
MAX_INPUT_BYTES = 1 << 30


def _check_size(model: str, tensor: str, shape: list[int], itemsize: int) -> None:
    size = math.prod(shape) * itemsize
    if size > MAX_INPUT_BYTES:
        raise VerificationError(
            f"model '{model}': parity input '{tensor}' of shape {shape} would take {size / (1 << 30):,.1f} GiB; "
            "set verify.batch_sizes to smaller batches (or check max_batch_size and dims in the spec)"
        )


def compare_output(
    name: str, batch: int, got: np.ndarray, want: np.ndarray, atol: float, rtol: float
) -> OutputParity:
    """Compare one output with its reference (``|got - want| <= atol + rtol * |want|``, NaNs equal)."""
    got64 = np.asarray(got, dtype=np.float64)
    want64 = np.asarray(want, dtype=np.float64)
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
    )


def check_parity(
    model: ModelSpec, result: ExportResult, max_batch_size: int, settings: Verify
) -> ParityReport:
    """Compare the artifact against the source at each batch size.

    Without a reference (an ONNX source), the artifact is still run at each batch size, which proves
    it loads and accepts the batch axis.

    Raises:
        VerificationError: any output differs, or the artifact fails to run; one line per problem.
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
    try:
        exported = result.runner or onnx_runner(result.model_file)
    except Exception as exc:  # ONNX Runtime refuses the graph itself (e.g. int64 fed into a float Gemm)
        reason = re.sub(r"Load model from \S+ failed:", "", " ".join(str(exc).split()))[:400]
        raise VerificationError(
            f"model '{model.name}': ONNX Runtime cannot load the exported model: {reason}; check that the "
            "spec's input dtypes are the ones the model computes with (cast inside forward() if needed)"
        ) from exc
    for size in sizes:
        feeds = make_inputs(result.signature, model, size if batching else None, settings.seed + size)
        try:
            got = exported(feeds)
        except Exception as exc:
            report.problems.append(
                f"model '{model.name}' at batch {size}: ONNX Runtime failed to run it: {exc}"
            )
            continue
        if result.reference is None:
            continue
        want = result.reference(feeds)
        for out_name, reference in want.items():
            if out_name not in got:
                report.problems.append(
                    f"model '{model.name}': output '{out_name}' is missing from the export"
                )
                continue
            if got[out_name].shape != reference.shape:
                report.problems.append(
                    f"model '{model.name}' output '{out_name}' at batch {size}: shape {list(got[out_name].shape)} "
                    f"but the source gives {list(reference.shape)}"
                )
                continue
            parity = compare_output(out_name, size, got[out_name], reference, settings.atol, settings.rtol)
            report.outputs.append(parity)
            if parity.mismatched:
                report.problems.append(
                    f"model '{model.name}' output '{out_name}' at batch {size}: {parity.mismatched} of "
                    f"{parity.total} values differ beyond atol={settings.atol:g} + rtol={settings.rtol:g}*|ref| "
                    f"(max abs error {parity.max_abs_error:.3g}, max rel error {parity.max_rel_error:.3g}); "
                    "fix the export or loosen verify.atol/rtol in the spec"
                )
    if report.problems:
        raise VerificationError(*report.problems)
    return report
