"""Benchmark: a text pipeline served as one Triton ensemble, against the same steps in-process and against a
client that tokenizes itself and calls the model directly.

Builds the bundled example (its ``text_pipeline`` ensemble: tokenizer step -> topic classifier ->
post-processing step) and serves it with the embedded Triton. Three ways to classify a sentence are then
driven by the same closed-loop load generator (N threads, each sending one sentence after the other for
``--duration`` seconds), side by side and in alternating rounds:

- ``ensemble``: the client sends the text to ``text_pipeline`` over gRPC; everything happens in the server.
- ``in-process``: the same three steps called in this process (the tokenizer and post-processing steps'
  own classes, the classifier in ONNX Runtime, on the repository's files): no server, no network.
- ``client tokenizes``: the client tokenizes (the same tokenizer class and file), calls ``text_classifier``
  directly over gRPC, and takes the top 3 itself: what users do when the server has no tokenizer.

Prints throughput and p50/p99 latency at each concurrency (default 1 and 16) and the ratios against the
ensemble, and writes them to ``--out`` (JSON). The client and the server share this machine's cores:
compare the ratios of one run, not absolute figures across machines.

Run: ``python perf/bench_pipeline.py [--users 1,16] [--duration 8] [--rounds 2] [--out perf/results/bench_pipeline.json]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from generator.build.pipelines import local_ensemble
from generator.core.resources import steps_dir
from generator.serve.launch import find_free_port
from generator.serve.server import EmbeddedServer
from generator.spec.models import bundled_example

ENSEMBLE, MODEL = "text_pipeline", "text_classifier"


def _sentences() -> list[str]:
    sys.path.insert(0, str(bundled_example().parent))
    import text  # the example's module: its corpus and held-out sentences

    return text.corpus()[0] + text.held_out()[0]


def _load_step(kind: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"bench_step_{kind}", steps_dir() / f"{kind}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _parameters(repo: Path, model: str) -> dict[str, str]:
    from generator.core.triton import parse_model_config

    config = parse_model_config((repo / model / "config.pbtxt").read_text())
    return {key: value.string_value for key, value in config.parameters.items()}


def ensemble_client(url: str) -> Callable[[str], object]:
    """One thread's way to classify a sentence through the served ensemble."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)

    def classify(sentence: str) -> object:
        tensor = grpcclient.InferInput("TEXT", [1, 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[sentence.encode("utf-8")]], dtype=object))
        return client.infer(ENSEMBLE, [tensor]).as_numpy("LABELS")

    return classify


def tokenizing_client(url: str, repo: Path) -> Callable[[str], object]:
    """One thread's way to classify a sentence when the client tokenizes and post-processes itself."""
    import tritonclient.grpc as grpcclient

    tokenize = _load_step("tokenizer").Tokenize(
        _parameters(repo, "text_tokenizer"), repo / "text_tokenizer" / "1" / "tokenizer.json"
    )
    post_settings = _parameters(repo, "text_postprocess")
    postprocess = _load_step("postprocess").Postprocess(
        post_settings, repo / "text_postprocess" / "1" / post_settings["labels_file"]
    )
    client = grpcclient.InferenceServerClient(url)

    def classify(sentence: str) -> object:
        encoded = tokenize([sentence])
        inputs = []
        for name in ("input_ids", "attention_mask"):
            tensor = grpcclient.InferInput(name, list(encoded[name].shape), "INT64")
            tensor.set_data_from_numpy(encoded[name])
            inputs.append(tensor)
        logits = client.infer(MODEL, inputs).as_numpy("logits")
        return postprocess(logits)["labels"]

    return classify


def in_process(repo: Path) -> Callable[[str], object]:
    """One thread's way to classify a sentence with the same steps in this process."""
    run = local_ensemble(repo, ENSEMBLE)
    return lambda sentence: run({"TEXT": np.array([[sentence.encode("utf-8")]], dtype=object)})["LABELS"]


