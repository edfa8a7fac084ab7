"""Stateful models: the graph a sequence model is exported with, its initial states, and parity over a
whole sequence.

A model with ``sequence_batching`` is exported with every tensor the sequence batcher feeds or keeps as
ordinary graph I/O: its inputs, then its controls (start, end, ready, corrid: those set), then its state
inputs; its outputs, then its state outputs (:func:`graph_model`). Triton serves it with implicit state,
so the client sends only the inputs and reads only the outputs.

:func:`sequence_parity` carries the exported model through N steps from the initial state, each step's
state outputs fed back as the next step's state inputs, and requires each step's outputs (and states) to
equal the source framework's N steps. :func:`initial_state_values` reads a state's initial values (zeros,
a ``.npy`` file or raw values), and :func:`write_initial_states` puts them where Triton reads them
(``<model>/initial_state/``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from generator.build.config import initial_state_file
from generator.build.exporters.base import ExportResult
from generator.build.parity import compare_output, input_plan, make_inputs
from generator.build.runners import onnx_runner
from generator.core import dtypes
from generator.core.errors import SpecError, VerificationError
from generator.spec.models import ModelSpec, SequenceState, TensorSpec, Verify

#: The value each control takes on a step that is (True) or is not (False) the sequence's start, end or ready.
_BOOLEAN = {"BOOL": (False, True), "INT32": (0, 1), "FP32": (0.0, 1.0)}
#: Correlation IDs of the parity sequences (one per batch row) start here.
FIRST_CORRELATION_ID = 1000


def graph_model(model: ModelSpec) -> ModelSpec:
    """``model`` with the tensors its sequence batcher feeds and keeps added to its inputs and outputs,
    in the order the exported graph takes them; ``model`` itself when it has no sequence batcher or
    declares no inputs (a factory's example dict names every graph input then)."""
    batcher = model.sequence_batching
    if not batcher:
        return model
    update: dict[str, Any] = {}
    if model.inputs:
        fed = [
            TensorSpec(name=control.name, dtype=control.dtype, dims=[1])
            for _, control in batcher.controls.items()
        ]
        fed += [TensorSpec(name=s.input_name, dtype=s.dtype, dims=list(s.dims)) for s in batcher.state]
        update["inputs"] = list(model.inputs) + fed
    if model.outputs:
        kept = [TensorSpec(name=s.output_name, dtype=s.dtype, dims=list(s.dims)) for s in batcher.state]
        update["outputs"] = list(model.outputs) + kept
    return model.model_copy(update=update) if update else model


def initial_state_values(model: ModelSpec, state: SequenceState, spec_dir: Path) -> np.ndarray:
    """A state's initial values (without the batch axis): zeros, a ``.npy`` array, or a file of raw
    little-endian values of the state's dtype.

    Raises:
        SpecError: the file is missing or unreadable, or holds another shape, dtype or size.
    """
    dtype = dtypes.to_numpy(state.dtype)
    shape = tuple(state.initial_dims)
    given = state.initial_state.data_file
    if given is None:
        return np.zeros(shape, dtype=dtype)
    path = spec_dir / given
    where = f"model '{model.name}': sequence_batching.state '{state.input_name}' initial_state.data_file '{given}'"
    try:
        if path.suffix == ".npy":
            values = np.load(path, allow_pickle=False)
        else:
            raw = path.read_bytes()
            values = np.frombuffer(raw, dtype=dtype.newbyteorder("<"))
    except (OSError, ValueError) as exc:
        raise SpecError(f"{where}: cannot be read ({exc}); give a .npy array or raw values") from None
    if path.suffix == ".npy":
        if values.dtype != dtype or values.shape != shape:
            raise SpecError(
                f"{where} holds {values.dtype} {list(values.shape)}, but the state is {state.dtype} "
                f"{list(shape)}; save the array with that dtype and shape"
            )
        return values
    count = int(np.prod(shape))
    if values.size != count:
        raise SpecError(
            f"{where} holds {values.size} {state.dtype} values, but the state needs {count} ({list(shape)}); "
            "write exactly that many"
        )
    return values.reshape(shape).astype(dtype)


def write_initial_states(model: ModelSpec, model_dir: Path, spec_dir: Path) -> list[Path]:
    """Write each state's initial values from a file into ``model_dir/initial_state/`` as raw values,
    the way Triton reads them (states that start from zeros need no file).

    Returns:
        The files written.
    """
    batcher = model.sequence_batching
    written: list[Path] = []
    for state in batcher.state if batcher else []:
        name = initial_state_file(state)
        if name is None:
            continue
        values = initial_state_values(model, state, spec_dir)
        target = model_dir / "initial_state" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(np.ascontiguousarray(values, dtype=values.dtype.newbyteorder("<")).tobytes())
        written.append(target)
    return written


@dataclass
class SequenceParity:
    """How the exported model compared with its source over whole sequences, for the manifest."""

    steps: int
    batch_sizes: list[int]
    compared: bool
    #: Output (states included) -> its largest errors over every step and batch size.
    outputs: dict[str, dict[str, float | int]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the manifest."""
        data = asdict(self)
        data["max_abs_error"] = max((o["max_abs_error"] for o in self.outputs.values()), default=0.0)
        data["max_rel_error"] = max((o["max_rel_error"] for o in self.outputs.values()), default=0.0)
        return data


def _controls(model: ModelSpec, step: int, steps: int, rows: int, batching: bool) -> dict[str, np.ndarray]:
    """The control tensors of one step: start on the first, end on the last, ready on each, corrid per row."""
    batcher = model.sequence_batching
    flags = {"start": step == 0, "end": step == steps - 1, "ready": True}
    feeds: dict[str, np.ndarray] = {}
    for kind, control in batcher.controls.items() if batcher else []:
        dtype = dtypes.to_numpy(control.dtype)
        if kind == "corrid":
            values: list[Any] = [FIRST_CORRELATION_ID + row for row in range(rows)]
        else:
            values = [_BOOLEAN[control.dtype][int(flags[kind])]] * rows
        array = np.array(values, dtype=dtype).reshape(rows, 1)
        feeds[control.name] = array if batching else array[0]
    return feeds


def _record(report: SequenceParity, name: str, got: np.ndarray, want: np.ndarray, settings: Verify) -> int:
    parity = compare_output(name, 0, got, want, settings.atol, settings.rtol)
    entry = report.outputs.setdefault(
        name, {"max_abs_error": 0.0, "max_rel_error": 0.0, "mismatched": 0, "total": 0}
    )
    entry["max_abs_error"] = max(entry["max_abs_error"], parity.max_abs_error)
    entry["max_rel_error"] = max(entry["max_rel_error"], parity.max_rel_error)
    entry["mismatched"] += parity.mismatched
    entry["total"] += parity.total
    return parity.mismatched


def _run_step(runner: Any, feeds: dict[str, np.ndarray], what: str, where: str) -> dict[str, np.ndarray]:
    try:
        return runner(feeds)
    except Exception as exc:
        raise VerificationError(f"{what} failed to run {where}: {' '.join(str(exc).split())[:400]}") from None


def sequence_parity(
    model: ModelSpec, result: ExportResult, max_batch_size: int, settings: Verify, spec_dir: Path
) -> SequenceParity:
    """Carry the exported model (and its source) through ``settings.sequence_steps`` steps from the
    initial states, feeding each step's state outputs back as the next step's state inputs.

    Each batch row is its own sequence (batch sizes as the one-step parity's). Without a source to
    compare with (an ONNX source), the sequence is still run, which proves the states chain.

    Raises:
        VerificationError: a step's output or state differs from the source's, or a step fails.
        SpecError: an initial state's file does not fit the state.
    """
    batcher = model.sequence_batching
    steps = settings.sequence_steps
    batching = max_batch_size > 0
    sizes = sorted(set(settings.batch_sizes or ([1, max_batch_size] if batching else [1])))
    report = SequenceParity(steps, sizes, result.reference is not None)
    if not batcher or not batcher.state:
        return report
    exported = result.runner or onnx_runner(result.model_file)
    initial = {s.input_name: initial_state_values(model, s, spec_dir) for s in batcher.state}
    points, ranges = input_plan(model, result.signature, batching, result.model_file, result.details)
    shapes = next((p for p in points if p.label == "opt"), points[0])
    problems: list[str] = []
    for size in sizes:
        rows = size if batching else 1
        states = {n: np.stack([v] * rows) if batching else v for n, v in initial.items()}
        reference_states = dict(states)
        for step in range(steps):
            where = f"at step {step + 1} of {steps} (batch {size})"
            seed = settings.seed + 104729 * (step + 1) + size
            feeds = make_inputs(result.signature, model, size if batching else None, seed, shapes, ranges)
            feeds.update(_controls(model, step, steps, rows, batching))
            got = _run_step(exported, {**feeds, **states}, f"model '{model.name}': the exported model", where)
            states = {s.input_name: got[s.output_name] for s in batcher.state if s.output_name in got}
            missing = [s.output_name for s in batcher.state if s.output_name not in got]
            if missing:
                raise VerificationError(
                    f"model '{model.name}': the exported model has no state output {', '.join(missing)}; "
                    "return the next state from forward() under the state's output_name"
                )
            if result.reference is None:
                continue
            want = _run_step(
                result.reference, {**feeds, **reference_states}, f"model '{model.name}': the source", where
            )
            reference_states = {
                s.input_name: want[s.output_name] for s in batcher.state if s.output_name in want
            }
            for name, value in want.items():
                if name in got and _record(report, name, got[name], value, settings):
                    problems.append(
                        f"model '{model.name}' output '{name}' {where}: differs from the source's beyond "
                        f"atol={settings.atol:g} + rtol={settings.rtol:g}*|ref| (max abs error "
                        f"{report.outputs[name]['max_abs_error']:.3g}); fix the export or loosen verify.atol/rtol"
                    )
    if problems:
        raise VerificationError(*problems[:10])
    return report
