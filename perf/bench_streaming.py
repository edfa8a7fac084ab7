"""Benchmark: the harness's streaming figures against perf_analyzer's on the same decoupled model.

Writes a decoupled Python model by hand (``streamer`` of ``tests/stateful_repo.py``: for each request it
sends ``max_tokens`` responses, one word each, ``token_delay_ms`` apart, then an empty final response;
one instance per concurrent request, so requests do not queue), serves it with the embedded Triton, and
drives it over gRPC streaming at one concurrency (default 4), the same prompt and ``max_tokens`` (16) from
one data file (perf_analyzer's ``--input-data`` format, which the harness reads too), in alternating
rounds: perf_analyzer 2.51 with ``--streaming`` (its profile export gives every request's send time and
response times, from which the figures are computed as genai-perf computes them: a token is a response
with output text) and the harness (``loadtest``, its ``stream`` figures). Prints requests per second,
output tokens per second, time to first token, inter-token latency and request latency of each, and the
harness / perf_analyzer ratios; writes ``perf/results/bench_streaming.json``.

Run: ``python perf/bench_streaming.py [--concurrency 4] [--tokens 16] [--delay-ms 2] [--duration 6] [--rounds 3]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# Locust (imported by the harness) patches the standard library for gevent; import it before the rest.
from generator.loadtest.run import LoadTestConfig, run_loadtest  # isort: skip

import argparse
import datetime
import json
import logging
import os
import statistics
import tempfile
from typing import Any

import numpy as np
from bench_harness import PerfAnalyzerUnstable, fetch_perf_analyzer, library_dir
from bench_sequence import run_perf_analyzer

from generator.serve.launch import find_free_port
from generator.serve.server import EmbeddedServer
from tests.stateful_repo import write_streamer

MODEL = "streamer"
PROMPT = "the quick brown fox jumps over a lazy dog"
RESULTS = Path(__file__).resolve().parent / "results" / "bench_streaming.json"
LABELS = ("perf_analyzer", "harness")
FIGURES = (
    "requests_per_s",
    "tokens_per_s",
    "ttft_p50_ms",
    "ttft_p99_ms",
    "itl_p50_ms",
    "itl_p99_ms",
    "p50_ms",
    "p99_ms",
)


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def profile_figures(export: dict[str, Any]) -> dict[str, float]:
    """genai-perf's figures from perf_analyzer's profile export (its last, stable experiment).

    Per request: time to first token (the first response with output text, from the request's send),
    inter-token latency ((last token - first token) / (tokens - 1)) and latency (to the last response);
    requests and tokens per second over the experiment's measurement windows.
    """
    experiment = export["experiments"][-1]
    bounds = experiment["window_boundaries"]
    seconds = (bounds[-1] - bounds[0]) / 1e9
    ttft, itl, latency, tokens = [], [], [], 0
    for request in experiment["requests"]:
        sent = request["timestamp"]
        times = [
            t
            for t, output in zip(request["response_timestamps"], request["response_outputs"], strict=True)
            if any(value not in ("", None) for value in output.values())
        ]
        if not times:
            continue
        tokens += len(times)
        ttft.append((times[0] - sent) / 1e6)
        if len(times) > 1:
            itl.append((times[-1] - times[0]) / 1e6 / (len(times) - 1))
        latency.append((request["response_timestamps"][-1] - sent) / 1e6)
    return {
        "requests_per_s": len(latency) / seconds,
        "tokens_per_s": tokens / seconds,
        "ttft_p50_ms": _percentile(ttft, 50),
        "ttft_p99_ms": _percentile(ttft, 99),
        "itl_p50_ms": _percentile(itl, 50),
        "itl_p99_ms": _percentile(itl, 99),
        "p50_ms": _percentile(latency, 50),
        "p99_ms": _percentile(latency, 99),
    }


def perf_analyzer_streaming(
    binary: Path, libdir: Path, url: str, concurrency: int, data: Path, seconds: float, scratch: Path
) -> dict[str, float]:
    """perf_analyzer's streaming mode on the decoupled model, read from its profile export."""
    export = scratch / "profile.json"
    export.unlink(missing_ok=True)  # perf_analyzer refuses to overwrite it
    arguments = [
        "-m", MODEL, "-u", url, "-i", "grpc", "--streaming", "--concurrency-range", str(concurrency),
        "--input-data", str(data), "--profile-export-file", str(export),
    ]  # fmt: skip
    run_perf_analyzer(binary, libdir, arguments, seconds, scratch / "pa.csv")
    return profile_figures(json.loads(export.read_text()))


def harness_streaming(url: str, concurrency: int, data: Path, seconds: float, out: Path) -> dict[str, float]:
    """The harness's streaming figures (what ``loadtest --users N`` reports for a decoupled model)."""
    config = LoadTestConfig(
        models=[MODEL], url=url, protocol="grpc", users=concurrency, duration=seconds, warmup=1.0,
        data=data, out=out,
    )  # fmt: skip
    [run] = run_loadtest(config).report["runs"]
    assert run["error_rate"] == 0, run["errors"]
    stream = run["stream"]
    return {
        "requests_per_s": run["requests_per_s"],
        "tokens_per_s": stream["tokens_per_s"],
        "ttft_p50_ms": stream["ttft_ms"]["p50"],
        "ttft_p99_ms": stream["ttft_ms"]["p99"],
        "itl_p50_ms": stream["itl_ms"]["p50"],
        "itl_p99_ms": stream["itl_ms"]["p99"],
        "p50_ms": run["latency_ms"]["p50"],
        "p99_ms": run["latency_ms"]["p99"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=16, help="max_tokens of every request")
    parser.add_argument("--delay-ms", type=float, default=2.0, help="the model's delay before each token")
    parser.add_argument("--duration", type=float, default=6.0, help="measured seconds per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians are printed")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    results: dict[str, dict[int, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        repo = scratch / "model_repository"
        write_streamer(repo, token_delay_ms=args.delay_ms, instances=args.concurrency)
        data = scratch / "prompts.json"
        data.write_text(json.dumps({"data": [{"prompt": [PROMPT], "max_tokens": [args.tokens]}]}))
        binary = fetch_perf_analyzer()
        libdir = library_dir(scratch)
        ports = {
            "http_port": find_free_port(),
            "grpc_port": find_free_port(),
            "metrics_port": find_free_port(),
        }
        with EmbeddedServer(repo, **ports) as server:
            url = server.endpoints.grpc
            for index in range(args.rounds):
                for label in LABELS if index % 2 == 0 else LABELS[::-1]:
                    if label == "perf_analyzer":
                        try:
                            figures = perf_analyzer_streaming(
                                binary, libdir, url, args.concurrency, data, args.duration, scratch
                            )
                        except PerfAnalyzerUnstable as error:
                            print(f"round {index + 1}: perf_analyzer skipped: {error}")
                            continue
                    else:
                        out = scratch / f"report-{index}"
                        figures = harness_streaming(
                            f"grpc://{url}", args.concurrency, data, args.duration, out
                        )
                    results.setdefault(label, {})[index] = figures
                print(f"round {index + 1}/{args.rounds}: done", flush=True)
    summary = summarize(results)
    print_summary(summary, args)
    write_results(summary, results, args)


def summarize(results: dict[str, dict[int, dict[str, float]]]) -> dict[str, dict[str, Any]]:
    """Medians of the rounds per load generator; the harness's ratios to perf_analyzer, round by round."""
    summary: dict[str, dict[str, Any]] = {}
    reference = results.get("perf_analyzer", {})
    for label in LABELS:
        runs = results.get(label)
        if not runs:
            continue
        entry: dict[str, Any] = {key: statistics.median(r[key] for r in runs.values()) for key in FIGURES}
        if label != "perf_analyzer" and reference:
            ratios = {}
            for key in FIGURES:
                values = [r[key] / reference[i][key] for i, r in runs.items() if i in reference]
                ratios[key] = {"median": statistics.median(values), "range": [min(values), max(values)]}
            entry["vs_perf_analyzer"] = ratios
        summary[label] = entry
    return summary


def print_summary(summary: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    print(
        f"\n{MODEL} (decoupled, {args.tokens} tokens {args.delay_ms:g} ms apart, {args.concurrency} instances) "
        f"over gRPC streaming, concurrency {args.concurrency}, {args.duration:g} s per measurement, median of "
        f"{args.rounds} alternating rounds ({os.cpu_count()} CPUs shared by client and server)"
    )
    labels = ("req/s", "tokens/s", "TTFT p50", "TTFT p99", "ITL p50", "ITL p99", "p50 ms", "p99 ms")
    print(f"{'generator':16} " + " ".join(f"{label:>9}" for label in labels))
    for name, entry in summary.items():
        print(f"{name:16} " + " ".join(f"{entry[key]:9.2f}" for key in FIGURES))
        if "vs_perf_analyzer" in entry:
            ratios = entry["vs_perf_analyzer"]
            print(
                f"{'  / perf_analyzer':16} " + " ".join(f"{ratios[key]['median']:8.2f}x" for key in FIGURES)
            )


def write_results(summary: dict, results: dict, args: argparse.Namespace) -> None:
    document = {
        "benchmark": "bench_streaming",
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model": MODEL,
        "settings": {**vars(args), "prompt": PROMPT, "cpus": os.cpu_count()},
        "summary": summary,
        "rounds": results,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(document, indent=2) + "\n")
    print(f"results: {RESULTS}")


if __name__ == "__main__":
    main()
