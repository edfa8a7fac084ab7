"""Benchmark: the example CNN at 16 concurrent users with Triton's dynamic batching, and without it.

Builds the bundled example, copies ``digits_cnn`` in the same repository as ``digits_cnn_nobatch`` with the
``dynamic_batching`` block removed from its config (everything else byte for byte the same), serves both
from one embedded Triton, and loads each in alternating rounds with the harness (HTTP, batch 1 per
request). Prints throughput, latency and the average executed batch size of each, and the ratio
with / without, measured side by side in one run.

Run: ``python perf/bench_batching.py [--users 16] [--duration 5] [--rounds 2]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# Locust (imported by the harness) patches the standard library for gevent; import it before the rest.
from generator.loadtest.run import LoadTestConfig, run_loadtest  # isort: skip

import argparse
import logging
import os
import re
import shutil
import statistics
import tempfile

from generator.build.run import build
from generator.serve.launch import find_free_port
from generator.serve.server import EmbeddedServer
from generator.spec.models import bundled_example
from generator.validate.run import validate_repository

BATCHED = "digits_cnn"
UNBATCHED = "digits_cnn_nobatch"
_DYNAMIC_BATCHING = re.compile(r"^dynamic_batching \{\n(?:  .*\n)*\}\n", re.MULTILINE)


def add_unbatched_copy(repo: Path) -> None:
    """Copy the CNN as ``digits_cnn_nobatch`` without ``dynamic_batching``, and check the repository."""
    source, target = repo / BATCHED, repo / UNBATCHED
    shutil.copytree(source, target)
    config = (target / "config.pbtxt").read_text()
    stripped, removed = _DYNAMIC_BATCHING.subn("", config)
    if removed != 1:
        raise SystemExit(f"expected one dynamic_batching block in {source / 'config.pbtxt'}, found {removed}")
    (target / "config.pbtxt").write_text(stripped.replace(f'name: "{BATCHED}"', f'name: "{UNBATCHED}"'))
    validate_repository(repo).raise_for_errors()


def measure(url: str, model: str, users: int, seconds: float, out: Path) -> dict:
    """One harness run on ``model``: throughput, latency, and the server's average executed batch."""
    result = run_loadtest(
        LoadTestConfig(models=[model], url=url, users=users, duration=seconds, warmup=1.0, out=out)
    )
    [run] = result.report["runs"]
    assert run["error_rate"] == 0, run["errors"]
    return {
        "throughput": run["throughput"],
        "p50_ms": run["latency_ms"]["p50"],
        "p99_ms": run["latency_ms"]["p99"],
        "batch": run["server"]["avg_batch_size"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=16)
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per run")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds; medians are printed")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("torch").setLevel(logging.ERROR)
    results: dict[str, list[dict]] = {BATCHED: [], UNBATCHED: []}
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "model_repository"
        build(bundled_example(), repo)
        add_unbatched_copy(repo)
        ports = {
            "http_port": find_free_port(),
            "grpc_port": find_free_port(),
            "metrics_port": find_free_port(),
        }
        with EmbeddedServer(repo, **ports) as server:
            for index in range(args.rounds):
                for model in (BATCHED, UNBATCHED):
                    out = Path(tmp) / f"report-{model}-{index}"
                    results[model].append(
                        measure(server.endpoints.http, model, args.users, args.duration, out)
                    )
                print(f"round {index + 1}/{args.rounds}: done", flush=True)
    print(
        f"\ndigits_cnn (2 CPU instances) at {args.users} users over HTTP, batch 1 per request, {args.duration:g} s "
        f"per run, median of {args.rounds} alternating rounds ({os.cpu_count()} CPUs shared by client and server)"
    )
    print(f"{'config':28} {'infer/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'avg executed batch':>19}")
    medians = {}
    for model, label in ((BATCHED, "dynamic batching"), (UNBATCHED, "no dynamic batching")):
        figures = {key: statistics.median(r[key] for r in results[model]) for key in results[model][0]}
        medians[model] = figures
        print(
            f"{label:28} {figures['throughput']:9,.0f} {figures['p50_ms']:8.2f} {figures['p99_ms']:8.2f} "
            f"{figures['batch']:19.2f}"
        )
    ratio = medians[BATCHED]["throughput"] / medians[UNBATCHED]["throughput"]
    print(f"throughput with / without dynamic batching: {ratio:.2f}x")


if __name__ == "__main__":
    main()
