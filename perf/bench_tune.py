"""Benchmark: what ``tune`` gains over the default config, and what ``--search quick`` costs against grid.

For the bundled example CNN and a compute-heavier CNN (3x64x64 input, three convolutions), each starting
from the example's defaults (max batch 64, preferred [16, 32], 500 us queue delay, 2 instances):

1. ``tune --search grid`` over one space (the reference): every trial, its time;
2. ``tune --search quick`` over the same space: how close to the grid's best objective, in how much time;
3. the quick tune's winner (the start config when it confirmed none) against the default config, loaded in
   turn on the same server and measured side by side in alternating rounds: at every level (1 and 16
   users) throughput, p50 and p99, each level's ratio, and the default config's own spread between rounds
   (at least 3%) as the noise; the bar: worse at no level beyond that noise, and better at one.

The objective is throughput over 1 and 16 users (geometric mean) subject to ``p99_ms <= --max-p99-ms``,
with tune's default rule that no level may end worse than the start config beyond the measured noise.
Every grid's trials are saved (``--save DIR``, default ``perf/results``) for ``perf/bench_search.py``, which
replays them to compare search strategies offline.

Run: ``python perf/bench_tune.py [--models cnn,heavy] [--rounds 3] [--max-p99-ms 50]``. Takes ~30 minutes
on a 2-core machine; the client and the server share its cores, so compare ratios from one run.
``--reuse-grid`` reuses the grids saved by an earlier run, ``--no-grid`` skips them, ``--budget-minutes``
bounds the quick tune.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# Locust (under the tune and the harness) patches the standard library for gevent; import it first.
from generator.tune.run import TuneConfig, run_tune  # isort: skip

import argparse
import json
import shutil
import statistics
import tempfile
import textwrap
import time
from typing import Any

from generator.build.child import build_in_child
from generator.core.errors import LoadTestError
from generator.loadtest.bench import ModelBench
from generator.loadtest.steady import Steadiness
from generator.loadtest.target import resolve_target
from generator.serve.control import ServerControl
from generator.serve.launch import find_free_port
from generator.serve.server import EmbeddedServer
from generator.spec.models import bundled_example
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


LEVELS = [1, 16]
FIGURES = (("throughput", "higher"), ("p50_ms", "lower"), ("p99_ms", "lower"))


def tune(spec: Path, model: str, search: str, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    config = TuneConfig(
        models=[model],
        spec=spec,
        users=LEVELS,
        max_p99_ms=args.max_p99_ms,
        search=search,
        budget_minutes=args.budget_minutes if search == "quick" else None,
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
    by_number = {t["number"]: t for t in entry["trials"]}
    return {
        "seconds": seconds,
        "trials": len(searched),
        "best_objective": best.get("objective"),
        "best": best,
        "winner": entry.get("winner"),
        "winner_trial": by_number.get(entry.get("winner")),
        "start": by_number.get(0),
        "verdict": entry.get("verdict"),
        "noise": entry.get("noise"),
        "vs_start": entry.get("vs_start"),
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
            control = ServerControl(resolve_target(url), timeout=600, error=LoadTestError)
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
                            LEVELS, Steadiness(window=window, warmup=1.0, least=3, most=6)
                        )
                        row = {}
                        for users, run in zip(LEVELS, measured.levels, strict=True):
                            row[f"throughput@{users}"] = run["throughput"]
                            row[f"p50_ms@{users}"] = run["latency_ms"]["p50"]
                            row[f"p99_ms@{users}"] = run["latency_ms"]["p99"]
                        figures[label].append(row)
            control.close()
        return figures
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def median(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def per_level(figures: dict[str, list[dict]]) -> dict[str, dict[str, Any]]:
    """Per figure and level: the medians, the ratio tuned/default, the default's spread, the verdict."""
    result = {}
    for name, better in FIGURES:
        for users in LEVELS:
            key = f"{name}@{users}"
            default = [r[key] for r in figures["default"]]
            old, new = statistics.median(default), median(figures["tuned"], key)
            noise = max(0.03, (max(default) - min(default)) / statistics.mean(default))
            gain = (new - old) / old if better == "higher" else (old - new) / old
            verdict = "better" if gain > noise else "worse" if gain < -noise else "same"
            result[key] = {
                "default": old,
                "tuned": new,
                "ratio": new / old,
                "noise": noise,
                "verdict": verdict,
            }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="cnn,heavy")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--window", type=float, default=1.0)
    parser.add_argument("--max-p99-ms", type=float, default=50.0)
    parser.add_argument("--save", default=str(Path(__file__).resolve().parent / "results"))
    parser.add_argument("--reuse-grid", action="store_true", help="reuse a grid saved by an earlier run")
    parser.add_argument("--no-grid", action="store_true", help="skip the grid (no quick-vs-grid figures)")
    parser.add_argument("--budget-minutes", type=float, help="bound the quick tune (default: none)")
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
            grid: dict[str, Any] | None = None
            if args.no_grid:
                pass
            elif args.reuse_grid and saved.is_file():  # the reference is long to measure: reuse the last one
                grid = json.loads(saved.with_suffix(".summary.json").read_text())
                grid["report"] = json.loads(saved.read_text())
            else:
                grid = tune(spec, model, "grid", args, work / f"{which}-grid")
                saved.write_text(json.dumps(grid["report"], indent=1))
                summary_of_grid = {k: v for k, v in grid.items() if k != "report"}
                saved.with_suffix(".summary.json").write_text(json.dumps(summary_of_grid, indent=1))
            quick = tune(spec, model, "quick", args, work / f"{which}-quick")
            # What tune would write: its confirmed winner, else the start config stays.
            kept = quick["winner_trial"] or quick["start"]
            chosen = Settings.from_dict(kept["settings"])
            figures = side_by_side(spec, model, chosen, args.rounds, args.window)
            levels = per_level(figures)
            throughput = [levels[f"throughput@{u}"]["verdict"] for u in LEVELS]
            row = {
                "model": model,
                "grid_trials": grid["trials"] if grid else None,
                "grid_s": grid["seconds"] if grid else None,
                "grid_best": grid["best_objective"] if grid else None,
                "quick_trials": quick["trials"],
                "quick_s": quick["seconds"],
                "quick_best": quick["best_objective"],
                "quick_verdict": quick["verdict"],
                "quick_noise": quick["noise"],
                "quick_vs_start": quick["vs_start"],
                "winner": quick["winner"],
                "tuned": chosen.describe(),
                "levels": levels,
                "bar_met": "worse" not in throughput and "better" in throughput,
                "p99_bound_kept": all(levels[f"p99_ms@{u}"]["tuned"] <= args.max_p99_ms for u in LEVELS),
                "rounds": figures,
            }
            summary.append(row)
            print_row(row, args.max_p99_ms)
        (save / "bench_tune.json").write_text(json.dumps(summary, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def print_row(row: dict[str, Any], bound: float) -> None:
    print(f"\n== {row['model']} ==")
    kept = "winner" if row["winner"] is not None else "no winner: the start config stays"
    print(f"tune quick: {row['tuned']} ({kept}; {row['quick_verdict']})")
    noise = row.get("quick_noise") or {}
    if noise:
        shown = ", ".join(f"{lv['users']} users {lv['noise_pct']}%" for lv in noise["levels"])
        print(f"noise tune measured on the start config: {shown}")
    print(f"{'side by side (median)':<24}{'default':>12}{'tuned':>12}{'ratio':>8}{'noise':>8}  verdict")
    for key, level in row["levels"].items():
        print(
            f"{key:<24}{level['default']:>12,.3f}{level['tuned']:>12,.3f}{level['ratio']:>8.3f}"
            f"{level['noise']:>8.1%}  {level['verdict']}"
        )
    print(
        f"bar (throughput worse at no level beyond the noise, better at one): "
        f"{'met' if row['bar_met'] else 'NOT met'}; p99 bound {bound:g} ms "
        f"{'kept' if row['p99_bound_kept'] else 'BROKEN'}"
    )
    if row["grid_s"]:
        share = row["quick_best"] / row["grid_best"] if row["grid_best"] else float("nan")
        print(
            f"quick vs grid: {row['quick_trials']} trials in {row['quick_s']:.0f} s vs {row['grid_trials']} in "
            f"{row['grid_s']:.0f} s ({row['quick_s'] / row['grid_s']:.2f} of the time); best objective "
            f"{row['quick_best']:,.0f} vs {row['grid_best']:,.0f} ({share:.1%})"
        )
    else:
        print(f"quick: {row['quick_trials']} trials in {row['quick_s']:.0f} s (no grid this run)")


if __name__ == "__main__":
    main()
