"""Benchmark: INT8 (dynamic and static), FP16 and FP32 on the example digits CNN and a MobileNet-like net.

Both models are trained on scikit-learn's 8x8 digits: the example CNN (40 kB) and a MobileNet-v1-like
net (2.7 MB, the digits upsampled to 32x32; trained here once, seeded). Each is exported once with
tritongen's PyTorch exporter, then each variant is optimized by tritongen's optimize step, all in this
process: the INT8 scheme is the one chosen for this CPU (and, with ``--also-class``, the one another
class of CPU gets, gated here). Every served ``model.onnx`` is then measured in ONNX Runtime in-process:
size, error against FP32 on the held-out digits (max abs error, top-1 agreement, accuracy), median
latency at batch 1 and throughput at batch 64, timed in interleaved rounds so the ratios against FP32
come from one run on one machine state.

The variants: ``fp32`` (simplify only), ``dynamic int8`` (every op ONNX Runtime can), ``dynamic gemm``
(MatMul/Gemm only), ``static int8`` (QDQ, per channel, calibrated on training samples), ``fp16``.

``--accuracy-only`` skips the timing. An AVX2 CPU's INT8 errors without one: quantize here with its
schemes and keep the models (``--also-class x86-avx2 --keep DIR``), then measure them on an emulated AVX2
CPU, where timings mean nothing: ``qemu-x86_64 -cpu Haswell python perf/bench_optimize.py --evaluate DIR
--accuracy-only`` (the ``[x86-vnni]`` rows then show what VNNI's schemes do on AVX2).

Run: ``python perf/bench_optimize.py [--rounds 5] [--seconds 0.5] [--threads 1] [--also-class x86-avx2]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from generator.build.exporters import get_exporter
from generator.build.exporters.base import ExportResult, load_factory
from generator.build.optimize import OptimizeReport, optimize_model
from generator.core import cpu_isa
from generator.core.cpu_isa import CpuIsa
from generator.core.resources import examples_dir
from generator.core.signature import read_onnx_signature
from generator.spec.models import parse_spec

HERE = Path(__file__).resolve()
WEIGHTS = HERE.parent / "out" / "bench_optimize_mobilenet.pt"  # trained once, then reused
BUDGET = "budget: {atol: 1000.0, rtol: 0.0}"  # keep every pass: the figures are what is measured
VARIANTS = {
    "fp32": "{eval_data: eval.npz, %s}",
    "dynamic int8": "{quantize: dynamic, eval_data: eval.npz, %s}",
    "dynamic gemm": "{quantize: dynamic, op_types: [Gemm, MatMul], eval_data: eval.npz, %s}",
    "static int8": "{quantize: static, per_channel: true, calibration_data: calib.npz, eval_data: eval.npz, %s}",
    "fp16": "{fp16: true, eval_data: eval.npz, %s}",
}
#: A class of CPU -> flags that put a CPU in it (to quantize with that class's schemes, gated here).
CLASSES = {
    "x86-avx2": {"avx2"},
    "x86-avx512": {"avx2", "avx512f", "avx512bw"},
    "x86-vnni": {"avx2", "avx512f", "avx512bw", "avx512_vnni"},
    "arm64": {"asimd", "asimddp"},
}


def _upsampled(images: np.ndarray) -> np.ndarray:
    """8x8 digits as 32x32 images (each pixel 4x4), [N, 1, 32, 32]."""
    return np.ascontiguousarray(images.repeat(4, axis=2).repeat(4, axis=3))


def mobilenet() -> tuple[Any, Any]:
    """A factory: a MobileNet-v1-like net (width 0.5: depthwise-separable blocks up to 512 channels,
    2.4 MB of weights) trained on the digits upsampled to 32x32.

    Training is seeded and takes a minute or so on a laptop CPU; the weights are kept in ``perf/out/``
    for the next run (and for a run under an emulator, where training would take hours).
    """
    import torch
    from torch import nn

    torch.manual_seed(0)

    def block(cin: int, cout: int, stride: int) -> list[nn.Module]:
        return [
            nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False),
            nn.BatchNorm2d(cin),
            nn.ReLU6(),
            nn.Conv2d(cin, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU6(),
        ]

    widths = [(16, 32, 1), (32, 64, 2), (64, 64, 1), (64, 128, 2), (128, 128, 1), (128, 256, 2)]
    widths += [(256, 256, 1)] * 3 + [(256, 512, 1), (512, 512, 1)]
    layers: list[nn.Module] = [nn.Conv2d(1, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU6()]
    for cin, cout, stride in widths:
        layers += block(cin, cout, stride)
    model = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, 10))
    x_train, x_test, y_train, _ = load_factory(examples_dir() / "digits.py", "load_data", "bench")()
    if WEIGHTS.is_file():
        model.load_state_dict(torch.load(WEIGHTS, map_location="cpu", weights_only=True))
    else:
        xs, ys = torch.from_numpy(_upsampled(x_train)), torch.from_numpy(y_train).long()
        optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
        model.train()
        for _ in range(12):
            order = torch.randperm(len(xs))
            for start in range(0, len(xs), 64):
                batch = order[start : start + 64]
                optimizer.zero_grad()
                nn.functional.cross_entropy(model(xs[batch]), ys[batch]).backward()
                optimizer.step()
        WEIGHTS.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), WEIGHTS)
    return model.eval(), torch.from_numpy(_upsampled(x_test[:2]))


def _models(samples: int) -> list[dict[str, Any]]:
    """The two benchmark models: factory, I/O, calibration and evaluation samples, labels if known."""
    digits = examples_dir() / "digits.py"
    x_train, x_test, _, y_test = load_factory(digits, "load_data", "bench")()
    return [
        {
            "label": "digits CNN",
            "source": f"{digits}:build",
            "io": "inputs: [{name: image, dtype: FP32, dims: [1, 8, 8]}], "
            "outputs: [{name: logits, dtype: FP32, dims: [10]}]",
            "calib": x_train,
            "eval": x_test[:samples],
            "labels": y_test[:samples],
        },
        {
            "label": "MobileNet-like",
            "source": f"{HERE}:mobilenet",
            "io": "inputs: [{name: image, dtype: FP32, dims: [1, 32, 32]}], "
            "outputs: [{name: logits, dtype: FP32, dims: [10]}]",
            "calib": _upsampled(x_train),
            "eval": _upsampled(x_test[:samples]),
            "labels": y_test[:samples],
        },
    ]


def _spec(source: str, io: str, optimize: str, work: Path) -> Any:
    import yaml

    text = f"models:\n  - {{name: m, framework: torch, source: '{source}', max_batch_size: 64, {io}, optimize: {optimize}}}\n"
    return parse_spec(yaml.safe_load(text), base_dir=work).models[0]


def _optimized(info: dict[str, Any], work: Path, also: list[str]) -> dict[str, tuple[Path, str]]:
    """Export the model once, then optimize one copy per variant (per CPU class for the INT8 ones)."""
    work.mkdir(parents=True, exist_ok=True)
    np.savez(work / "calib.npz", image=info["calib"])
    np.savez(work / "eval.npz", image=info["eval"])
    plain = _spec(info["source"], info["io"], "false", work)
    source = Path(info["source"].rsplit(":", 1)[0])
    exported = get_exporter("torch").export(plain, source, work / "export" / "1")
    here = cpu_isa.detect()
    variants: dict[str, tuple[Path, str]] = {}
    for label, optimize in VARIANTS.items():
        classes = [here.int8_class]
        if "int8" in label or "gemm" in label:
            classes += [c for c in also if c != here.int8_class]
        for int8_class in classes:
            name = label if int8_class == here.int8_class else f"{label} [{int8_class}]"
            target = work / name.replace(" ", "_").replace("[", "").replace("]", "") / "1" / "model.onnx"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(exported.model_file, target)
            result = ExportResult(
                [target], exported.platform, read_onnx_signature(target), exported.reference
            )
            settings = _spec(info["source"], info["io"], optimize % BUDGET, work)
            with _schemes_of(int8_class):
                report = optimize_model(settings, result, 64, work)
            variants[name] = (result.model_file, _scheme(report))
    return variants


@contextlib.contextmanager
def _schemes_of(int8_class: str) -> Iterator[None]:
    """Quantize with the INT8 schemes a CPU of ``int8_class`` gets (the gate still runs on this CPU)."""
    detect = cpu_isa.detect
    if int8_class != detect().int8_class:
        arch = "aarch64" if int8_class == "arm64" else "x86_64"
        cpu_isa.detect = lambda: CpuIsa(arch, frozenset(CLASSES[int8_class]))  # type: ignore[assignment]
    try:
        yield
    finally:
        cpu_isa.detect = detect  # type: ignore[assignment]


def _session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _run_all(session: Any, images: np.ndarray) -> np.ndarray:
    return np.concatenate(
        [session.run(None, {"image": images[i : i + 64]})[0] for i in range(0, len(images), 64)]
    )


def _time(session: Any, batch: np.ndarray, seconds: float) -> tuple[float, float]:
    """(median latency in ms, inferences per second) over ``seconds`` of back-to-back runs."""
    feeds = {"image": batch}
    for _ in range(5):
        session.run(None, feeds)
    latencies = []
    started = time.perf_counter()
    while time.perf_counter() - started < seconds or len(latencies) < 3:
        begin = time.perf_counter()
        session.run(None, feeds)
        latencies.append(time.perf_counter() - begin)
    return statistics.median(latencies) * 1e3, len(batch) * len(latencies) / sum(latencies)


def _scheme(report: OptimizeReport) -> str:
    """The INT8 pass's kept scheme, or the passes kept."""
    for record in report.passes:
        if record.scheme:
            return (
                record.scheme
                if record.kept
                else f"rejected ({', '.join(t['scheme'] for t in record.tries or [])})"
            )
    return " + ".join(report.kept) or "-"


