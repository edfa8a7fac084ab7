"""Benchmark: the example CNN served by the embedded Triton at concurrency 8, against ONNX Runtime
in-process on the same batches, measured side by side in one run.

The served figure is what a client sees over gRPC (8 requests kept in flight, batch 1 each); the
in-process figures are the same model file run by ONNX Runtime in this process, at batch 1 (the
same batches) and at batch 8 (what perfect server-side batching could reach). Their ratio says how
close serving comes to the machine's limit. Run: ``python perf/bench_serving.py [--seconds 10]``.
"""

from __future__ import annotations

import argparse
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

MODEL, INPUT, OUTPUT = "digits_cnn", "image", "logits"


def served_throughput(server: EmbeddedServer, concurrency: int, seconds: float, batch: int) -> float:
    """Inferences per second over gRPC with ``concurrency`` requests in flight."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(server.endpoints.grpc)
    data = np.random.default_rng(0).standard_normal((batch, 1, 8, 8)).astype(np.float32)
    tensor = grpcclient.InferInput(INPUT, list(data.shape), "FP32")
    tensor.set_data_from_numpy(data)
    outputs = [grpcclient.InferRequestedOutput(OUTPUT)]
    slots = threading.Semaphore(concurrency)
    done = [0, 0]  # completed, failed
    lock = threading.Lock()

    def finished(result: object, error: object) -> None:
        with lock:
            done[0 if error is None else 1] += 1
        slots.release()

    def run_for(duration: float) -> int:
        with lock:
            start_count = done[0]
        deadline = time.perf_counter() + duration
        while time.perf_counter() < deadline:
            slots.acquire()
            client.async_infer(MODEL, [tensor], finished, outputs=outputs)
        for _ in range(concurrency):  # drain
            slots.acquire()
        for _ in range(concurrency):
            slots.release()
        with lock:
            return done[0] - start_count

    run_for(1.0)  # warm-up
    started = time.perf_counter()
    completed = run_for(seconds)
    elapsed = time.perf_counter() - started
    client.close()
    if done[1]:
        raise RuntimeError(f"{done[1]} requests failed")
    return completed * batch / elapsed


def in_process_throughput(model_file: Path, seconds: float, batch: int) -> float:
    """Inferences per second of ONNX Runtime in this process, one session, back-to-back runs."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
    data = np.random.default_rng(0).standard_normal((batch, 1, 8, 8)).astype(np.float32)
    feeds = {INPUT: data}
    for _ in range(200):
        session.run([OUTPUT], feeds)
    runs, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        session.run([OUTPUT], feeds)
        runs += 1
    return runs * batch / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "model_repository"
        build(bundled_example(), repo)
        model_file = repo / MODEL / "1" / "model.onnx"
        local_b1 = in_process_throughput(model_file, args.seconds / 2, 1)
        local_b8 = in_process_throughput(model_file, args.seconds / 2, 8)
        with EmbeddedServer(
            repo, http_port=find_free_port(), grpc_port=find_free_port(), metrics_port=find_free_port()
        ) as server:
            served = served_throughput(server, args.concurrency, args.seconds, 1)
    print(f"model {MODEL}, {args.seconds:.0f} s per figure, gRPC, batch 1 per request")
    print(f"served by embedded Triton, concurrency {args.concurrency}: {served:10.0f} infer/s")
    print(f"ONNX Runtime in-process, batch 1:          {local_b1:10.0f} infer/s")
    print(f"ONNX Runtime in-process, batch 8:          {local_b8:10.0f} infer/s")
    print(f"served / in-process (same batches, b=1):   {served / local_b1:10.2f}")
    print(f"served / in-process (batch 8):             {served / local_b8:10.2f}")


if __name__ == "__main__":
    main()
