"""Benchmark: how fast ``serve`` stops under load, and how long the outages its supervision repairs last.

Builds the bundled example once, then measures on the real embedded Triton:

* **stop under load**: ``python -m generator serve`` with 4 client threads sending ``digits_cnn``
  requests over HTTP; SIGTERM; the seconds until the process exited, and from SIGTERM to the last
  request served (requests after it are refused with "unknown model" or a closed connection);
* **crash outages**: one HTTP request declaring the shape ``[2147483648, 64]`` aborts Triton 2.51
  (``std::bad_alloc``); the seconds from that request until ``digits_cnn`` answers again, for several
  crashes in a row (the first 5 within a minute restart at once, later ones back off 1 s, 2 s, ...);
* **stub death**: a ``digits_cnn`` backend stub SIGKILLed; the seconds until every request succeeds
  again (the model is reloaded) and until the previous load's healthy stub is gone (Triton never stops it
  once a request failed on the dead stub; the watcher does, after the server's ``exit_timeout``).

The figures depend on the machine and its load; the tests only bound them generously. Prints a table and
writes the raw figures as JSON with ``--json``.

Run: ``python perf/bench_stop.py [--rounds 3] [--crashes 7] [--json perf/results/bench_stop.json]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import http.client
import json
import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import threading
import time

import numpy as np
import psutil
import tritonclient.http as httpclient

from generator.serve.launch import find_free_port
from generator.serve.server import EmbeddedServer
from generator.spec.models import bundled_example

MODEL, INPUT = "digits_cnn", "image"
ABORTING_BODY = json.dumps(
    {"inputs": [{"name": INPUT, "shape": [2147483648, 64], "datatype": "FP32", "data": [1.0] * 4}]}
).encode()


def build_example(repo: Path) -> None:
    """Build the bundled example into ``repo`` (a child process, as a user runs it)."""
    command = [sys.executable, "-m", "generator", "build", str(bundled_example()), "--output", str(repo)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"building the example failed: {(result.stderr or result.stdout).strip()[-500:]}")


def ports() -> dict[str, int]:
    return {"http_port": find_free_port(), "grpc_port": find_free_port(), "metrics_port": find_free_port()}


def infer(client: httpclient.InferenceServerClient) -> None:
    x = np.zeros((1, 1, 8, 8), dtype=np.float32)
    tensor = httpclient.InferInput(INPUT, list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    client.infer(MODEL, [tensor])


def serving(endpoint: str) -> bool:
    try:
        infer(httpclient.InferenceServerClient(endpoint, connection_timeout=1.0, network_timeout=5.0))
    except Exception:  # refused or failing while it restarts or reloads
        return False
    return True


def wait_serving(endpoint: str, timeout: float = 180.0) -> float:
    began = time.monotonic()
    while not serving(endpoint):
        if time.monotonic() - began > timeout:
            raise SystemExit(f"{MODEL} did not answer within {timeout:g} s")
        time.sleep(0.05)
    return time.monotonic() - began


def stop_under_load(repo: Path) -> tuple[float, float]:
    """(seconds from SIGTERM to exit, seconds from SIGTERM to the last request served)."""
    chosen = ports()
    command = [sys.executable, "-m", "generator", "serve", str(repo)]
    for key, port in chosen.items():
        command += [f"--{key.replace('_', '-')}", str(port)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"127.0.0.1:{chosen['http_port']}"
    stop = threading.Event()
    served: list[float] = []

    def load() -> None:
        client = httpclient.InferenceServerClient(endpoint, network_timeout=10.0)
        while not stop.is_set():
            try:
                infer(client)
                served.append(time.monotonic())
            except Exception:
                time.sleep(0.01)

    threads = [threading.Thread(target=load, daemon=True) for _ in range(4)]
    try:
        wait_serving(endpoint)
        time.sleep(1.0)  # serve polls readiness too
        for thread in threads:
            thread.start()
        time.sleep(2.0)
        process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        process.wait(timeout=120)
        took = time.monotonic() - signalled
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=15)
        if process.poll() is None:
            process.kill()
            process.wait()
    return took, max(served) - signalled


def crash_outages(repo: Path, crashes: int) -> list[float]:
    """Seconds from each aborting request until the model answers again."""
    outages = []
    with EmbeddedServer(repo, **ports(), exit_timeout=5) as server:
        host, port = server.endpoints.http.rsplit(":", 1)
        for _ in range(crashes):
            sent = time.monotonic()
            connection = http.client.HTTPConnection(host, int(port), timeout=60)
            try:
                connection.request("POST", f"/v2/models/{MODEL}/infer", ABORTING_BODY, {})
                connection.getresponse().read()
            except (OSError, http.client.HTTPException):
                pass  # the connection closes when Triton aborts
            finally:
                connection.close()
            wait_serving(server.endpoints.http)
            outages.append(time.monotonic() - sent)
        if server.restarts != crashes:
            raise SystemExit(f"expected {crashes} restarts, the server counted {server.restarts}")
        shutil.rmtree(server.log_path.parent, ignore_errors=True)  # kept after the crashes
    return outages


def model_stubs(server: int) -> list[psutil.Process]:
    found = []
    for child in psutil.Process(server).children():
        try:
            if child.status() != psutil.STATUS_ZOMBIE and f"/{MODEL}/" in " ".join(child.cmdline()[1:2]):
                found.append(child)
        except psutil.Error:
            continue
    return found


def stub_death(repo: Path) -> tuple[float, float]:
    """(seconds until requests succeed again, seconds until the previous load's healthy stub is gone)."""
    with EmbeddedServer(repo, **ports(), exit_timeout=5) as server:
        assert server.pid is not None
        before = model_stubs(server.pid)
        client = httpclient.InferenceServerClient(server.endpoints.http, network_timeout=10.0)
        os.kill(before[0].pid, signal.SIGKILL)
        killed = time.monotonic()
        streak, recovered = 0, 0.0
        while streak < 20:
            try:
                infer(client)
                streak += 1
            except Exception:  # routed to the dead stub, or reloading
                streak, recovered = 0, 0.0
            if streak == 1:
                recovered = time.monotonic() - killed
        old = {p.pid for p in before}
        while old & {p.pid for p in model_stubs(server.pid)}:
            if time.monotonic() - killed > 120:
                raise SystemExit("the previous load's stub is still running 120 s after the stub death")
            time.sleep(0.05)
        return recovered, time.monotonic() - killed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="SIGTERM rounds and stub deaths")
    parser.add_argument("--crashes", type=int, default=7, help="aborting requests in a row")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-stop-"))
    try:
        repo = work / "model_repository"
        build_example(repo)
        stops = [stop_under_load(repo) for _ in range(args.rounds)]
        outages = crash_outages(repo, args.crashes)
        deaths = [stub_death(repo) for _ in range(args.rounds)]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    took, last = [s[0] for s in stops], [s[1] for s in stops]
    print(f"machine: {os.cpu_count()} CPUs; {args.rounds} rounds")
    print(
        f"SIGTERM under load -> serve exited   median {statistics.median(took):5.2f} s  max {max(took):5.2f} s"
    )
    print(
        f"SIGTERM under load -> last served    median {statistics.median(last):5.2f} s  max {max(last):5.2f} s"
    )
    print("crash outages (s): " + ", ".join(f"{o:.1f}" for o in outages))
    recovered, gone = [d[0] for d in deaths], [d[1] for d in deaths]
    print(f"stub death -> requests succeed       median {statistics.median(recovered):5.2f} s")
    print(f"stub death -> previous stub gone     median {statistics.median(gone):5.2f} s (exit_timeout 5 s)")
    if args.json:
        figures = {
            "cpus": os.cpu_count(),
            "stop_seconds": took,
            "last_served_after_sigterm_seconds": last,
            "crash_outage_seconds": outages,
            "stub_death_recovered_seconds": recovered,
            "stub_death_previous_stub_gone_seconds": gone,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
