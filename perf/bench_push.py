"""Benchmark: `push` to the three object-storage APIs, one object at a time against several at once, and a
second push of an unchanged repository against the first.

Writes a synthetic model repository (``--models`` models, each a config and one ``--size-mb`` MB file, no
manifest so a marker object goes last) and pushes it to real servers of each API on 127.0.0.1: moto's S3
server, gcp-storage-emulator (GCS), and Azurite (Azure; skipped where neither it nor npm is here). For each
store, in alternating rounds, it times:

- ``first, 1 job``: a push to a fresh prefix, one object after another;
- ``first, N jobs``: a push to another fresh prefix, ``--jobs`` objects at once (the default of `push`);
- ``again``: the same repository pushed again to that prefix (every object listed, none uploaded).

Prints seconds (median of the rounds), MB/s and the ratios, and writes them to ``--out`` (JSON). The
stores are emulators sharing this machine's cores with the client: the ratios of one run are the figures,
not the absolute speeds, and a cloud store's tens of milliseconds per request favour several jobs more.
gcp-storage-emulator answers one request at a time (Python's plain ``HTTPServer``), so its ``N jobs`` figure
says nothing of GCS itself; moto's server and Azurite answer requests concurrently.

Run: ``python perf/bench_push.py [--models 32] [--size-mb 1] [--jobs 8] [--rounds 3] [--out perf/results/bench_push.json]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from generator.push.run import push
from generator.serve.launch import find_free_port
from tests.azurite import ACCOUNT, ACCOUNT_KEY, azurite_blob, running_azurite
from tests.servers import running_server

BUCKET = "bench"


def _repository(root: Path, models: int, size_mb: float) -> int:
    """A repository of ``models`` models with one random file each; returns its size in bytes."""
    total = 0
    for index in range(models):
        model = root / f"model_{index:03d}"
        (model / "1").mkdir(parents=True)
        (model / "config.pbtxt").write_text(f'name: "model_{index:03d}"\nbackend: "onnxruntime"\n')
        (model / "1" / "model.onnx").write_bytes(os.urandom(int(size_mb * 1024 * 1024)))
        total += sum(p.stat().st_size for p in model.rglob("*") if p.is_file())
    return total


@contextlib.contextmanager
def _s3(log: Path) -> Iterator[tuple[str, str]]:
    import boto3

    os.environ.update(
        AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1"
    )
    port = find_free_port()
    with running_server([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], port, log):
        endpoint = f"http://127.0.0.1:{port}"
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)
        yield f"s3://{BUCKET}", endpoint


@contextlib.contextmanager
def _gcs(log: Path) -> Iterator[tuple[str, str]]:
    import gcp_storage_emulator  # noqa: F401 - installed, or this store is skipped

    port = find_free_port()
    command = [
        sys.executable,
        "-m",
        "gcp_storage_emulator",
        "start",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    with running_server([*command, "--in-memory", "--default-bucket", BUCKET, "--quiet"], port, log):
        yield f"gs://{BUCKET}", f"http://127.0.0.1:{port}"


@contextlib.contextmanager
def _azure(log: Path) -> Iterator[tuple[str, str]]:
    from azure.storage.blob import BlobServiceClient

    executable, why = azurite_blob()
    if executable is None:
        raise LookupError(why)
    os.environ.update(AZURE_STORAGE_ACCOUNT=ACCOUNT, AZURE_STORAGE_KEY=ACCOUNT_KEY)
    with running_azurite(executable, find_free_port(), log) as url:
        credential = {"account_name": ACCOUNT, "account_key": ACCOUNT_KEY}
        BlobServiceClient(url, credential=credential).create_container(BUCKET)
        yield f"as://{ACCOUNT}/{BUCKET}", url


def _timed(action: Callable[[], object]) -> tuple[float, object]:
    began = time.perf_counter()
    result = action()
    return time.perf_counter() - began, result


def _rounds(repo: Path, base: str, endpoint: str, jobs: int, rounds: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"first, 1 job": [], f"first, {jobs} jobs": [], "again": []}
    for number in range(rounds):
        order = [1, jobs] if number % 2 == 0 else [jobs, 1]
        for count in order:
            label = "first, 1 job" if count == 1 else f"first, {jobs} jobs"
            uri = f"{base}/r{number}j{count}"
            seconds, result = _timed(lambda uri=uri, count=count: push(repo, uri, endpoint, jobs=count))
            assert not result.skipped, "a fresh prefix must upload everything"
            times[label].append(seconds)
        uri = f"{base}/r{number}j{jobs}"
        seconds, result = _timed(lambda uri=uri: push(repo, uri, endpoint, jobs=jobs))
        assert not result.uploaded, "an unchanged repository must upload nothing"
        times["again"].append(seconds)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=32)
    parser.add_argument("--size-mb", type=float, default=1.0)
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("perf/results/bench_push.json"))
    args = parser.parse_args()

    results: dict[str, object] = {
        "models": args.models,
        "size_mb": args.size_mb,
        "jobs": args.jobs,
        "stores": {},
    }
    with tempfile.TemporaryDirectory(prefix="bench-push-") as scratch:
        repo = Path(scratch) / "repo"
        size = _repository(repo, args.models, args.size_mb)
        objects = 2 * args.models + 1
        print(f"repository: {objects} objects, {size / 1e6:.1f} MB; {args.rounds} rounds, medians")
        print(f"{'store':<6} {'way':<16} {'seconds':>8} {'MB/s':>7} {'vs 1 job':>9}")
        stores = {"s3": _s3, "gcs": _gcs, "azure": _azure}
        for name, store in stores.items():
            try:
                with store(Path(scratch) / f"{name}.log") as (base, endpoint):
                    times = _rounds(repo, base, endpoint, args.jobs, args.rounds)
            except (ImportError, LookupError) as error:
                print(f"{name:<6} skipped: {error}")
                continue
            medians = {way: statistics.median(values) for way, values in times.items()}
            single = medians["first, 1 job"]
            for way, seconds in medians.items():
                print(
                    f"{name:<6} {way:<16} {seconds:8.2f} {size / 1e6 / seconds:7.1f} {single / seconds:8.2f}x"
                )
            results["stores"][name] = {"seconds": times, "median_seconds": medians}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
