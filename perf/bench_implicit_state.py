"""Benchmark: implicit state against state sent by the client, on the example's digit GRU
(``examples/sequence.py``) served by the embedded Triton over gRPC, at 1 and 16 concurrent sequences.

Three models from one build of the same factory:

* ``implicit``: sequence batcher (Direct) with implicit state ``h_in``/``h_out``: a request carries one
  digit, the state stays on the server;
* ``explicit_sequence``: the same sequence batcher without ``state``: every request carries the state
  (``h_in``, FP32 [16]) and the client keeps ``h_out`` for the next step;
* ``explicit_dynamic``: the explicit model with the dynamic batcher instead (no correlation IDs).

Each concurrent sequence is one client thread that sends sequences of 20 steps back to back; the figures
are per-request latency (p50, p99) and requests per second over the measured window. Run:
``python perf/bench_implicit_state.py [--seconds 8]``; the JSON goes to ``perf/results/``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from generator.build.run import build
from generator.serve.launch import find_free_port
from generator.serve.server import EmbeddedServer

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
STEPS = 20
HIDDEN = 16
STATE = {"input_name": "h_in", "output_name": "h_out", "dtype": "FP32", "dims": [HIDDEN]}
DIGIT = {"name": "digit", "dtype": "INT64", "dims": [1]}
LOGITS = {"name": "logits", "dtype": "FP32", "dims": [10]}


def spec() -> dict:
    common = {"framework": "torch", "source": str(EXAMPLES / "sequence.py") + ":build", "max_batch_size": 16}
    sequence = {"max_sequence_idle_microseconds": 60_000_000}
    explicit_io = {
        "inputs": [DIGIT, {"name": "h_in", "dtype": "FP32", "dims": [HIDDEN]}],
        "outputs": [LOGITS, {"name": "h_out", "dtype": "FP32", "dims": [HIDDEN]}],
    }
    return {
        "repository": "model_repository",
        "models": [
            {
                "name": "implicit",
                **common,
                "inputs": [DIGIT],
                "outputs": [LOGITS],
                "values": {"digit": {"min": 0, "max": 9}},
                "sequence_batching": {**sequence, "state": [STATE]},
            },
            {"name": "explicit_sequence", **common, **explicit_io, "sequence_batching": sequence},
            {"name": "explicit_dynamic", **common, **explicit_io, "dynamic_batching": {}},
        ],
    }


def run_sequences(server: EmbeddedServer, model: str, users: int, seconds: float) -> dict[str, float]:
    """``users`` threads, each sending sequences of STEPS digits; latency and throughput of the window."""
    import tritonclient.grpc as grpcclient

    latencies: list[list[float]] = [[] for _ in range(users)]
    failures: list[str] = []
    start_at = time.perf_counter() + 1.0  # every thread connected before the window opens
    stop_at = start_at + seconds
    implicit = model == "implicit"

    def user(index: int) -> None:
        client = grpcclient.InferenceServerClient(server.endpoints.grpc)
        rng = np.random.default_rng(index)
        sequence_id = 1 + index * 1_000_000
        try:
            while time.perf_counter() < stop_at:
                state = np.zeros((1, HIDDEN), dtype=np.float32)
                sequence_id += 1
                for step in range(STEPS):
                    digit = grpcclient.InferInput("digit", [1, 1], "INT64")
                    digit.set_data_from_numpy(rng.integers(0, 10, size=(1, 1), dtype=np.int64))
                    inputs = [digit]
                    if not implicit:
                        h_in = grpcclient.InferInput("h_in", [1, HIDDEN], "FP32")
                        h_in.set_data_from_numpy(state)
                        inputs.append(h_in)
                    sequence = {}
                    if model != "explicit_dynamic":
                        sequence = {
                            "sequence_id": sequence_id,
                            "sequence_start": step == 0,
                            "sequence_end": step == STEPS - 1,
                        }
                    began = time.perf_counter()
                    result = client.infer(model, inputs, **sequence)
                    ended = time.perf_counter()
                    if not implicit:
                        state = result.as_numpy("h_out")
                    if start_at <= began and ended <= stop_at:
                        latencies[index].append(ended - began)
        except Exception as error:  # reported below, with the figures
            failures.append(str(error))
        finally:
            client.close()

    threads = [threading.Thread(target=user, args=(i,)) for i in range(users)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise RuntimeError(f"{model}: {len(failures)} users failed: {failures[0]}")
    every = np.array([value for values in latencies for value in values]) * 1000
    return {
        "requests": len(every),
        "requests_per_s": round(len(every) / seconds, 1),
        "p50_ms": round(float(np.percentile(every, 50)), 3),
        "p99_ms": round(float(np.percentile(every, 99)), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "bench_implicit_state.json"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "generator.yaml").write_text(yaml.safe_dump(spec(), sort_keys=False))
        build(root / "generator.yaml", root / "model_repository")
        ports = {
            "http_port": find_free_port(),
            "grpc_port": find_free_port(),
            "metrics_port": find_free_port(),
        }
        figures: dict[str, dict[str, dict[str, float]]] = {}
        with EmbeddedServer(root / "model_repository", **ports) as server:
            for users in (1, 16):
                for model in ("implicit", "explicit_sequence", "explicit_dynamic"):
                    run_sequences(server, model, users, 1.0)  # warm-up
                    figures.setdefault(f"{users} sequences", {})[model] = run_sequences(
                        server, model, users, args.seconds
                    )
                    row = figures[f"{users} sequences"][model]
                    print(
                        f"{users:>2} sequences  {model:<18} {row['requests_per_s']:>8.1f} req/s  "
                        f"p50 {row['p50_ms']:>7.2f} ms  p99 {row['p99_ms']:>7.2f} ms"
                    )
    result = {
        "benchmark": "implicit state against client-sent state, example GRU, embedded Triton, gRPC",
        "machine": {"cpus": len(os.sched_getaffinity(0)), "python": platform.python_version()},
        "seconds": args.seconds,
        "steps_per_sequence": STEPS,
        "figures": figures,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
