"""Benchmark: what serving costs per request. The embedded Triton against ONNX Runtime in-process on the
same model files, at 1 and 4 clients, over gRPC and HTTP, with the per-stage breakdown of a served request.

Models: the example's ``digits_cnn`` (a 40 kB CNN: the serving path is nearly all of its latency) and a
mid-size MobileNet-like convolutional net at 3x128x128 (compute-bound: about a millisecond per image on two
cores), each served by one instance of the stand-in ONNX Runtime backend at its default thread count, once
with ``dynamic_batching`` at queue delay 0 and once without a batcher (``_direct``); and, for each, a
*floor* (``_floor``): a Python-backend model with the same inputs and outputs that runs nothing (it returns
a zero tensor), i.e. what Triton's front end, scheduler and Python-backend transport cost on their own.

Figures, side by side in one run (rounds alternate; the medians are printed):

* served: perf_analyzer (the reference client), concurrency 1 and 4, batch 1 per request;
* in-process: the same file in this process with the thread count the backend gives the instance, at
  batch 1 back to back, at batch 1 with a pause between runs like a served request's ("paced": cold
  caches, a woken thread), and at batch 4 (what the 4 clients' requests batched could reach);
* the breakdown of a served request at concurrency 1, from Triton's statistics as perf_analyzer reports
  them (client, network and front end, queue, compute input/infer/output) and, with ``--profile``, from
  py-spy sampling the model's backend stub: the time in ``session.run`` and in the stand-in's own Python.

Run: ``python perf/bench_serving.py [--seconds 3] [--rounds 3] [--profile]`` (perf_analyzer is fetched as
``perf/bench_harness.py`` does; ``--profile`` needs ``py-spy``, a dev dependency, and ptrace rights).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_harness import (  # isort: skip  (imports Locust, which patches the standard library first)
    PerfAnalyzerUnstable,
    build_example,
    fetch_perf_analyzer,
    library_dir,
)

import argparse
import csv
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections import Counter
from dataclasses import dataclass

import numpy as np

from generator.serve.launch import find_free_port
from generator.serve.server import EmbeddedServer

STAGES = (
    ("Client Send", "client send"),
    ("Network+Server Send/Recv", "network + front end"),
    ("Server Queue", "queue (scheduler)"),
    ("Server Compute Input", "compute input"),
    ("Server Compute Infer", "compute infer (stub round trip)"),
    ("Server Compute Output", "compute output (response)"),
    ("Client Recv", "client receive"),
)

FLOOR_MODEL = """\
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.zeros = {}

    def execute(self, requests):
        responses = []
        for request in requests:
            batch = request.inputs()[0].as_numpy().shape[0]
            if batch not in self.zeros:
                self.zeros[batch] = np.zeros((batch, OUTPUT_SIZE), np.float32)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("logits", self.zeros[batch])]))
        return responses
"""


#: The scheduler variants each model is served with: the dynamic batcher at queue delay 0, and none.
SCHEDULERS = {"": "dynamic_batching { max_queue_delay_microseconds: 0 }\n", "_direct": ""}
PROTOCOLS = ("grpc", "http")


@dataclass(frozen=True)
class Served:
    """One model of the benchmark: its name, its input's dims, and its file."""

    name: str
    dims: tuple[int, ...]
    model_file: Path

    @property
    def served(self) -> list[str]:
        """Its served names: the model, then its floor, with each scheduler."""
        return [f"{base}{suffix}" for base in (self.name, f"{self.name}_floor") for suffix in SCHEDULERS]


def mid_size_model(path: Path) -> None:
    """A MobileNet-like net (depthwise-separable blocks) at 3x128x128, exported to ONNX, batch axis dynamic."""
    import torch
    from torch import nn

    def block(inputs: int, outputs: int, stride: int) -> nn.Module:
        return nn.Sequential(
            nn.Conv2d(inputs, inputs, 3, stride, 1, groups=inputs, bias=False),
            nn.BatchNorm2d(inputs),
            nn.ReLU6(),
            nn.Conv2d(inputs, outputs, 1, bias=False),
            nn.BatchNorm2d(outputs),
            nn.ReLU6(),
        )

    widths = [(32, 64, 1), (64, 128, 2), (128, 128, 1), (128, 256, 2), (256, 256, 1), (256, 512, 2)]
    widths += [(512, 512, 1)] * 3 + [(512, 1024, 2)]
    torch.manual_seed(0)
    features = nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1), nn.ReLU6(), *(block(*w) for w in widths))

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features, self.head = features, nn.Linear(1024, 10)

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            return self.head(self.features(image).mean((2, 3)))

    axes = {"image": {0: "batch"}, "logits": {0: "batch"}}
    torch.onnx.export(
        Net().eval(), (torch.zeros(1, 3, 128, 128),), str(path), input_names=["image"],
        output_names=["logits"], dynamic_axes=axes, opset_version=17, dynamo=False,
    )  # fmt: skip