def _slug(label: str) -> str:
    return label.lower().replace(" ", "_").replace("-", "_")


def _save(work: Path, variants: dict[str, tuple[Path, str]], images: np.ndarray, labels: np.ndarray) -> None:
    """Write what ``--evaluate`` reads: the variants' files and schemes, the held-out samples."""
    listing = {name: [str(path.relative_to(work)), scheme] for name, (path, scheme) in variants.items()}
    (work / "variants.json").write_text(json.dumps(listing, indent=2) + "\n")
    np.savez(work / "held_out.npz", image=images, label=labels)


def _saved(work: Path) -> tuple[dict[str, tuple[Path, str]], np.ndarray, np.ndarray]:
    listing = json.loads((work / "variants.json").read_text())
    with np.load(work / "held_out.npz") as data:
        images, labels = data["image"], data["label"]
    return {name: (work / rel, scheme) for name, (rel, scheme) in listing.items()}, images, labels


def _measure(
    label: str,
    variants: dict[str, tuple[Path, str]],
    images: np.ndarray,
    labels: np.ndarray,
    args: argparse.Namespace,
    made: str,
) -> None:
    """Run every variant on the held-out samples (and time it unless ``--accuracy-only``); print a table."""
    sessions = {name: _session(path, args.threads) for name, (path, _) in variants.items()}
    reference = _run_all(sessions["fp32"], images)
    rows = {}
    for name, (path, scheme) in variants.items():
        logits = _run_all(sessions[name], images)
        error = float(np.abs(logits - reference).max())
        rows[name] = {
            "scheme": scheme,
            "bytes": path.stat().st_size,
            "error": error,
            "relative": error / float(np.abs(reference).max()),
            "agree": float((logits.argmax(1) == reference.argmax(1)).mean()),
            "accuracy": float((logits.argmax(1) == labels).mean()),
        }
    timings: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for _ in range(0 if args.accuracy_only else args.rounds):
        for batch_size in (1, 64):
            batch = np.ascontiguousarray(images[np.arange(batch_size) % len(images)])
            for name in variants:
                timings.setdefault((name, batch_size), []).append(_time(sessions[name], batch, args.seconds))
    print(f"\n{label}: {len(images)} held-out samples; {len(variants)} variants {made}")
    header = f"{'variant':26s} {'INT8 scheme / passes':22s} {'bytes':>9s} {'size':>6s} {'max abs err':>11s}"
    header += f" {'/ max|ref|':>10s} {'top-1 agr':>9s} {'accuracy':>8s}"
    if timings:
        header += f" {'p50 ms b1':>9s} {'x fp32':>6s} {'inf/s b64':>9s} {'x fp32':>6s}"
    print(header)
    latency = {k: statistics.median(t[0] for t in v) for k, v in timings.items()}
    throughput = {k: statistics.median(t[1] for t in v) for k, v in timings.items()}
    for name, row in rows.items():
        line = (
            f"{name:26s} {row['scheme']:22s} {row['bytes']:9d} {row['bytes'] / rows['fp32']['bytes']:5.2f}x"
            f" {row['error']:11.4f} {row['relative']:10.4f} {row['agree']:9.4f} {row['accuracy']:8.4f}"
        )
        if timings:
            line += (
                f" {latency[name, 1]:9.3f} {latency['fp32', 1] / latency[name, 1]:5.2f}x"
                f" {throughput[name, 64]:9.0f} {throughput[name, 64] / throughput['fp32', 64]:5.2f}x"
            )
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds per variant")
    parser.add_argument(
        "--seconds", type=float, default=0.5, help="timed seconds per variant, batch and round"
    )
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    parser.add_argument("--samples", type=int, default=450, help="held-out samples per model (at most)")
    parser.add_argument("--accuracy-only", action="store_true", help="skip timing (e.g. on an emulated CPU)")
    parser.add_argument(
        "--also-class",
        action="append",
        default=[],
        choices=sorted(CLASSES),
        help="also quantize with the schemes this CPU class gets (gated on this CPU); repeatable",
    )
    parser.add_argument("--models", default="digits CNN,MobileNet-like", help="comma-separated model labels")
    parser.add_argument("--keep", type=Path, help="save the optimized models and samples in this directory")
    parser.add_argument(
        "--evaluate", type=Path, help="measure the models a --keep run saved there (no export, no optimize)"
    )
    args = parser.parse_args()
    logging.getLogger("torch").setLevel(logging.ERROR)
    import onnxruntime

    isa = cpu_isa.detect()
    print(
        f"ONNX Runtime {onnxruntime.__version__} CPU in-process, {args.threads} intra-op thread(s); "
        f"this CPU: {isa.int8_class}, {isa.describe()}"
    )
    if not args.accuracy_only:
        print(
            f"timings: median of {args.rounds} interleaved rounds of {args.seconds} s per variant and batch"
        )
    wanted = args.models.split(",")
    for info in _models(args.samples):
        if info["label"] in wanted:
            if args.evaluate:
                variants, images, labels = _saved(args.evaluate / _slug(info["label"]))
                _measure(info["label"], variants, images, labels, args, "read")
                continue
            with tempfile.TemporaryDirectory(prefix="bench-optimize-") as tmp:
                work = args.keep / _slug(info["label"]) if args.keep else Path(tmp)
                started = time.perf_counter()
                variants = _optimized(info, work, args.also_class)
                made = f"exported and optimized in {time.perf_counter() - started:.1f} s"
                if args.keep:
                    _save(work, variants, info["eval"], info["labels"])
                _measure(info["label"], variants, info["eval"], info["labels"], args, made)


if __name__ == "__main__":
    main()
