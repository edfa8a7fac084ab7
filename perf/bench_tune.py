"""Benchmark: what ``tune`` gains over the default config, and what ``--search quick`` costs against grid.

For the bundled example CNN and a compute-heavier CNN (3x64x64 input, three convolutions), each starting
from the example's defaults (max batch 64, preferred [16, 32], 500 us queue delay, 2 instances):

1. ``tune --search grid`` over one space (the reference): every trial, its time;
2. ``tune --search quick`` over the same space: how close to the grid's best objective, in how much time;
3. the quick winner against the default config, loaded in turn on the same server and measured side by side
   in alternating rounds: p50 latency at 1 user and throughput at 16 users, with the p99 bound checked.

The objective is throughput over 1 and 16 users (geometric mean) subject to ``p99_ms <= --max-p99-ms``.
Every grid's trials are saved (``--save DIR``, default ``perf/results``) for ``perf/bench_search.py``, which
replays them to compare search strategies offline.

Run: ``python perf/bench_tune.py [--models cnn,heavy] [--rounds 2] [--max-p99-ms 50]``. Takes ~30 minutes
on a 2-core machine; the client and the server share its cores, so compare ratios from one run.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# Locust (under the tune and the harness) patches the standard library for gevent; import it first.
from generator.tune.run import TuneConfig, build_in_child, run_tune  # isort: skip

import argparse
import json
import shutil
import statistics
import tempfile
import textwrap
import time
from typing import Any

from generator.harness.bench import ModelBench
from generator.harness.control import ServerControl
from generator.harness.steady import Steadiness
from generator.harness.target import resolve_target
from generator.server import EmbeddedServer, find_free_port
from generator.spec import bundled_example
from generator.tune.space import Settings, SpaceOptions, config_json

DEFAULTS = """\
defaults:
  max_batch_size: 64
  dynamic_batching:
    preferred_batch_size: [16, 32]
    max_queue_delay_microseconds: 500
  instance_group: {count: 2}
  verify: {atol: 1.0e-3, rtol: 1.0e-3}
"""

HEAVY_MODEL = """\
import torch
from torch import nn


def build():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(64, 10),
    ).eval()
"""

SPACE = SpaceOptions(
    instances=[1, 2, 4],
    threads=[None, 1],
    max_batch_sizes=[64],
    batching=[False, True],
    queue_delays=[0, 100, 500],
    preferred=["start", "none"],
)


def project(root: Path, which: str) -> tuple[Path, str]:
    """A spec (and its sources) for one benchmark model; returns the spec and the model's name."""
    root.mkdir(parents=True, exist_ok=True)
    if which == "cnn":
        for name in ("digits.py", "digits_cnn.pt"):
            shutil.copy(bundled_example().parent / name, root / name)
        body = """\
models:
  - name: digits_cnn
    framework: torch
    source: digits.py:build
    inputs:  [{name: image, dtype: FP32, dims: [1, 8, 8]}]
    outputs: [{name: logits, dtype: FP32, dims: [10]}]
    warmup: {batch_size: 8}
"""
        model = "digits_cnn"
    else:
        (root / "heavy.py").write_text(HEAVY_MODEL)
        body = """\
models:
  - name: heavy_cnn
    framework: torch
    source: heavy.py:build
    inputs:  [{name: image, dtype: FP32, dims: [3, 64, 64]}]
    outputs: [{name: logits, dtype: FP32, dims: [10]}]
"""
        model = "heavy_cnn"
    spec = root / "spec.yaml"
    spec.write_text(f"repository: {root / 'model_repository'}\n{DEFAULTS}\n{textwrap.dedent(body)}")
    return spec, model