def write_repository(repo: Path, models: list[Served]) -> None:
    """Each model and its floor (same I/O, runs nothing), one instance, with each of SCHEDULERS."""
    for model in models:
        dims = ", ".join(map(str, model.dims))
        tensors = (
            f'input [{{ name: "image" data_type: TYPE_FP32 dims: [{dims}] }}]\n'
            'output [{ name: "logits" data_type: TYPE_FP32 dims: [10] }]\n'
            "instance_group [{ count: 1 kind: KIND_CPU }]\n"
        )
        for suffix, scheduler in SCHEDULERS.items():
            name, floor = f"{model.name}{suffix}", f"{model.name}_floor{suffix}"
            (repo / name / "1").mkdir(parents=True)
            shutil.copy(model.model_file, repo / name / "1" / "model.onnx")
            (repo / name / "config.pbtxt").write_text(
                f'name: "{name}"\nplatform: "onnxruntime_onnx"\nmax_batch_size: 8\n{tensors}{scheduler}'
            )
            (repo / floor / "1").mkdir(parents=True)
            (repo / floor / "1" / "model.py").write_text(FLOOR_MODEL.replace("OUTPUT_SIZE", "10"))
            (repo / floor / "config.pbtxt").write_text(
                f'name: "{floor}"\nbackend: "python"\nmax_batch_size: 8\n{tensors}{scheduler}'
            )


def perf_analyzer(
    binary: Path, libdir: Path, url: str, protocol: str, model: str, concurrency: int, seconds: float
) -> dict:
    """One perf_analyzer measurement: its CSV row (throughput, latencies and the stages, in us)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "pa.csv"
        command = [
            str(binary), "-m", model, "-u", url, "-i", protocol, "-b", "1",
            "--concurrency-range", str(concurrency), "--measurement-interval", str(int(seconds * 1000)),
            "--stability-percentage", "100", "--max-trials", "3", "-f", str(out),
        ]  # fmt: skip
        env = {
            **os.environ,
            "LD_LIBRARY_PATH": os.pathsep.join(
                filter(None, [str(libdir), os.environ.get("LD_LIBRARY_PATH")])
            ),
        }
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=seconds * 10 + 120)
        if result.returncode != 0 or not out.is_file():
            tail = " | ".join((result.stderr or result.stdout).strip().splitlines()[-3:])
            raise PerfAnalyzerUnstable(tail)
        [row] = list(csv.DictReader(out.open()))
    return {
        key: float(value) for key, value in row.items() if value not in ("", None) and key != "Concurrency"
    }


def in_process(model: Served, threads: int, batch: int, seconds: float, pause: float = 0.0) -> float:
    """Milliseconds per ONNX Runtime run of ``model`` at ``batch`` in this process (``pause`` s between runs)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(model.model_file), options, providers=["CPUExecutionProvider"])
    feeds = {"image": np.random.default_rng(0).random((batch, *model.dims), dtype=np.float32)}
    for _ in range(20):
        session.run(None, feeds)
    spent, runs, deadline = 0.0, 0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        if pause:
            time.sleep(pause)
        began = time.perf_counter()
        session.run(None, feeds)
        spent += time.perf_counter() - began
        runs += 1
    return spent / runs * 1000.0


def stub_profile(server: EmbeddedServer, model: str, seconds: float, out: Path) -> subprocess.Popen | None:
    """Start py-spy on ``model``'s backend stub for ``seconds`` (raw stacks into ``out``); None without py-spy."""
    import psutil

    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).is_file() or server.pid is None:
        return None
    stubs = [
        child for child in psutil.Process(server.pid).children()
        if f"/{model}/" in " ".join(child.cmdline())
    ]  # fmt: skip
    if not stubs:
        return None
    command = [spy, "record", "--pid", str(stubs[0].pid), "--format", "raw", "-o", str(out), "--rate", "1000"]
    command += ["--duration", str(max(1, round(seconds))), "--nonblocking"]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stub_samples(raw: Path) -> Counter[str]:
    """py-spy's raw stacks of a stub, counted by where the busy samples are: in ``session.run``, in the rest
    of the stand-in's ``execute`` (its own Python), elsewhere in Python (the backend's stub utilities)."""
    counts: Counter[str] = Counter()
    for line in raw.read_text().splitlines() if raw.is_file() else []:
        stack, _, number = line.rpartition(" ")
        if not stack.strip() or not number.isdigit():
            continue  # idle: no Python frame
        frames = stack.split(";")
        if any(frame.startswith("Session.run ") for frame in frames):
            counts["session.run"] += int(number)
        elif any(frame.startswith("TritonPythonModel.") for frame in frames):
            counts["stand-in Python"] += int(number)
        else:
            counts["other Python"] += int(number)
    return counts


