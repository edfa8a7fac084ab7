"""Soak benchmark: the bundled example served by the embedded Triton, driven steadily for minutes.

A few client threads (half gRPC, half HTTP, one request in flight each, batch 1, both example models)
keep the server busy; every response is checked against ONNX Runtime run in-process on the same input.
Per minute it prints the requests, failures and p99 latency; at the start and the end, the resident
memory of the server (``tritonserver`` plus its backend stub processes), so that a leak shows as growth.
It also reports how often the server's watcher had to restart the server or reload a model.

Run: ``python perf/soak.py [--minutes 5] [--threads 4]``.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from generator.build.run import build
from generator.serve.launch import find_free_port
from generator.serve.server import EmbeddedServer
from generator.spec.models import bundled_example

MODELS = ("digits_cnn", "digits_linear")


def server_rss_mib(pid: int) -> float:
    """Resident memory of ``tritonserver`` and every live process under it, in MiB."""
    import psutil

    root = psutil.Process(pid)
    total = 0
    for process in (root, *root.children(recursive=True)):
        try:
            total += process.memory_info().rss
        except psutil.Error:
            continue
    return total / 2**20


class Tally:
    """Latencies and failures per minute, shared by the client threads."""

    def __init__(self, began: float, minutes: float) -> None:
        self.began = began
        self.last_minute = max(0, math.ceil(minutes) - 1)  # requests started in the last moments count there
        self.lock = threading.Lock()
        self.latencies: dict[int, list[float]] = {}
        self.failures: dict[int, int] = {}
        self.errors: dict[str, int] = {}

    def record(self, start: float, seconds: float, error: str | None) -> None:
        minute = min(int((start - self.began) // 60), self.last_minute)
        with self.lock:
            if error is None:
                self.latencies.setdefault(minute, []).append(seconds)
            else:
                self.failures[minute] = self.failures.get(minute, 0) + 1
                self.errors[error] = self.errors.get(error, 0) + 1


def io_of(repo: Path, name: str) -> tuple[str, str, tuple[int, ...]]:
    """The model's input name, output name and per-sample input shape, from its ONNX file."""
    import onnx

    graph = onnx.load(str(repo / name / "1" / "model.onnx"), load_external_data=False).graph
    dims = graph.input[0].type.tensor_type.shape.dim
    return graph.input[0].name, graph.output[0].name, tuple(int(d.dim_value) for d in dims[1:])


def drive(protocol: str, endpoint: str, repo: Path, tally: Tally, stop: threading.Event, seed: int) -> None:
    """One client thread: a request at a time until ``stop``, each checked against ONNX Runtime."""
    import onnxruntime as ort

    if protocol == "grpc":
        import tritonclient.grpc as client_module
    else:
        import tritonclient.http as client_module
    client = client_module.InferenceServerClient(endpoint)
    rng = np.random.default_rng(seed)
    models = []
    for name in MODELS:
        input_name, output_name, shape = io_of(repo, name)
        session = ort.InferenceSession(str(repo / name / "1" / "model.onnx"))
        samples = [rng.standard_normal((1, *shape)).astype(np.float32) for _ in range(16)]
        expected = [session.run([output_name], {input_name: x})[0] for x in samples]
        models.append((name, input_name, output_name, samples, expected))
    turn = 0
    while not stop.is_set():
        name, input_name, output_name, samples, expected = models[turn % len(models)]
        x, want = samples[turn % len(samples)], expected[turn % len(samples)]
        turn += 1
        tensor = client_module.InferInput(input_name, list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        start = time.perf_counter()
        error = None
        try:
            got = client.infer(name, [tensor]).as_numpy(output_name)
            if got is None or not np.allclose(got, want, rtol=1e-3, atol=1e-4):
                error = "wrong result"
        except Exception as failure:  # counted and summarised, the soak goes on
            error = f"{type(failure).__name__}: {str(failure)[:80]}"
        tally.record(start, time.perf_counter() - start, error)
    client.close()


def main() -> None:
    """Build the example, serve it, drive it for ``--minutes``, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="how long to drive it (default 5)")
    parser.add_argument("--threads", type=int, default=4, help="client threads, half gRPC (default 4)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="tritongen-soak-") as tmp:
        repo = Path(tmp) / "model_repository"
        build(bundled_example(), repo)
        ports = {
            "http_port": find_free_port(),
            "grpc_port": find_free_port(),
            "metrics_port": find_free_port(),
        }
        with EmbeddedServer(repo, **ports) as server:
            assert server.pid is not None
            rss_start = server_rss_mib(server.pid)
            began = time.perf_counter()
            tally = Tally(began, args.minutes)
            stop = threading.Event()
            threads = [
                threading.Thread(
                    target=drive,
                    args=(
                        "grpc" if i % 2 == 0 else "http",
                        server.endpoints.grpc if i % 2 == 0 else server.endpoints.http,
                        repo,
                        tally,
                        stop,
                        i,
                    ),
                )
                for i in range(args.threads)
            ]
            for thread in threads:
                thread.start()
            try:
                time.sleep(args.minutes * 60)
            finally:
                stop.set()
                for thread in threads:
                    thread.join()
            elapsed = time.perf_counter() - began
            rss_end = server_rss_mib(server.pid) if server.pid else float("nan")
            restarts, reloads = server.restarts, server.reloads

    print(
        f"soak: {args.minutes:g} min, {args.threads} client threads (gRPC + HTTP), models {', '.join(MODELS)}"
    )
    print(f"{'minute':>6} {'requests':>9} {'failures':>8} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7}")
    total = failed = 0
    for minute in sorted(set(tally.latencies) | set(tally.failures)):
        latencies = np.array(tally.latencies.get(minute, [float("nan")])) * 1000
        failures = tally.failures.get(minute, 0)
        requests = len(tally.latencies.get(minute, [])) + failures
        total, failed = total + requests, failed + failures
        span = elapsed - 60 * minute if minute == tally.last_minute else 60.0
        print(
            f"{minute + 1:>6} {requests:>9,} {failures:>8} {requests / span:>7,.0f} "
            f"{np.percentile(latencies, 50):>7.2f} {np.percentile(latencies, 99):>7.2f}"
        )
    print(f"total requests {total:,}, failures {failed} ({failed / max(total, 1):.4%})")
    for error, count in sorted(tally.errors.items(), key=lambda item: -item[1])[:5]:
        print(f"  {count} x {error}")
    print(f"server RSS (tritonserver + stubs): start {rss_start:,.0f} MiB, end {rss_end:,.0f} MiB")
    print(f"watcher: {restarts} server restart(s), {reloads} model reload(s)")


if __name__ == "__main__":
    main()
