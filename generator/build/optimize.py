"""Optimization passes on an exported ONNX model, each kept only within an accuracy budget.

The passes a model's ``optimize`` settings ask for run in order on the version directory's
``model.onnx``: ``simplify`` (onnxslim: constant folding, dead-node removal, operator fusion), then
INT8 post-training quantization (``quantize: dynamic``: INT8 weights, activations quantized at run
time; ``static``: QDQ with activation ranges calibrated on real samples) or ``fp16`` (the served
inputs and outputs stay FP32). Each pass works on a copy of the model the passes before it left.

The gate: the candidate is run in ONNX Runtime and compared with the reference (the source framework
when there is one, else the unoptimized ONNX file) on ``eval_data``, else ``calibration_data``, else
seeded inputs at the verify batch sizes. A candidate is kept when every output value lies within
``atol + rtol * |reference|``, its top-1 agreement meets ``min_top1_agreement`` (when set) and its
signature (names, dtypes, dims) is unchanged. Anything else is dropped with a warning and the model is
served without that pass. The figures of every pass go into the build manifest.

INT8 fits the CPU it is built on (:mod:`generator.core.cpu_isa`): each quantize pass tries the schemes ONNX
Runtime recommends for this CPU's class in turn (U8S8 / S8S8 where they cannot saturate; U8U8 or
7-bit weights on x86-64 without VNNI) and keeps the first the gate accepts. The manifest records the
CPU class, the kept scheme and every try with its figures.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from generator.build.exporters.base import ExportResult
from generator.build.parity import OutputParity, compare_output, input_plan, make_inputs
from generator.build.runners import Feeds, onnx_runner
from generator.core import cpu_isa, dtypes
from generator.core.cpu_isa import Int8Scheme
from generator.core.errors import (
    GeneratorError,
    MissingDependencyError,
    SpecError,
    VerificationError,
    first_line,
)
from generator.core.signature import Signature, read_onnx_signature
from generator.spec.models import Budget, ModelSpec, Optimize, Verify

log = logging.getLogger(__name__)

#: A pass: (model in, model out, settings, calibration batches or None).
Pass = Callable[[Path, Path, Optimize, "list[Feeds] | None"], None]
#: An INT8 pass: a pass that also takes the scheme to quantize with.
Quantizer = Callable[[Path, Path, Optimize, "list[Feeds] | None", Int8Scheme], None]

CALIBRATION_BATCH = 64  # samples per calibration run, at most (and at most max_batch_size)


@dataclass
class PassRecord:
    """What one pass did, for the manifest.

    Attributes:
        name: ``simplify``, ``quantize dynamic``, ``quantize static`` or ``fp16``.
        kept: Whether its output is what the repository serves (or feeds the next pass).
        bytes_before: Size of the model the pass started from.
        bytes_after: Size of its output (``None`` when the pass failed).
        nodes_before: Graph nodes of the model the pass started from.
        nodes_after: Graph nodes of its output.
        max_abs_error: Largest absolute difference from the reference, over every output.
        max_rel_error: Largest relative difference from the reference.
        mismatched: Output values beyond ``atol + rtol * |reference|``, of ``total``.
        top1_agreement: Share of rows whose argmax matches the reference's (``None``: no class axis).
        reason: Why it was not kept.
        scheme: The INT8 scheme of these figures (``U8U8``, ``S8S8 reduce_range``...; quantize passes).
        isa: The INT8 class of the CPU the gate ran on (``x86-avx2``, ``x86-vnni``...; quantize passes).
        cpu_features: The instruction-set features found on that CPU (quantize passes).
        tries: Every scheme tried, in order, with its figures: the kept one is the last.
    """

    name: str
    kept: bool
    bytes_before: int
    bytes_after: int | None = None
    nodes_before: int | None = None
    nodes_after: int | None = None
    seconds: float = 0.0
    max_abs_error: float | None = None
    max_rel_error: float | None = None
    mismatched: int | None = None
    total: int | None = None
    top1_agreement: float | None = None
    reason: str | None = None
    scheme: str | None = None
    isa: str | None = None
    cpu_features: list[str] | None = None
    tries: list[dict[str, Any]] | None = None

    def summary(self) -> dict[str, Any]:
        """This record's scheme, decision and figures, as one entry of ``tries``."""
        return {key: getattr(self, key) for key in _TRY_KEYS}