def _served_round(
    args: argparse.Namespace, server: EmbeddedServer, models: list[Served], round_: int, add
) -> None:
    """One round of perf_analyzer measurements: every served name, protocol and concurrency."""
    binary, libdir = args.perf_analyzer
    for model in models:
        for name in model.served:
            for protocol in PROTOCOLS:
                url = server.endpoints.grpc if protocol == "grpc" else server.endpoints.http
                for concurrency in (1, 4):
                    spy, raw = None, args.scratch / f"{name}-{protocol}-{round_}.raw"
                    if args.profile and concurrency == 1 and name == model.name:
                        spy = stub_profile(server, name, args.seconds, raw)
                    try:
                        row = perf_analyzer(binary, libdir, url, protocol, name, concurrency, args.seconds)
                    except PerfAnalyzerUnstable as error:
                        print(f"  {name} over {protocol} at {concurrency}: no stable measurement ({error})")
                        continue
                    key = (name, protocol, concurrency)
                    add((*key, "throughput"), row["Inferences/Second"])
                    add((*key, "p50"), row["p50 latency"])
                    for stage, _ in STAGES if concurrency == 1 else ():
                        add((*key, stage), row.get(stage, 0.0))
                    if spy is not None:
                        spy.wait()
                        requests = max(row["Inferences/Second"] * args.seconds, 1.0)
                        for where, count in stub_samples(raw).items():
                            add((*key, where), count / 1000 / requests * 1e6)  # us per request


def measure(args: argparse.Namespace, models: list[Served]) -> dict:
    """Every figure, rounds alternating between served and in-process; lists of each round's values."""
    args.perf_analyzer = (fetch_perf_analyzer(), library_dir(args.scratch))
    figures: dict = {}

    def add(key: tuple, value: float) -> None:
        figures.setdefault(key, []).append(value)

    repo = args.scratch / "model_repository"
    write_repository(repo, models)
    threads = max(1, len(os.sched_getaffinity(0)))  # the stand-in's default for one instance
    ports = {"http_port": find_free_port(), "grpc_port": find_free_port(), "metrics_port": find_free_port()}
    with EmbeddedServer(repo, **ports) as server:
        for round_ in range(args.rounds):
            print(f"round {round_ + 1} of {args.rounds} ...", flush=True)
            _served_round(args, server, models, round_, add)
            for model in models:
                add((model.name, "hot"), in_process(model, threads, 1, args.seconds / 2))
                add((model.name, "paced"), in_process(model, threads, 1, args.seconds / 2, pause=0.0005))
                add((model.name, "batch4"), in_process(model, threads, 4, args.seconds / 2))
    return figures


def report(figures: dict, models: list[Served], profiled: bool) -> None:
    def median(*key: object) -> float:
        values = figures.get(tuple(key))
        return statistics.median(values) if values else float("nan")

    names = [name for model in models for name in model.served]
    header = f"{'':34}" + "".join(f"{name:>22}" for name in names)
    for protocol in PROTOCOLS:
        print(f"\n{protocol}: served infer/s (perf_analyzer, batch 1 per request), medians")
        print(header)
        for concurrency in (1, 4):
            row = "".join(f"{median(n, protocol, concurrency, 'throughput'):22.0f}" for n in names)
            print(f"{f'{concurrency} client(s)':34}{row}")
        print(f"{protocol}: per request at 1 client, us (Triton's statistics as perf_analyzer reports them)")
        keys = [*STAGES, ("p50", "p50 latency")]
        if profiled:
            keys += [
                (k, f"  of compute infer: {k}") for k in ("session.run", "stand-in Python", "other Python")
            ]
        for key, label in keys:
            print(f"{label:34}" + "".join(f"{median(n, protocol, 1, key):22.0f}" for n in names))
    print("\nin-process ONNX Runtime (same file, same thread count) and what serving adds")
    for model in models:
        hot, paced, batch4 = (
            median(model.name, "hot"),
            median(model.name, "paced"),
            median(model.name, "batch4"),
        )
        print(
            f"{model.name}: in-process batch 1 {hot:.3f} ms (paced {paced:.3f} ms), batch 4 {batch4:.3f} ms"
        )
        for protocol in PROTOCOLS:
            for suffix in SCHEDULERS:
                name = f"{model.name}{suffix}"
                one, four = median(name, protocol, 1, "throughput"), median(name, protocol, 4, "throughput")
                added = median(name, protocol, 1, "p50") / 1000 - hot
                print(
                    f"  {name} over {protocol}: served / in-process {one * hot / 1000:.2f} at 1 client, "
                    f"{four * batch4 / 4000:.2f} at 4; added at 1 client (p50 - in-process) {added:.3f} ms"
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="measurement interval per figure")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="sample the stubs with py-spy")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        print("building the example and the mid-size model ...", flush=True)
        build_example(scratch / "example")
        mid = scratch / "mid.onnx"
        mid_size_model(mid)
        models = [
            Served("digits_cnn", (1, 8, 8), scratch / "example" / "digits_cnn" / "1" / "model.onnx"),
            Served("mid_size", (3, 128, 128), mid),
        ]
        args.scratch = scratch
        report(measure(args, models), models, args.profile)


if __name__ == "__main__":
    main()
