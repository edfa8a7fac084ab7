"""Benchmark: each optimization pass on the example digits CNN against the unoptimized export.

Builds the CNN once per variant with tritongen (unoptimized; simplify; simplify + dynamic INT8, every op
and only Gemm/MatMul; simplify + static INT8 calibrated on the training digits; simplify + FP16), with budgets loose enough that every pass is
kept, then measures each served ``model.onnx`` in ONNX Runtime in-process: file size, latency and throughput
at batch 1 and 64, and held-out accuracy on the test digits. Variants are timed in interleaved rounds in one
process, so the ratios against the unoptimized model come from one run on the same machine state.

Run: ``python perf/bench_optimize.py [--rounds 5] [--seconds 0.5] [--threads 1]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from generator.build import build
from generator.exporters.base import load_factory
from generator.repository import MANIFEST
from generator.resources import examples_dir

BUDGET = "budget: {atol: 2.0, rtol: 0.2, min_top1_agreement: 0.98}"
VARIANTS = {
    "unoptimized": None,
    "simplify": f"{{eval_data: eval.npz, {BUDGET}}}",
    "dynamic int8": f"{{quantize: dynamic, eval_data: eval.npz, {BUDGET}}}",
    "dynamic gemm": f"{{quantize: dynamic, op_types: [Gemm, MatMul], eval_data: eval.npz, {BUDGET}}}",
    "static int8": f"{{quantize: static, per_channel: true, calibration_data: calib.npz, eval_data: eval.npz, {BUDGET}}}",
    "fp16": f"{{fp16: true, eval_data: eval.npz, {BUDGET}}}",
}
BATCHES = (1, 64)


def _spec(digits: Path) -> str:
    lines = ["models:"]
    for index, optimize in enumerate(VARIANTS.values()):
        lines += [
            f"  - {{name: cnn{index}, framework: torch, source: '{digits}:build', max_batch_size: 64,",
            "     inputs: [{name: image, dtype: FP32, dims: [1, 8, 8]}],",
            "     outputs: [{name: logits, dtype: FP32, dims: [10]}]}",
        ]
        if optimize:
            lines[-1] = lines[-1][:-1] + f", optimize: {optimize}}}"
    return "\n".join(lines) + "\n"


def _session(path: Path, threads: int) -> object:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _time(session: object, batch: np.ndarray, seconds: float) -> tuple[float, float]:
    """(median latency in ms, inferences per second) over ``seconds`` of back-to-back runs."""
    feeds = {"image": batch}
    for _ in range(10):
        session.run(None, feeds)
    latencies = []
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        begin = time.perf_counter()
        session.run(None, feeds)
        latencies.append(time.perf_counter() - begin)
    return statistics.median(latencies) * 1e3, len(batch) * len(latencies) / sum(latencies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds per variant")
    parser.add_argument(
        "--seconds", type=float, default=0.5, help="timed seconds per variant, batch and round"
    )
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    args = parser.parse_args()
    logging.getLogger("torch").setLevel(logging.ERROR)
    digits = examples_dir() / "digits.py"
    x_train, x_test, _, y_test = load_factory(digits, "load_data", "bench")()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        np.savez(work / "calib.npz", image=x_train)
        np.savez(work / "eval.npz", image=x_test)
        (work / "spec.yaml").write_text(_spec(digits))
        started = time.perf_counter()
        report = build(work / "spec.yaml", work / "repo")
        build_seconds = time.perf_counter() - started
        manifest = json.loads((work / "repo" / MANIFEST).read_text())["models"]
        paths = {label: work / "repo" / f"cnn{i}" / "1" / "model.onnx" for i, label in enumerate(VARIANTS)}
        sessions = {label: _session(path, args.threads) for label, path in paths.items()}
        rows: dict[str, dict[str, float | str]] = {}
        for index, (label, path) in enumerate(paths.items()):
            logits = sessions[label].run(None, {"image": x_test})[0]
            optimize = manifest[f"cnn{index}"]["versions"]["1"]["optimize"]
            rows[label] = {
                "bytes": path.stat().st_size,
                "accuracy": float((logits.argmax(1) == y_test).mean()),
                "kept": " + ".join(optimize["kept"]) if optimize else "-",
            }
        timings: dict[tuple[str, int], list[tuple[float, float]]] = {}
        for _ in range(args.rounds):
            for batch_size in BATCHES:
                for label in VARIANTS:
                    timing = _time(sessions[label], x_test[:batch_size], args.seconds)
                    timings.setdefault((label, batch_size), []).append(timing)
    base = "unoptimized"
    latency = {k: statistics.median(t[0] for t in v) for k, v in timings.items()}
    throughput = {k: statistics.median(t[1] for t in v) for k, v in timings.items()}
    print(
        f"digits CNN, ONNX Runtime {_ort_version()} CPU in-process, {args.threads} intra-op thread(s), "
        f"median of {args.rounds} interleaved rounds; build of {len(VARIANTS)} variants {build_seconds:.1f} s"
    )
    if report.warnings:
        print("build warnings:", *report.warnings, sep="\n  ")
    header = (
        f"{'variant':14s} {'kept passes':28s} {'bytes':>7s} {'size':>6s} {'held-out acc':>12s}"
        + "".join(f" {'p50 ms b' + str(b):>11s} {'speed-up':>8s} {'inf/s b' + str(b):>10s}" for b in BATCHES)
    )
    print(header)
    for label, row in rows.items():
        line = (
            f"{label:14s} {row['kept']:28s} {row['bytes']:7d} {row['bytes'] / rows[base]['bytes']:5.2f}x "
            f"{row['accuracy']:12.4f}"
        )
        for b in BATCHES:
            line += (
                f" {latency[label, b]:11.4f} {latency[base, b] / latency[label, b]:7.2f}x"
                f" {throughput[label, b]:10.0f}"
            )
        print(line)


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


if __name__ == "__main__":
    main()
