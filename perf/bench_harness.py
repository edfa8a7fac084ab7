"""Benchmark: the load-test harness against NVIDIA's perf_analyzer, same server, model and concurrency.

Builds the bundled example, serves it with the embedded Triton, and measures ``digits_cnn`` at one
concurrency (default 8) over HTTP and gRPC, side by side in one run and in alternating rounds: perf_analyzer
(the reference C++ load generator), the harness in one process, and the harness with ``--workers 2``
(Locust's distributed mode). Prints throughput and latency of each and the harness / perf_analyzer ratios.

perf_analyzer ships in the ``tritonclient==2.51.0`` manylinux wheel; the benchmark downloads that wheel once
(``pip download``) into a cache directory and unpacks only the binary. It needs ``libb64.so.0d`` (Debian's
``libb64-0d``: installed with apt-get when missing and possible, else the copy inside the nvidia-pytriton
wheel is used) and a ``libcudart.so.12`` (a link to the one the nvidia-pytriton wheel bundles). When it
still cannot run, the benchmark says why and prints the harness's figures alone.

Note: on a small machine the client and the server compete for the same cores; compare ratios measured
in one run, not absolute figures across machines.

Run: ``python perf/bench_harness.py [--concurrency 8] [--duration 6] [--rounds 3] [--protocols http,grpc]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# Locust (imported by the harness) patches the standard library for gevent; import it before the rest.
from generator.loadtest.run import LoadTestConfig, run_loadtest  # isort: skip

import argparse
import csv
import logging
import os
import resource
import shutil
import statistics
import subprocess
import tempfile
import zipfile

from generator.serve.launch import find_free_port, locate_triton
from generator.serve.server import EmbeddedServer
from generator.spec.models import bundled_example

MODEL = "digits_cnn"
PA_WHEEL_VERSION = "2.51.0"
PA_MEMBER = f"tritonclient-{PA_WHEEL_VERSION}.data/data/bin/perf_analyzer"


class PerfAnalyzerUnavailable(Exception):
    """perf_analyzer cannot be fetched or run here; the message says why."""


class PerfAnalyzerUnstable(Exception):
    """perf_analyzer ran but found no stable measurement (a busy machine); that round goes without it."""


def build_example(repo: Path) -> None:
    """Build the bundled example into ``repo`` in a child process.

    The build runs its exporters in a worker process it talks to over a socket; with the standard library
    patched for gevent (Locust, imported above) that exchange breaks, so the build gets a clean process.
    """
    command = [sys.executable, "-m", "generator", "build", str(bundled_example()), "--output", str(repo)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"building the example failed: {(result.stderr or result.stdout).strip()[-500:]}")


def _cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "tritongen" / f"perf_analyzer-{PA_WHEEL_VERSION}"


def fetch_perf_analyzer() -> Path:
    """The perf_analyzer binary, unpacked from the tritonclient 2.51.0 wheel into the cache once."""
    cache = _cache_dir()
    binary = cache / "perf_analyzer"
    if binary.is_file():
        return binary
    cache.mkdir(parents=True, exist_ok=True)
    wheels = list(cache.glob(f"tritonclient-{PA_WHEEL_VERSION}-*manylinux*.whl"))
    if not wheels:
        print(f"downloading the tritonclient {PA_WHEEL_VERSION} wheel for perf_analyzer into {cache} ...")
        command = [
            sys.executable, "-m", "pip", "download", f"tritonclient=={PA_WHEEL_VERSION}", "--no-deps",
            "--only-binary=:all:", "--platform", "manylinux1_x86_64", "-d", str(cache), "--quiet",
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True)
        wheels = list(cache.glob(f"tritonclient-{PA_WHEEL_VERSION}-*manylinux*.whl"))
        if result.returncode != 0 or not wheels:
            raise PerfAnalyzerUnavailable(f"pip download failed: {result.stderr.strip()[-300:]}")
    with zipfile.ZipFile(wheels[0]) as wheel:
        try:
            data = wheel.read(PA_MEMBER)
        except KeyError as error:
            raise PerfAnalyzerUnavailable(f"{wheels[0].name} has no {PA_MEMBER}") from error
    partial = binary.with_suffix(".partial")
    partial.write_bytes(data)
    partial.chmod(0o755)
    partial.replace(binary)
    return binary


def _has_library(name: str) -> bool:
    try:
        listing = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout
    except OSError:
        return False
    return name in listing


def library_dir(scratch: Path) -> Path:
    """A directory for LD_LIBRARY_PATH with libcudart.so.12 and, when the system lacks it, libb64.so.0d."""
    libs = locate_triton().libs_dir
    cudart = sorted(libs.glob("libcudart*.so*"))
    if not cudart:
        raise PerfAnalyzerUnavailable(f"no libcudart in {libs} to link as libcudart.so.12")
    (scratch / "libcudart.so.12").symlink_to(cudart[0])
    if not _has_library("libb64.so.0d") and shutil.which("apt-get") and os.geteuid() == 0:
        print("installing libb64-0d (perf_analyzer needs it) ...")
        subprocess.run(["apt-get", "install", "-y", "-q", "libb64-0d"], capture_output=True, text=True)
    if not _has_library("libb64.so.0d"):
        bundled = sorted(libs.glob("libb64*.so*"))
        if not bundled:
            raise PerfAnalyzerUnavailable(
                "libb64.so.0d is missing: install Debian's libb64-0d (apt-get install libb64-0d)"
            )
        print("libb64-0d is not installed; using the copy inside the nvidia-pytriton wheel")
        (scratch / "libb64.so.0d").symlink_to(bundled[0])
    return scratch


def perf_analyzer(
    binary: Path, libdir: Path, url: str, protocol: str, concurrency: int, seconds: float
) -> dict:
    """One perf_analyzer measurement: throughput (infer/s) and p50/p99 latency (ms)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "pa.csv"
        command = [
            str(binary), "-m", MODEL, "-u", url, "-i", protocol, "-b", "1",
            "--concurrency-range", str(concurrency), "--measurement-interval", str(int(seconds * 1000 / 3)),
            "--stability-percentage", "100", "--max-trials", "6", "-f", str(out),
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
            if "stable measurement" in tail:
                raise PerfAnalyzerUnstable(tail)
            raise PerfAnalyzerUnavailable(f"perf_analyzer exited with {result.returncode}: {tail}")
        [row] = list(csv.DictReader(out.open()))
    return {
        "throughput": float(row["Inferences/Second"]),
        "p50_ms": float(row["p50 latency"]) / 1000,
        "p99_ms": float(row["p99 latency"]) / 1000,
    }


def harness(url: str, protocol: str, concurrency: int, seconds: float, workers: int, out: Path) -> dict:
    """One harness measurement through the library (what ``python -m generator loadtest`` runs).

    ``cpu_us`` is the harness's CPU time per request over the whole run (spawning and warm-up included): this
    process's, plus its Locust workers' (children reaped when the run ends).
    """
    config = LoadTestConfig(
        models=[MODEL], url=url, protocol=protocol, users=concurrency, duration=seconds, warmup=1.0,
        workers=workers, out=out,
    )  # fmt: skip
    before = _cpu_seconds()
    result = run_loadtest(config)
    cpu = _cpu_seconds() - before
    [run] = result.report["runs"]
    assert run["error_rate"] == 0, run["errors"]
    return {
        "throughput": run["throughput"],
        "p50_ms": run["latency_ms"]["p50"],
        "p99_ms": run["latency_ms"]["p99"],
        "cpu_us": cpu * 1e6 / max(1, result.report["totals"]["requests"]),
    }


def _cpu_seconds() -> float:
    """CPU time of this process and of its children that have been waited for."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


LABELS = ("perf_analyzer", "harness", "harness --workers 2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--duration", type=float, default=6.0, help="measured seconds per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians are printed")
    parser.add_argument("--protocols", default="http,grpc")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("torch").setLevel(logging.ERROR)
    protocols = [p for p in args.protocols.split(",") if p]
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        repo = scratch / "model_repository"
        build_example(repo)
        pa_error = None
        try:
            binary = fetch_perf_analyzer()
            libdir = library_dir(scratch)
        except PerfAnalyzerUnavailable as error:
            pa_error = str(error)
        ports = {
            "http_port": find_free_port(),
            "grpc_port": find_free_port(),
            "metrics_port": find_free_port(),
        }
        results: dict[tuple[str, str], dict[int, dict]] = {}
        with EmbeddedServer(repo, **ports) as server:
            for round_index in range(args.rounds):
                # Every other round runs the load generators in reverse order, so drift favours none of them.
                order = LABELS if round_index % 2 == 0 else LABELS[::-1]
                for protocol in protocols:
                    url = server.endpoints.http if protocol == "http" else server.endpoints.grpc
                    for label in order:
                        if label == "perf_analyzer":
                            if pa_error is not None:
                                continue
                            try:
                                figures = perf_analyzer(
                                    binary, libdir, url, protocol, args.concurrency, args.duration
                                )
                            except PerfAnalyzerUnavailable as error:
                                pa_error = str(error)
                                continue
                            except PerfAnalyzerUnstable as error:
                                print(f"round {round_index + 1} {protocol}: perf_analyzer skipped: {error}")
                                continue
                        else:
                            workers = 2 if "workers" in label else 0
                            out = scratch / f"report-{protocol}-{workers}-{round_index}"
                            figures = harness(
                                f"{protocol}://{url}", protocol, args.concurrency, args.duration, workers, out
                            )
                        results.setdefault((protocol, label), {})[round_index] = figures
                    print(f"round {round_index + 1}/{args.rounds} {protocol}: done", flush=True)
    _print(results, protocols, args, pa_error)


def _print(results: dict, protocols: list[str], args: argparse.Namespace, pa_error: str | None) -> None:
    print(
        f"\n{MODEL} on the embedded Triton, concurrency {args.concurrency}, batch 1, {args.duration:g} s per "
        f"measurement, median of {args.rounds} alternating rounds ({os.cpu_count()} CPUs shared by client and "
        "server); ratio: the median of each round's harness / perf_analyzer throughput, and its range"
    )
    if pa_error:
        print(f"perf_analyzer could not run: {pa_error}")
    print(
        f"{'protocol':8} {'load generator':20} {'infer/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'client CPU us/req':>17} {'vs perf_analyzer':>16} {'range':>11}"
    )
    for protocol in protocols:
        reference = results.get((protocol, "perf_analyzer"), {})
        for label in LABELS:
            runs = results.get((protocol, label))
            if not runs:
                continue
            throughput = statistics.median(r["throughput"] for r in runs.values())
            p50 = statistics.median(r["p50_ms"] for r in runs.values())
            p99 = statistics.median(r["p99_ms"] for r in runs.values())
            cpu = [r["cpu_us"] for r in runs.values() if "cpu_us" in r]
            cpu_text = f"{statistics.median(cpu):17.0f}" if cpu else f"{'n/a':>17}"
            ratios = [r["throughput"] / reference[i]["throughput"] for i, r in runs.items() if i in reference]
            ratio = f"{statistics.median(ratios):15.2f}x" if ratios else f"{'n/a':>16}"
            spread = f"{min(ratios):.2f}-{max(ratios):.2f}x" if ratios else ""
            print(
                f"{protocol:8} {label:20} {throughput:8,.0f} {p50:7.2f} {p99:7.2f} {cpu_text} {ratio} {spread:>11}"
            )


if __name__ == "__main__":
    main()
