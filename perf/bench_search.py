"""Benchmark: search strategies replayed on measured grids (from ``perf/bench_tune.py``), no server needed.

Each saved grid (``perf/results/tune-grid-*.json``; the ``-busy`` ones were measured while other work loaded
the machine) holds every settings of a space with its measured
objective and constraint outcome. This replays, on that table, ``quick`` (the greedy hill climb ``tune``
uses), steepest-ascent hill climbing, random search and, when installed, Optuna's TPE sampler, and reports
for each: the trials it ran, the best objective it found as a share of the grid's best, and how often it
reached 95% of it. A measurement is
never exact, so each strategy is also replayed with multiplicative noise (``--noise``, default 5%) on every
value it sees, over many seeds; the share is always scored on the noise-free table.

Run: ``python perf/bench_search.py [GRID.json ...] [--seeds 50] [--noise 0.05]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import json
import random
import statistics
from typing import Any

from generator.tune.search import BestFirst, GreedyClimb, HillClimb, Outcome, RandomSearch, Search
from generator.tune.space import Settings, Space, SpaceOptions

RESULTS = Path(__file__).resolve().parent / "results"


def load_grid(path: Path) -> tuple[str, Space, dict[Settings, Outcome]]:
    """The model, its space and the measured outcome of every settings of a saved grid report."""
    report = json.loads(path.read_text())
    [(model, entry)] = report["models"].items()
    start = Settings.from_dict(entry["start"])
    dims = entry["space"]
    options = SpaceOptions(
        instances=dims["instances"],
        threads=dims["threads"],
        max_batch_sizes=dims.get("max_batch_size"),
        batching=dims.get("batching"),
        queue_delays=dims.get("queue_delay_us"),
        preferred=dims.get("preferred"),
    )
    limit = max(dims.get("max_batch_size", [0]))
    space = Space(start, options, limit, min(dims.get("max_batch_size", [1])), cpus=report["machine"]["cpus"])
    sign = 1.0 if report["objective"]["direction"] == "max" else -1.0
    table = {}
    for trial in entry["trials"]:
        if trial["role"] == "confirm":
            continue
        score = None if trial["objective"] is None else sign * trial["objective"]
        table[Settings.from_dict(trial["settings"])] = Outcome(score, trial["violation"])
    return model, space, table


def replay(
    search: Search, space: Space, table: dict[Settings, Outcome], noise: float, rng: random.Random
) -> tuple[int, Settings | None]:
    """Run ``search`` on the table; return its trials and the settings it would crown."""
    seen: dict[Settings, Outcome] = {}
    while (point := search.ask()) is not None:
        settings = space.settings(point)
        if settings not in seen:
            true = table.get(settings, Outcome(None))
            seen[settings] = (
                true
                if true.score is None
                else Outcome(true.score * (1 + rng.uniform(-noise, noise)), true.violation)
            )
        search.tell(point, seen[settings])
    crowned = max(seen, key=lambda s: seen[s].key()) if seen else None
    return len(seen), crowned


def optuna_search(space: Space, seed: int, trials: int) -> Search | None:
    """Optuna's TPE sampler behind the ask/tell interface, or None when Optuna is not installed."""
    try:
        import optuna
    except ImportError:
        return None
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    class _Optuna(Search):
        name = "optuna-tpe"

        def __init__(self) -> None:
            super().__init__(space)
            sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(5, trials))
            self.study = optuna.create_study(direction="maximize", sampler=sampler)
            self.study.enqueue_trial(
                {d.name: 0 for d in space.dimensions}
                | dict(zip([d.name for d in space.dimensions], space.start, strict=True))
            )
            self.left = trials
            self.current: Any = None

        def ask(self) -> tuple[int, ...] | None:
            if self.left <= 0:
                return None
            self.left -= 1
            self.current = self.study.ask()
            return tuple(self.current.suggest_int(d.name, 0, len(d.values) - 1) for d in space.dimensions)

        def tell(self, point: tuple[int, ...], outcome: Outcome) -> None:
            key = outcome.key()
            self.study.tell(self.current, key[0] * 1e9 + key[1])

    return _Optuna()


def summarise(name: str, runs: list[tuple[int, float]], grid_trials: int) -> str:
    trials = [t for t, _ in runs]
    shares = [s for _, s in runs]
    hit = sum(1 for s in shares if s >= 0.95) / len(shares)
    return (
        f"  {name:<12} trials {statistics.median(trials):5.1f} (median; {min(trials)}-{max(trials)}), "
        f"{statistics.median(trials) / grid_trials:5.0%} of the grid; best found {statistics.median(shares):6.1%} "
        f"of the grid's (worst {min(shares):6.1%}); reached 95% in {hit:4.0%} of runs"
    )


def compare(path: Path, seeds: int, noise_level: float) -> None:
    """Replay every strategy on one saved grid and print how each did."""
    model, space, table = load_grid(path)
    best = max(table.values(), key=Outcome.key)

    def share(settings: Settings | None) -> float:
        """The crowned settings' true objective as a share of the grid's best (0 when infeasible)."""
        if settings is None or not table[settings].feasible or not best.score:
            return 0.0
        return (table[settings].score or 0.0) / best.score

    print(f"{model}: grid of {len(table)} trials, best objective {abs(best.score or 0):,.1f}")
    for noise in (0.0, noise_level):
        print(f" noise {noise:.0%}:")
        runs_of = seeds if noise else 1
        climbs = {}
        for name, kind in (("quick", GreedyClimb), ("steepest", HillClimb)):
            climbs[name] = [
                replay(kind(space), space, table, noise, random.Random(s)) for s in range(runs_of)
            ]
            print(summarise(name, [(t, share(c)) for t, c in climbs[name]], len(table)))
        budget = max(t for runs in climbs.values() for t, _ in runs)
        third = -(-len(table) // 3)
        best_first = [
            replay(BestFirst(space, limit=third), space, table, noise, random.Random(s))
            for s in range(runs_of)
        ]
        print(summarise("best-first", [(t, share(c)) for t, c in best_first], len(table)))
        chance = [
            replay(RandomSearch(space, seed=s, limit=budget), space, table, noise, random.Random(s))
            for s in range(seeds)
        ]
        print(summarise("random", [(t, share(c)) for t, c in chance], len(table)))
        runs = []
        for seed in range(min(seeds, 20)):
            search = optuna_search(space, seed, budget)
            if search is None:
                print("  optuna-tpe   not installed (pip install optuna to compare)")
                break
            trials, crowned = replay(search, space, table, noise, random.Random(seed))
            runs.append((trials, share(crowned)))
        if runs:
            print(summarise("optuna-tpe", runs, len(table)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("grids", nargs="*", type=Path)
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("--noise", type=float, default=0.05)
    args = parser.parse_args()
    grids = args.grids or sorted(
        p for p in RESULTS.glob("tune-grid-*.json") if not p.name.endswith(".summary.json")
    )
    if not grids:
        sys.exit("no saved grids: run perf/bench_tune.py first (it saves them in perf/results)")
    for path in grids:
        compare(path, args.seeds, args.noise)


if __name__ == "__main__":
    main()