def tune(spec: Path, model: str, search: str, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    config = TuneConfig(
        models=[model],
        spec=spec,
        users=[1, 16],
        max_p99_ms=args.max_p99_ms,
        search=search,
        steadiness=Steadiness(window=args.window, warmup=1.0, tolerance_pct=10.0, least=3, most=6),
        space=SPACE,
        out=out,
        write=False,
    )
    started = time.monotonic()
    result = run_tune(config)
    seconds = time.monotonic() - started
    entry = result.report["models"][model]
    searched = [t for t in entry["trials"] if t["role"] != "confirm"]
    best = entry.get("best") or {}
    return {
        "seconds": seconds,
        "trials": len(searched),
        "best_objective": best.get("objective"),
        "best": best,
        "winner": entry.get("winner"),
        "verdict": entry.get("verdict"),
        "report": result.report,
    }


def side_by_side(
    spec: Path, model: str, chosen: Settings, rounds: int, window: float
) -> dict[str, list[dict]]:
    """The default config and ``chosen``, loaded in turn and measured at 1 and 16 users, ``rounds`` times."""
    scratch = Path(tempfile.mkdtemp(prefix="bench-tune-"))
    try:
        repository = scratch / "model_repository"
        build_in_child(spec, repository, "cpu", None)
        server = EmbeddedServer(
            repository, http_port=find_free_port(), grpc_port=find_free_port(), metrics_port=find_free_port(),
            supervise=False,
        )  # fmt: skip
        with server:  # started on entry, stopped on exit
            url = f"http://{server.endpoints.http}"
            control = ServerControl(resolve_target(url), timeout=600)
            _, base = control.model(model)
            figures: dict[str, list[dict]] = {"default": [], "tuned": []}
            with ModelBench(url, model, server=server) as bench:
                for _ in range(rounds):
                    # Both as config JSON: a bare reload after an override would keep the override.
                    for label, config in (
                        ("default", json.dumps(base)),
                        ("tuned", config_json(base, chosen)),
                    ):
                        control.load(model, config)
                        measured = bench.measure(
                            [1, 16], Steadiness(window=window, warmup=1.0, least=3, most=6)
                        )
                        one, sixteen = measured.levels
                        figures[label].append(
                            {
                                "p50_ms@1": one["latency_ms"]["p50"],
                                "throughput@16": sixteen["throughput"],
                                "p99_ms@16": sixteen["latency_ms"]["p99"],
                                "p99_ms@1": one["latency_ms"]["p99"],
                            }
                        )
            control.close()
        return figures
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def median(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="cnn,heavy")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--window", type=float, default=1.0)
    parser.add_argument("--max-p99-ms", type=float, default=50.0)
    parser.add_argument("--save", default=str(Path(__file__).resolve().parent / "results"))
    parser.add_argument("--reuse-grid", action="store_true", help="reuse a grid saved by an earlier run")
    args = parser.parse_args()
    save = Path(args.save)
    save.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-tune-work-"))
    summary = []
    try:
        for which in args.models.split(","):
            spec, model = project(work / which, which)
            build_in_child(spec, None, "cpu", None)  # export once; the tunes reuse it
            saved = save / f"tune-grid-{model}.json"
            if args.reuse_grid and saved.is_file():  # the reference is long to measure: reuse the last one
                grid = json.loads(saved.with_suffix(".summary.json").read_text())
                grid["report"] = json.loads(saved.read_text())
            else:
                grid = tune(spec, model, "grid", args, work / f"{which}-grid")
                saved.write_text(json.dumps(grid["report"], indent=1))
                summary_of_grid = {k: v for k, v in grid.items() if k != "report"}
                saved.with_suffix(".summary.json").write_text(json.dumps(summary_of_grid, indent=1))
            quick = tune(spec, model, "quick", args, work / f"{which}-quick")
            chosen = Settings.from_dict((quick["best"] or grid["best"])["settings"])
            figures = side_by_side(spec, model, chosen, args.rounds, args.window)
            row = {
                "model": model,
                "grid_trials": grid["trials"],
                "grid_s": grid["seconds"],
                "grid_best": grid["best_objective"],
                "quick_trials": quick["trials"],
                "quick_s": quick["seconds"],
                "quick_best": quick["best_objective"],
                "quick_verdict": quick["verdict"],
                "tuned": chosen.describe(),
                "default_p50_ms@1": median(figures["default"], "p50_ms@1"),
                "tuned_p50_ms@1": median(figures["tuned"], "p50_ms@1"),
                "default_throughput@16": median(figures["default"], "throughput@16"),
                "tuned_throughput@16": median(figures["tuned"], "throughput@16"),
                "default_p99_ms@16": median(figures["default"], "p99_ms@16"),
                "tuned_p99_ms@16": median(figures["tuned"], "p99_ms@16"),
                "rounds": figures,
            }
            summary.append(row)
            print_row(row, args.max_p99_ms)
        (save / "bench_tune.json").write_text(json.dumps(summary, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def print_row(row: dict[str, Any], bound: float) -> None:
    print(f"\n== {row['model']} ==")
    print(f"tuned config: {row['tuned']} ({row['quick_verdict']})")
    latency_gain = 1 - row["tuned_p50_ms@1"] / row["default_p50_ms@1"]
    throughput_gain = row["tuned_throughput@16"] / row["default_throughput@16"]
    print(
        f"p50 at 1 user:       default {row['default_p50_ms@1']:.3f} ms, tuned {row['tuned_p50_ms@1']:.3f} ms "
        f"({latency_gain:+.0%} lower)"
    )
    print(
        f"throughput at 16:    default {row['default_throughput@16']:,.0f}, tuned {row['tuned_throughput@16']:,.0f} "
        f"infer/s ({throughput_gain:.2f}x); p99 at 16: {row['default_p99_ms@16']:.2f} -> {row['tuned_p99_ms@16']:.2f} "
        f"ms (bound {bound:g}: {'kept' if row['tuned_p99_ms@16'] <= bound else 'BROKEN'})"
    )
    share = row["quick_best"] / row["grid_best"] if row["grid_best"] else float("nan")
    print(
        f"quick vs grid:       {row['quick_trials']} trials in {row['quick_s']:.0f} s vs {row['grid_trials']} in "
        f"{row['grid_s']:.0f} s ({row['quick_s'] / row['grid_s']:.2f} of the time); best objective "
        f"{row['quick_best']:,.0f} vs {row['grid_best']:,.0f} ({share:.1%})"
    )


if __name__ == "__main__":
    main()