_TRY_KEYS = (
    "scheme",
    "kept",
    "bytes_after",
    "seconds",
    "max_abs_error",
    "max_rel_error",
    "mismatched",
    "total",
    "top1_agreement",
    "reason",
)


@dataclass
class OptimizeReport:
    """The optimize step's outcome for one model."""

    reference: str
    samples: str
    budget: dict[str, Any]
    bytes_before: int
    bytes_after: int = 0
    passes: list[PassRecord] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def kept(self) -> list[str]:
        """Names of the passes whose output is served."""
        return [p.name for p in self.passes if p.kept]

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the manifest."""
        return asdict(self) | {"kept": self.kept}


def read_npz_samples(
    path: Path, signature: Signature, batch_size: int | None, model_name: str, setting: str
) -> list[Feeds]:
    """Real input samples from an ``.npz`` keyed by input name, its first axis the samples.

    Args:
        path: The ``.npz`` file.
        signature: The model's I/O; arrays are cast to its input dtypes and checked against its dims.
        batch_size: Samples per run; ``None`` for a model without a batch axis (one sample per run,
            each sample the model's whole input).
        model_name: For messages.
        setting: The spec setting that named the file (``calibration_data``), for messages.

    Raises:
        SpecError: the file is missing or unreadable, lacks an input, or holds samples of another shape.
    """
    where = f"model '{model_name}': optimize.{setting} {path}"
    if not path.is_file():
        raise SpecError(f"{where} not found; fix the path (it is relative to the spec file)")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except Exception as exc:
        raise SpecError(f"{where} is not a readable .npz ({exc}); write it with numpy.savez") from None
    names = [t.name for t in signature.inputs]
    missing = [n for n in names if n not in arrays]
    if missing:
        raise SpecError(
            f"{where} has no array for input(s) {', '.join(missing)} (it has {', '.join(sorted(arrays)) or 'none'}); "
            "key the arrays by input name"
        )
    for tensor in signature.inputs:
        array = arrays[tensor.name]
        sample = list(tensor.shape[1:] if batch_size is not None else tensor.shape)
        fits = array.ndim == len(sample) + 1 and all(
            want in (-1, got) for want, got in zip(sample, array.shape[1:], strict=True)
        )
        if not fits or len(array) == 0:
            raise SpecError(
                f"{where}: array '{tensor.name}' holds {len(array) if array.ndim else 0} samples of shape "
                f"{list(array.shape[1:])} but the model takes {sample} (-1: any size); make the first axis "
                "the samples and the rest the model's input shape"
            )
        arrays[tensor.name] = array.astype(dtypes.to_numpy(tensor.dtype), copy=False)
    counts = {len(arrays[n]) for n in names}
    if len(counts) != 1:
        raise SpecError(f"{where}: the inputs have different sample counts; give each input the same number")
    count = counts.pop()
    if batch_size is None:
        return [{n: arrays[n][i] for n in names} for i in range(count)]
    return [
        {n: np.ascontiguousarray(arrays[n][start : start + batch_size]) for n in names}
        for start in range(0, count, batch_size)
    ]


def _gate_samples(
    model: ModelSpec,
    settings: Optimize,
    signature: Signature,
    max_batch_size: int,
    spec_dir: Path,
    model_file: Path | None = None,
) -> tuple[list[Feeds], str]:
    """The inputs every candidate is judged on, and a description of them for the manifest."""
    batching = max_batch_size > 0
    for setting in ("eval_data", "calibration_data"):
        name = getattr(settings, setting)
        if name:
            batches = read_npz_samples(
                spec_dir / name, signature, max_batch_size if batching else None, model.name, setting
            )
            count = sum(len(next(iter(b.values()))) for b in batches) if batching else len(batches)
            return batches, f"{setting} {name} ({count} samples)"
    verify = model.verify or Verify()
    sizes = sorted(set(verify.batch_sizes or ([1, max_batch_size] if batching else [1])))
    points, ranges = input_plan(model, signature, batching, model_file)
    batches = [
        make_inputs(
            signature, model, size if batching else None, verify.seed + size + 7919 * index, shapes, ranges
        )
        for size in sizes
        for index, shapes in enumerate(points)
    ]
    shown = f"batch {', '.join(map(str, sizes))}" if batching else "no batch axis"
    if any(p.lengths for p in points):
        shown += f"; lengths {', '.join(p.label for p in points)}"
    return batches, f"seeded random inputs (seed {verify.seed}; {shown})"


def _top1(got: np.ndarray, want: np.ndarray, batching: bool) -> tuple[int, int] | None:
    """(matching rows, rows) of the argmax over the last axis, for outputs with a class axis."""
    if want.dtype.kind not in "fiu" or want.ndim < (2 if batching else 1) or want.shape[-1] < 2:
        return None
    classes = want.shape[-1]
    agree = np.asarray(got).reshape(-1, classes).argmax(-1) == want.reshape(-1, classes).argmax(-1)
    return int(agree.sum()), int(agree.size)


def judge(
    record: PassRecord,
    outputs: list[OutputParity],
    top1: tuple[int, int] | None,
    budget: Budget,
) -> PassRecord:
    """Fill in a record's figures from the comparisons and decide whether the pass is kept.

    Args:
        record: The pass's record; ``kept`` and ``reason`` are set here.
        outputs: Per-output, per-batch comparisons with the reference.
        top1: (matching rows, rows) over the outputs with a class axis, or ``None`` if there are none.
        budget: The gate.
    """
    record.max_abs_error = max((o.max_abs_error for o in outputs), default=0.0)
    record.max_rel_error = max((o.max_rel_error for o in outputs), default=0.0)
    record.mismatched = sum(o.mismatched for o in outputs)
    record.total = sum(o.total for o in outputs)
    record.top1_agreement = top1[0] / top1[1] if top1 and top1[1] else None
    reasons = []
    if record.mismatched:
        reasons.append(
            f"max abs error {record.max_abs_error:.3g} (max rel error {record.max_rel_error:.3g}): "
            f"{record.mismatched} of {record.total} values over budget atol {budget.atol:g} + "
            f"rtol {budget.rtol:g}*|ref|"
        )
    wanted = budget.min_top1_agreement
    if wanted is not None and record.top1_agreement is not None and record.top1_agreement < wanted:
        reasons.append(f"top-1 agreement {record.top1_agreement:.4f} < budget min_top1_agreement {wanted:g}")
    record.kept = not reasons
    record.reason = "; ".join(reasons) or None
    return record


@dataclass
class _Gate:
    """What every candidate is judged on: the signature, the samples, their reference outputs, the budget."""

    signature: Signature
    batches: list[Feeds]
    references: list[Feeds]
    budget: Budget
    batching: bool


def _gate(record: PassRecord, candidate: Path, gate: _Gate) -> PassRecord:
    """Run the candidate on the gate samples and judge it against the references."""
    try:
        changed = read_onnx_signature(candidate)
    except GeneratorError as exc:
        record.reason = f"the result is not a readable ONNX model ({exc.problems[0]})"
        return record
    if changed != gate.signature:
        record.reason = (
            f"the I/O signature changed ({_signature_change(gate.signature, changed)}), "
            "so Triton's config would no longer match"
        )
        return record
    try:
        run = onnx_runner(candidate)
    except Exception as exc:
        record.reason = f"ONNX Runtime cannot load the result ({first_line(exc)})"
        return record
    outputs: list[OutputParity] = []
    agree, rows, classified = 0, 0, False
    for feeds, want in zip(gate.batches, gate.references, strict=True):
        try:
            got = run(feeds)
        except Exception as exc:
            record.reason = f"ONNX Runtime failed to run the result ({first_line(exc)})"
            return record
        size = len(next(iter(feeds.values()))) if gate.batching else 1
        for name, reference in want.items():
            if name not in got or got[name].shape != reference.shape:
                shape = list(got[name].shape) if name in got else "missing"
                record.reason = f"output '{name}' is {shape}, the reference's {list(reference.shape)}"
                return record
            outputs.append(
                compare_output(name, size, got[name], reference, gate.budget.atol, gate.budget.rtol)
            )
            counted = _top1(got[name], reference, gate.batching)
            if counted is not None:
                classified = True
                agree, rows = agree + counted[0], rows + counted[1]
    return judge(record, outputs, (agree, rows) if classified else None, gate.budget)


def _signature_change(before: Signature, after: Signature) -> str:
    changes = []
    for kind, old, new in (("input", before.inputs, after.inputs), ("output", before.outputs, after.outputs)):
        was = {t.name: f"{t.dtype} {list(t.shape)}" for t in old}
        now = {t.name: f"{t.dtype} {list(t.shape)}" for t in new}
        for name in dict.fromkeys([*was, *now]):
            if was.get(name) != now.get(name):
                changes.append(f"{kind} '{name}' {was.get(name, 'absent')} -> {now.get(name, 'absent')}")
    return ", ".join(changes) or "tensor order"


@contextlib.contextmanager
def _quiet_dependencies() -> Iterator[None]:
    """Keep the passes' libraries from configuring the root logger or raising Python warnings.

    ONNX Runtime's quantizer logs with the module-level ``logging.info``/``logging.warning``, which install a stderr handler
    on the root logger when it has none; a NullHandler for the duration makes that a no-op.
    """
    root = logging.getLogger()
    guard = None if root.handlers else logging.NullHandler()
    if guard is not None:
        root.addHandler(guard)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # fp16 range clipping notes and the like: the gate judges
            yield
    finally:
        if guard is not None:
            root.removeHandler(guard)


def _simplify(source: Path, target: Path, settings: Optimize, calibration: list[Feeds] | None) -> None:
    try:
        import onnxslim
    except ImportError:
        raise MissingDependencyError.for_package("onnxslim", purpose="for optimize.simplify") from None
    import onnx

    onnx.save(onnxslim.slim(str(source)), str(target))


def _prepared(source: Path, work: Path) -> Path:
    """ONNX Runtime's recommended pre-processing for quantization (shape inference, basic fusions)."""
    from onnxruntime.quantization import quant_pre_process

    prepared = work / "prepared.onnx"
    try:
        quant_pre_process(str(source), str(prepared))
    except Exception as exc:
        log.info("quantization pre-processing skipped for %s: %s", source, first_line(exc))
        return source
    return prepared


def _quant_type(kind: str) -> Any:
    from onnxruntime.quantization import QuantType

    return QuantType.QUInt8 if kind == "U8" else QuantType.QInt8


def _quantize_dynamic(
    source: Path, target: Path, settings: Optimize, calibration: list[Feeds] | None, scheme: Int8Scheme
) -> None:
    from onnxruntime.quantization import quantize_dynamic

    quantize_dynamic(  # activations: always U8, computed at run time by DynamicQuantizeLinear
        _prepared(source, target.parent),
        target,
        per_channel=settings.per_channel,
        reduce_range=scheme.reduce_range,
        weight_type=_quant_type(scheme.weights),
        op_types_to_quantize=settings.op_types,
    )


def _quantize_static(
    source: Path, target: Path, settings: Optimize, calibration: list[Feeds] | None, scheme: Int8Scheme
) -> None:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(calibration or [])

        def get_next(self) -> Feeds | None:
            return next(self.batches, None)

    quantize_static(
        _prepared(source, target.parent),
        target,
        Reader(),
        quant_format=QuantFormat.QDQ,  # QuantizeLinear/DequantizeLinear pairs around each op
        per_channel=settings.per_channel,
        reduce_range=scheme.reduce_range,
        activation_type=_quant_type(scheme.activations),
        weight_type=_quant_type(scheme.weights),
        op_types_to_quantize=settings.op_types,
        calibrate_method=CalibrationMethod.MinMax,
        extra_options={"CalibMaxIntermediateOutputs": 16},  # bounds calibration memory; exact for MinMax
    )


def _fp16(source: Path, target: Path, settings: Optimize, calibration: list[Feeds] | None) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    converted = convert_float_to_float16(onnx.load(str(source)), keep_io_types=True)
    onnx.save(converted, str(target))


PASSES: dict[str, Pass] = {"simplify": _simplify, "fp16": _fp16}
QUANTIZERS: dict[str, Quantizer] = {
    "quantize dynamic": _quantize_dynamic,
    "quantize static": _quantize_static,
}


def _attempt(
    name: str,
    run: Pass,
    source: Path,
    work: Path,
    settings: Optimize,
    calibration: list[Feeds] | None,
    gate: _Gate,
) -> tuple[PassRecord, Path]:
    """Run one pass on ``source`` into ``work`` and gate its output; the record and the candidate."""
    work.mkdir(parents=True)
    candidate = work / "model.onnx"
    record = PassRecord(name, kept=False, bytes_before=_model_bytes(source), nodes_before=_node_count(source))
    started = time.perf_counter()
    try:
        with _quiet_dependencies():
            run(source, candidate, settings, calibration)
        record.bytes_after = _model_bytes(candidate)
        record.nodes_after = _node_count(candidate)
    except GeneratorError:
        raise
    except Exception as exc:
        record.reason = f"the pass failed ({first_line(exc)})"
    else:
        _gate(record, candidate, gate)
    record.seconds = round(time.perf_counter() - started, 3)
    return record, candidate


def _quantize(
    name: str,
    source: Path,
    work: Path,
    settings: Optimize,
    calibration: list[Feeds] | None,
    gate: _Gate,
) -> tuple[PassRecord, Path]:
    """An INT8 pass: this CPU's schemes in turn until the gate keeps one; the last record and candidate.

    The returned record carries the kept scheme's figures (or the last one's), the CPU's INT8 class and
    features, and every try; when no scheme is kept its reason names each scheme's.
    """
    isa = cpu_isa.detect()
    quantizer = QUANTIZERS[name]
    mode = "static" if name == "quantize static" else "dynamic"
    tries: list[PassRecord] = []
    for number, scheme in enumerate(cpu_isa.int8_schemes(mode, isa.int8_class)):
        run = functools.partial(quantizer, scheme=scheme)
        record, candidate = _attempt(name, run, source, work / str(number), settings, calibration, gate)
        record.scheme = scheme.name
        tries.append(record)
        if record.kept:
            break
    record.isa, record.cpu_features = isa.int8_class, sorted(isa.features)
    record.tries = [t.summary() for t in tries]
    record.seconds = round(sum(t.seconds for t in tries), 3)
    if not record.kept:
        record.reason = "; ".join(f"{t.scheme}: {t.reason}" for t in tries)
    return record, candidate


def _model_bytes(path: Path) -> int:
    """Size of an ONNX file plus any external-data files it names."""
    from generator.build.exporters.onnx import external_data_files

    try:
        extra = [path.parent / location for location in external_data_files(path)]
    except Exception:
        extra = []
    return path.stat().st_size + sum(p.stat().st_size for p in extra if p.is_file())


def _node_count(path: Path) -> int:
    import onnx

    return len(onnx.load(str(path), load_external_data=False).graph.node)


def _install(candidate: Path, result: ExportResult) -> None:
    """Replace the served model file with ``candidate`` (renamed into place); drop stale external data."""
    target = result.model_file
    staged = target.with_name(f".{target.name}.optimized")
    shutil.copyfile(candidate, staged)
    os.replace(staged, target)
    from generator.build.exporters.onnx import external_data_files

    keep = [target, *(target.parent / loc for loc in external_data_files(target))]
    for stale in result.files:
        if stale not in keep:
            stale.unlink(missing_ok=True)
    result.files[:] = keep


def _reference_outputs(model: ModelSpec, result: ExportResult, batches: list[Feeds]) -> list[Feeds]:
    reference = result.reference or onnx_runner(result.model_file)
    try:
        return [reference(feeds) for feeds in batches]
    except Exception as exc:
        raise VerificationError(
            f"model '{model.name}': the reference model fails on the optimize gate's inputs ({first_line(exc)}); "
            "check that optimize.eval_data / calibration_data hold the model's inputs"
        ) from exc


def optimize_model(
    model: ModelSpec, result: ExportResult, max_batch_size: int, spec_dir: Path
) -> OptimizeReport | None:
    """Run the model's optimization passes on its exported ONNX file, each behind the accuracy gate.

    The file ``result.model_file`` is replaced by the output of the last kept pass (``result.files``
    is updated); a rejected or failing pass changes nothing and adds a line to ``warnings``.

    Args:
        model: The model's spec entry (``model.optimize`` says which passes).
        result: The export, its file in the version directory and its reference runner.
        max_batch_size: The resolved max batch size (0: no batch axis).
        spec_dir: Directory that ``calibration_data`` and ``eval_data`` are relative to.

    Returns:
        The report, or ``None`` when no pass is asked for.

    Raises:
        SpecError: the settings do not fit this model (not ONNX, data files missing or malformed).
        VerificationError: the reference model itself fails on the gate's inputs.
        MissingDependencyError: a pass needs a package that is not installed.
    """
    settings = model.optimize
    if not settings or not settings.passes:
        return None
    if result.runner is not None or result.model_file.suffix != ".onnx":
        raise SpecError(
            f"model '{model.name}': optimize works on ONNX models, not {result.model_file.name}; "
            "use format: onnx or set optimize: false"
        )
    batching = max_batch_size > 0
    batches, described = _gate_samples(
        model, settings, result.signature, max_batch_size, spec_dir, result.model_file
    )
    calibration = None
    if settings.quantize == "static":
        assert settings.calibration_data is not None  # the spec validator requires it
        per_run = min(max_batch_size, CALIBRATION_BATCH) if batching else None
        calibration = read_npz_samples(
            spec_dir / settings.calibration_data, result.signature, per_run, model.name, "calibration_data"
        )
    references = _reference_outputs(model, result, batches)
    report = OptimizeReport(
        reference="source framework" if result.reference is not None else "unoptimized ONNX",
        samples=described,
        budget=settings.budget.model_dump(),
        bytes_before=_model_bytes(result.model_file),
    )
    current = result.model_file
    gate = _Gate(result.signature, batches, references, settings.budget, batching)
    with tempfile.TemporaryDirectory(prefix="tritongen-optimize-") as tmp:
        for index, name in enumerate(settings.passes):
            work = Path(tmp) / str(index)
            if name in QUANTIZERS:
                record, candidate = _quantize(name, current, work, settings, calibration, gate)
            else:
                record, candidate = _attempt(name, PASSES[name], current, work, settings, calibration, gate)
            log.info("%s: %s %s (%s)", model.name, name, "kept" if record.kept else "rejected", record)
            report.passes.append(record)
            if record.kept:
                current = candidate
        if current != result.model_file:
            _install(current, result)
    report.bytes_after = _model_bytes(result.model_file)
    kept = report.kept
    serving = f"serving the model with {' + '.join(kept)}" if kept else "serving the unoptimized model"
    report.warnings = [
        f"{model.name}: {p.name} rejected: {p.reason}; {serving}" for p in report.passes if not p.kept
    ]
    return report