def drive(
    make: Callable[[], Callable[[str], object]], users: int, duration: float, sentences: list[str]
) -> dict:
    """``users`` threads, each classifying sentences back to back for ``duration`` seconds."""
    latencies: list[list[float]] = [[] for _ in range(users)]
    errors = [0] * users
    start = threading.Barrier(users + 1)
    stop_at = [0.0]

    def user(index: int) -> None:
        classify = make()
        classify(sentences[0])  # connect and warm up outside the measurement
        start.wait()
        position = index
        while time.perf_counter() < stop_at[0]:
            sentence = sentences[position % len(sentences)]
            position += users
            began = time.perf_counter()
            try:
                classify(sentence)
            except Exception:
                errors[index] += 1
                continue
            latencies[index].append(time.perf_counter() - began)

    threads = [threading.Thread(target=user, args=(i,), daemon=True) for i in range(users)]
    for thread in threads:
        thread.start()
    stop_at[0] = time.perf_counter() + 3600
    start.wait()
    began = time.perf_counter()
    stop_at[0] = began + duration
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    every = np.array([value for values in latencies for value in values]) * 1000
    return {
        "throughput": round(len(every) / elapsed, 1),
        "p50_ms": round(float(np.percentile(every, 50)), 3) if len(every) else None,
        "p99_ms": round(float(np.percentile(every, 99)), 3) if len(every) else None,
        "requests": len(every),
        "errors": sum(errors),
    }


def build(repo: Path) -> None:
    """Build the bundled example in a child process (the build's worker and this benchmark's threads stay apart)."""
    subprocess.run(
        [sys.executable, "-m", "generator", "build", str(bundled_example()), "--output", str(repo)],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", default="1,16", help="concurrency levels (default 1,16)")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per measurement (default 8)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds; the median is kept")
    parser.add_argument("--repo", type=Path, help="an already built example repository (default: build one)")
    parser.add_argument("--out", type=Path, default=Path("perf/results/bench_pipeline.json"))
    args = parser.parse_args()
    levels = [int(u) for u in args.users.split(",")]
    sentences = _sentences()
    with tempfile.TemporaryDirectory() as scratch:
        repo = args.repo or Path(scratch) / "model_repository"
        if args.repo is None:
            build(repo)
        ports = {
            "http_port": find_free_port(),
            "grpc_port": find_free_port(),
            "metrics_port": find_free_port(),
        }
        with EmbeddedServer(repo, **ports) as server:
            url = server.endpoints.grpc
            ways = {
                "ensemble": lambda: ensemble_client(url),
                "in-process": lambda: in_process(repo),
                "client tokenizes": lambda: tokenizing_client(url, repo),
            }
            measured: dict[str, dict[int, list[dict]]] = {way: {u: [] for u in levels} for way in ways}
            for round_index in range(args.rounds):
                for users in levels:
                    for way, make in ways.items():
                        figures = drive(make, users, args.duration, sentences)
                        measured[way][users].append(figures)
                        print(f"round {round_index + 1} {way:>16} users {users:>3}: {figures}", flush=True)
    summary = _summary(measured, levels)
    _print(summary, levels)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"levels": levels, "duration_s": args.duration, "summary": summary}, indent=2)
    )
    print(f"wrote {args.out}")


def _summary(measured: dict[str, dict[int, list[dict]]], levels: list[int]) -> dict:
    summary: dict[str, dict[str, dict]] = {}
    for way, by_level in measured.items():
        summary[way] = {}
        for users in levels:
            runs = by_level[users]
            summary[way][str(users)] = {
                key: statistics.median(r[key] for r in runs if r[key] is not None)
                for key in ("throughput", "p50_ms", "p99_ms")
            } | {"errors": sum(r["errors"] for r in runs)}
    return summary


def _print(summary: dict, levels: list[int]) -> None:
    print("\nmedian of the rounds (ratios against the ensemble)")
    print(
        f"{'way':>16} {'users':>5} {'infer/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'thr x':>6} {'p99 x':>6} errors"
    )
    for way, by_level in summary.items():
        for users in levels:
            row, base = by_level[str(users)], summary["ensemble"][str(users)]
            print(
                f"{way:>16} {users:>5} {row['throughput']:>9.1f} {row['p50_ms']:>8.2f} {row['p99_ms']:>8.2f} "
                f"{row['throughput'] / base['throughput']:>6.2f} {row['p99_ms'] / base['p99_ms']:>6.2f} {row['errors']}"
            )


if __name__ == "__main__":
    main()
