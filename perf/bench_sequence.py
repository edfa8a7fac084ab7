"""Benchmark: the harness's sequence mode against perf_analyzer's, on the same stateful model and concurrency.

Writes a stateful Python model by hand (``accumulate`` of ``tests/stateful_repo.py``: sequence batching with
the Direct strategy, the START/END/READY/CORRID controls, a running sum per correlation ID; 8 batch slots
on one instance), serves it with the embedded Triton, and drives it at one concurrency (default 8) with
sequences of 20 requests varied by 20% (perf_analyzer's defaults), over HTTP and gRPC, in alternating
rounds: perf_analyzer 2.51 (its sequence mode: it reads ``sequence_batching`` from the config) and the
harness (``loadtest`` with ``--users 8``, one sequence per user at a time, as perf_analyzer's concurrency
runs one per context). Prints throughput, request latency and sequences per second of each, and the
harness / perf_analyzer throughput ratio (median of the rounds, and its range), with the server's average
executed batch under each (Triton's counts over the measurement); writes
``perf/results/bench_sequence.json``.

perf_analyzer comes from the ``tritonclient==2.51.0`` wheel, as ``perf/bench_harness.py`` fetches it.

Run: ``python perf/bench_sequence.py [--concurrency 8] [--duration 6] [--rounds 3] [--protocols http,grpc]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# Locust (imported by the harness) patches the standard library for gevent; import it before the rest.
from generator.loadtest.run import LoadTestConfig, run_loadtest  # isort: skip

import argparse
import csv
import datetime
import json
import logging
import os
import re
import statistics
import subprocess
import tempfile
from typing import Any

from bench_harness import PerfAnalyzerUnavailable, PerfAnalyzerUnstable, fetch_perf_analyzer, library_dir

from generator.serve.launch import find_free_port
from generator.serve.server import EmbeddedServer
from tests.stateful_repo import write_accumulate

MODEL = "accumulate"
RESULTS = Path(__file__).resolve().parent / "results" / "bench_sequence.json"
LABELS = ("perf_analyzer", "harness")


def run_perf_analyzer(
    binary: Path, libdir: Path, arguments: list[str], seconds: float, csv_path: Path
) -> tuple[str, dict[str, str]]:
    """Run perf_analyzer once with ``arguments`` (a measurement window of a third of ``seconds``, up to 6
    trials until stable within 100%); return its output and the row of its CSV file."""
    command = [
        str(binary), *arguments, "--measurement-interval", str(int(seconds * 1000 / 3)),
        "--stability-percentage", "100", "--max-trials", "6", "-f", str(csv_path),
    ]  # fmt: skip
    env = {
        **os.environ,
        "LD_LIBRARY_PATH": os.pathsep.join(filter(None, [str(libdir), os.environ.get("LD_LIBRARY_PATH")])),
    }
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=seconds * 10 + 120)
    if result.returncode != 0 or not csv_path.is_file():
        tail = " | ".join((result.stderr or result.stdout).strip().splitlines()[-3:])
        if "stable measurement" in tail:
            raise PerfAnalyzerUnstable(tail)
        raise PerfAnalyzerUnavailable(f"perf_analyzer exited with {result.returncode}: {tail}")
    [row] = list(csv.DictReader(csv_path.open()))
    return result.stdout, row


def perf_analyzer_sequences(
    binary: Path, libdir: Path, url: str, protocol: str, concurrency: int, seconds: float, scratch: Path
) -> dict[str, float]:
    """perf_analyzer's sequence mode: throughput, request latency p50/p99 and sequences per second."""
    arguments = [
        "-m", MODEL, "-u", url, "-i", protocol, "--concurrency-range", str(concurrency),
        "--sequence-length", "20", "--sequence-length-variation", "20",
    ]  # fmt: skip
    stdout, row = run_perf_analyzer(binary, libdir, arguments, seconds, scratch / "pa.csv")
    found = re.search(r"Sequence count: \d+ \(([\d.]+) seq/sec\)", stdout)
    counts = re.search(r"Inference count: (\d+)\s+Execution count: (\d+)", stdout)
    return {
        "throughput": float(row["Inferences/Second"]),
        "p50_ms": float(row["p50 latency"]) / 1000,
        "p99_ms": float(row["p99 latency"]) / 1000,
        "sequences_per_s": float(found.group(1)) if found else float("nan"),
        "avg_batch": int(counts.group(1)) / int(counts.group(2)) if counts else float("nan"),
    }


def harness_sequences(
    url: str, protocol: str, concurrency: int, seconds: float, out: Path
) -> dict[str, float]:
    """The harness's sequence mode (what ``loadtest --users N`` runs against a stateful model)."""
    config = LoadTestConfig(
        models=[MODEL], url=url, protocol=protocol, users=concurrency, duration=seconds, warmup=1.0,
        sequence_length=20, sequence_length_variation=20.0, out=out,
    )  # fmt: skip
    [run] = run_loadtest(config).report["runs"]
    assert run["error_rate"] == 0, run["errors"]
    sequences = run["sequences"]
    return {
        "throughput": run["throughput"],
        "p50_ms": run["latency_ms"]["p50"],
        "p99_ms": run["latency_ms"]["p99"],
        "sequences_per_s": sequences["per_s"],
        "avg_batch": run["server"]["avg_batch_size"],
        "seq_p50_ms": sequences["latency_ms"]["p50"],
        "seq_p99_ms": sequences["latency_ms"]["p99"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--duration", type=float, default=6.0, help="measured seconds per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians are printed")
    parser.add_argument("--protocols", default="http,grpc")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    protocols = [p for p in args.protocols.split(",") if p]
    results: dict[tuple[str, str], dict[int, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        repo = scratch / "model_repository"
        write_accumulate(repo, max_batch_size=max(8, args.concurrency))
        binary = fetch_perf_analyzer()
        libdir = library_dir(scratch)
        ports = {
            "http_port": find_free_port(),
            "grpc_port": find_free_port(),
            "metrics_port": find_free_port(),
        }
        with EmbeddedServer(repo, **ports) as server:
            for index in range(args.rounds):
                order = LABELS if index % 2 == 0 else LABELS[::-1]
                for protocol in protocols:
                    url = server.endpoints.http if protocol == "http" else server.endpoints.grpc
                    for label in order:
                        if label == "perf_analyzer":
                            try:
                                figures = perf_analyzer_sequences(
                                    binary, libdir, url, protocol, args.concurrency, args.duration, scratch
                                )
                            except PerfAnalyzerUnstable as error:
                                print(f"round {index + 1} {protocol}: perf_analyzer skipped: {error}")
                                continue
                        else:
                            out = scratch / f"report-{protocol}-{index}"
                            figures = harness_sequences(
                                f"{protocol}://{url}", protocol, args.concurrency, args.duration, out
                            )
                        results.setdefault((protocol, label), {})[index] = figures
                    print(f"round {index + 1}/{args.rounds} {protocol}: done", flush=True)
    summary = summarize(results, protocols)
    print_summary(summary, args)
    write_results(summary, results, args)


def summarize(results: dict, protocols: list[str]) -> dict[str, dict[str, Any]]:
    """Per protocol and load generator: medians of the rounds and the throughput ratio to perf_analyzer."""
    summary: dict[str, dict[str, Any]] = {}
    for protocol in protocols:
        reference = results.get((protocol, "perf_analyzer"), {})
        for label in LABELS:
            runs = results.get((protocol, label))
            if not runs:
                continue
            entry: dict[str, Any] = {
                key: statistics.median(r[key] for r in runs.values()) for key in next(iter(runs.values()))
            }
            ratios = [r["throughput"] / reference[i]["throughput"] for i, r in runs.items() if i in reference]
            if label != "perf_analyzer" and ratios:
                entry["ratio"] = statistics.median(ratios)
                entry["ratio_range"] = [min(ratios), max(ratios)]
            summary[f"{protocol} {label}"] = entry
    return summary


def print_summary(summary: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    print(
        f"\n{MODEL} (Direct, 8 slots) on the embedded Triton, concurrency {args.concurrency}, sequences of 20 "
        f"+/- 20%, {args.duration:g} s per measurement, median of {args.rounds} alternating rounds "
        f"({os.cpu_count()} CPUs shared by client and server)"
    )
    print(
        f"{'protocol / generator':28} {'infer/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'seq/s':>7} {'batch':>6} "
        f"{'seq p50 ms':>10} {'seq p99 ms':>10} {'vs perf_analyzer':>16} {'range':>11}"
    )
    for name, entry in summary.items():
        ratio = f"{entry['ratio']:15.2f}x" if "ratio" in entry else f"{'':>16}"
        spread = "{:.2f}-{:.2f}x".format(*entry["ratio_range"]) if "ratio_range" in entry else ""
        seq = f"{entry.get('seq_p50_ms', float('nan')):10.1f} {entry.get('seq_p99_ms', float('nan')):10.1f}"
        print(
            f"{name:28} {entry['throughput']:8,.0f} {entry['p50_ms']:7.2f} {entry['p99_ms']:7.2f} "
            f"{entry['sequences_per_s']:7.1f} {entry['avg_batch']:6.2f} {seq} {ratio} {spread:>11}"
        )


def write_results(summary: dict, results: dict, args: argparse.Namespace) -> None:
    document = {
        "benchmark": "bench_sequence",
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model": MODEL,
        "settings": {
            **vars(args),
            "sequence_length": 20,
            "sequence_length_variation_pct": 20,
            "cpus": os.cpu_count(),
        },
        "summary": summary,
        "rounds": {f"{p} {label}": runs for (p, label), runs in results.items()},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(document, indent=2) + "\n")
    print(f"results: {RESULTS}")


if __name__ == "__main__":
    main()
