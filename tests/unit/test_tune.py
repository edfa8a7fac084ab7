"""The tune's pure parts: the space, the search strategies on synthetic objectives, the objective."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from generator.core.errors import TuneError
from generator.loadtest.report.gate import parse_bound
from generator.tune.objective import LevelGuard, Objective, judge, level_noise, parse_bytes
from generator.tune.report import pareto_front, render_html
from generator.tune.search import GreedyClimb, GridSearch, HillClimb, Outcome, RandomSearch, make_search
from generator.tune.space import (
    Settings,
    Space,
    SpaceOptions,
    config_json,
    spec_settings,
    start_settings,
    thread_parameter,
    without_response_cache,
)

BASE = {
    "name": "m",
    "platform": "onnxruntime_onnx",
    "max_batch_size": 64,
    "dynamic_batching": {"preferred_batch_size": [16, 32], "max_queue_delay_microseconds": "500"},
    "instance_group": [{"name": "m", "kind": "KIND_CPU", "count": 2, "gpus": []}],
    "parameters": {"execution_mode": {"string_value": "0"}},
    "model_warmup": [{"name": "w", "batch_size": 8, "inputs": {}}],
}


def _space(**options: object) -> Space:
    return Space(start_settings(BASE), SpaceOptions(**options), batch_limit=2**16, smallest_batch=8, cpus=2)


def test_start_settings_read_from_tritons_json() -> None:
    start = start_settings(BASE)
    assert start == Settings(2, None, 64, True, 500, (16, 32), None)
    gpu = start_settings({**BASE, "instance_group": [{"kind": "KIND_GPU", "count": 3, "gpus": [1, 0]}]})
    assert (gpu.instances, gpu.gpus) == (3, (0, 1))
    plain = start_settings(
        {"max_batch_size": 0, "parameters": {"intra_op_thread_count": {"string_value": "4"}}}
    )
    assert (plain.instances, plain.threads, plain.batching) == (1, 4, False)


def test_space_contains_the_start_and_respects_the_models_limits() -> None:
    space = _space()
    assert space.settings(space.start) == start_settings(BASE)
    names = [d.name for d in space.dimensions]
    assert names == ["instances", "threads", "max_batch_size", "batching", "queue_delay_us", "preferred"]
    assert all(size >= 8 for size in space.dimensions[2].values)  # never below the warm-up batch
    with pytest.raises(TuneError, match="max_batch_size from 8"):
        _space(max_batch_sizes=[4, 16])
    unbatched = Space(Settings(1, None, 0, False), SpaceOptions(), 0, 1, 2)
    assert [d.name for d in unbatched.dimensions] == ["instances", "threads"]


def test_neighbours_one_step_or_every_other_value_of_one_setting() -> None:
    space = _space(
        instances=[1, 2, 4],
        threads=[None],
        max_batch_sizes=[64],
        batching=[True],
        queue_delays=[500],
        preferred=["start"],
    )
    assert space.neighbours(space.start) == [(0, 0, 0, 0, 0, 0), (2, 0, 0, 0, 0, 0)]  # 2 instances -> 1 or 4
    four = (2, 0, 0, 0, 0, 0)
    assert space.neighbours(four) == [(1, 0, 0, 0, 0, 0)]
    assert space.neighbours(four, every=True) == [(1, 0, 0, 0, 0, 0), (0, 0, 0, 0, 0, 0)]  # nearest first


def test_points_are_distinct_settings_and_inactive_dimensions_collapse() -> None:
    space = _space(
        instances=[1, 2], threads=[None], max_batch_sizes=[64], queue_delays=[0, 500], preferred=["none"]
    )
    settings = [space.settings(p) for p in space.points()]
    assert len(settings) == len(set(settings))
    off = [s for s in settings if not s.batching]
    assert off and all(s.queue_delay_us == 0 and s.preferred == () for s in off)
    # instances {1, 2} x (off, on at 0 us, on at 500 us) x preferred {start, none}: off collapses
    assert len(settings) == 2 * (1 + 2 * 2)
    assert space.settings(space.points()[0]) == start_settings(BASE)


def test_preferred_choices_follow_the_max_batch_size() -> None:
    space = _space(max_batch_sizes=[16], preferred=["max", "start", "4+8"], batching=[True], queue_delays=[0])
    found = {space.settings(p).preferred for p in space.points() if space.settings(p).max_batch_size == 16}
    assert found == {(16,), (16,), (4, 8)} | {(16,)}
    with pytest.raises(TuneError, match="--preferred"):
        _space(preferred=["big"])


def test_config_json_applies_settings_and_keeps_the_rest() -> None:
    settings = Settings(4, 1, 16, True, 100, (8, 16), None)
    config = json.loads(config_json(BASE, settings))
    assert config["max_batch_size"] == 16
    assert config["dynamic_batching"] == {
        "preferred_batch_size": [8, 16],
        "max_queue_delay_microseconds": 100,
    }
    assert config["instance_group"] == [{"count": 4, "kind": "KIND_CPU"}]
    assert config["parameters"]["intra_op_thread_count"] == {"string_value": "1"}
    assert config["parameters"]["execution_mode"] == {"string_value": "0"}
    assert config["model_warmup"][0]["batch_size"] == 8
    off = json.loads(config_json(BASE, Settings(1, None, 4, False, gpus=(0, 1))))
    assert "dynamic_batching" not in off and off["model_warmup"][0]["batch_size"] == 4
    assert off["instance_group"] == [{"count": 1, "kind": "KIND_GPU", "gpus": [0, 1]}]
    assert BASE["max_batch_size"] == 64  # the base is not changed


def test_spec_settings_reproduce_the_settings() -> None:
    assert spec_settings(Settings(2, None, 32, False)) == {
        "max_batch_size": 32,
        "instance_group": {"count": 2},
        "dynamic_batching": False,
    }
    tuned = spec_settings(Settings(1, 2, 8, True, 0, (8,), (0,)))
    assert tuned["dynamic_batching"] == {"max_queue_delay_microseconds": 0, "preferred_batch_size": [8]}
    assert tuned["instance_group"] == {"count": 1, "gpus": [0]}
    assert tuned["parameters"] == {"intra_op_thread_count": 2}


def test_a_torchscript_models_threads_use_the_pytorch_backends_own_parameter() -> None:
    torch_base = {
        **BASE,
        "platform": "pytorch_libtorch",
        "parameters": {"INTRA_OP_THREAD_COUNT": {"string_value": "3"}},
    }
    assert thread_parameter(torch_base) == "INTRA_OP_THREAD_COUNT"  # the native backend ignores lower case
    assert thread_parameter({"backend": "pytorch"}) == "INTRA_OP_THREAD_COUNT"
    assert thread_parameter(BASE) == "intra_op_thread_count"
    start = start_settings(torch_base)
    assert start.threads == 3
    loaded = json.loads(config_json(torch_base, dataclasses.replace(start, threads=1)))
    assert loaded["parameters"] == {"INTRA_OP_THREAD_COUNT": {"string_value": "1"}}
    tuned = spec_settings(Settings(1, 2, 8, True, 0, (8,)), thread_parameter(torch_base))
    assert tuned["parameters"] == {"INTRA_OP_THREAD_COUNT": 2}


# ---- the strategies on synthetic objectives ------------------------------------------------------------


def _synthetic(space: Space, noise: float = 0.0, seed: int = 0):
    """A smooth objective with one peak away from the start: 2 instances, batcher on, 100 us, max batch 32."""
    rng = random.Random(seed)

    def score(settings: Settings) -> Outcome:
        value = 1000.0
        value *= {1: 0.7, 2: 1.0, 4: 0.85}.get(settings.instances, 0.6)
        value *= 1.0 if settings.threads in (None, 1) else 0.9
        if settings.batching:
            value *= 1.3 * (1.0 - abs(math.log2(max(settings.max_batch_size, 1) / 32)) * 0.05)
            value *= 1.0 - settings.queue_delay_us / 10_000
        return Outcome(value * (1 + rng.uniform(-noise, noise)))

    return score


def _run(search, space: Space, score) -> tuple[int, float]:
    best = -math.inf
    trials = 0
    seen: dict[Settings, Outcome] = {}
    while (point := search.ask()) is not None:
        settings = space.settings(point)
        if settings not in seen:
            seen[settings] = score(settings)
            trials += 1
        search.tell(point, seen[settings])
        best = max(best, seen[settings].score)
    return trials, best


def test_grid_tries_every_distinct_settings_once() -> None:
    space = _space()
    grid = GridSearch(space)
    trials, best = _run(grid, space, _synthetic(space))
    assert trials == grid.size == len(space.points())
    assert best == max(_synthetic(space)(space.settings(p)).score for p in space.points())


@pytest.mark.parametrize("strategy", [GreedyClimb, HillClimb])
def test_climbs_reach_near_the_grids_best_in_far_fewer_trials(strategy: type) -> None:
    space = _space()
    grid_trials, grid_best = _run(GridSearch(space), space, _synthetic(space))
    climb = strategy(space)
    trials, best = _run(climb, space, _synthetic(space))
    assert best >= 0.95 * grid_best
    assert trials <= grid_trials / 3
    assert climb.moves >= 1


def test_quick_is_the_greedy_climb() -> None:
    assert isinstance(make_search("quick", _space()), GreedyClimb)
    assert isinstance(make_search("grid", _space()), GridSearch)


def test_quick_holds_up_under_measurement_noise() -> None:
    space = _space()
    _, grid_best = _run(GridSearch(space), space, _synthetic(space))
    reached = 0
    for seed in range(20):
        search = GreedyClimb(space)
        _run(search, space, _synthetic(space, noise=0.02, seed=seed))
        assert search.current_outcome is not None
        true = _synthetic(space)(space.settings(search.current)).score
        reached += true >= 0.95 * grid_best
    assert reached >= 18


@pytest.mark.parametrize("strategy", [GreedyClimb, HillClimb])
def test_climbs_stay_put_when_nothing_beats_the_start_by_the_margin(strategy: type) -> None:
    space = _space()
    flat = strategy(space, margin=0.05)
    trials, _ = _run(flat, space, lambda s: Outcome(1000.0 + (1.0 if s.instances == 1 else 0.0)))
    assert flat.moves == 0 and flat.current == space.start
    around = space.neighbours(
        space.start, every=strategy is GreedyClimb
    )  # greedy tries every value of a setting
    assert trials == 1 + len({space.settings(p) for p in around} - {space.settings(space.start)})


@pytest.mark.parametrize("strategy", [GreedyClimb, HillClimb])
def test_climbs_move_from_an_infeasible_start_to_a_feasible_point(strategy: type) -> None:
    space = _space()

    def score(settings: Settings) -> Outcome:
        if settings.instances == 2:
            return Outcome(2000.0, violation=0.5)  # fast but breaks a constraint
        return Outcome(1000.0)

    search = strategy(space)
    _run(search, space, score)
    assert search.current_outcome is not None and search.current_outcome.feasible


def test_failed_trials_rank_below_everything() -> None:
    assert Outcome(1.0).beats(Outcome(None))
    assert Outcome(1.0, violation=2.0).beats(Outcome(None))
    assert Outcome(1.0).beats(Outcome(5.0, violation=0.1))
    assert not Outcome(1.02).beats(Outcome(1.0), margin=0.03)
    assert Outcome(-1.0).beats(Outcome(-2.0), margin=0.03)  # latencies are negated


def test_random_search_starts_at_the_start_and_covers_the_space() -> None:
    space = _space(instances=[1, 2], threads=[None], queue_delays=[0])
    search = RandomSearch(space, seed=3)
    trials, _ = _run(search, space, _synthetic(space))
    assert trials == len(space.points())


# ---- the objective -------------------------------------------------------------------------------------


def _run_dict(users: int, throughput: float, p99: float, errors: float = 0.0) -> dict:
    return {
        "users": users,
        "throughput": throughput,
        "latency_ms": {"p99": p99, "p50": p99 / 2},
        "error_rate": errors,
    }


def test_objective_scores_the_geometric_mean_and_checks_bounds_at_every_level() -> None:
    objective = Objective.parse("throughput", max_p99_ms=10)
    runs = [_run_dict(1, 100.0, 2.0), _run_dict(16, 400.0, 12.0)]
    outcome = objective.outcome(runs, 2)
    assert outcome.score == pytest.approx(200.0)
    assert outcome.violation == pytest.approx(0.2)
    assert objective.constraints(runs)["p99_ms>10"] == {
        "value": 12.0,
        "passed": False,
        "excess": pytest.approx(0.2),
    }
    assert objective.outcome(runs[:1], 2).score is None  # a level missing: not scored
    latency = Objective.parse("p99")
    assert latency.outcome(runs, 2).score == pytest.approx(-math.sqrt(24.0))
    assert latency.value(latency.outcome(runs, 2)) == pytest.approx(math.sqrt(24.0))


def test_failed_requests_break_the_implicit_error_bound() -> None:
    objective = Objective.parse()
    assert objective.outcome([_run_dict(1, 100.0, 1.0, errors=0.01)], 1).violation > 0
    assert objective.describe([1, 8]) == "max throughput at 1, 8 users"


def test_constraint_options_are_the_load_tests_bounds() -> None:
    objective = Objective.parse(
        "p50", max_p99_ms=20, min_throughput=500, max_memory="1GiB", constraints=["cpu_utilization>0.9"]
    )
    texts = [b.text for b in objective.bounds]
    assert texts == [
        "p99_ms>20",
        "throughput<500",
        f"memory_bytes>{2**30}",
        "cpu_utilization>0.9",
        "error_rate>0",
    ]
    assert parse_bound("p99_ms>20") in objective.bounds
    assert "p99_ms <= 20" in objective.describe([1])
    with pytest.raises(TuneError, match="baseline"):
        Objective.parse(constraints=["throughput_change_pct<-5"])
    with pytest.raises(TuneError, match="--objective"):
        Objective.parse("speed")


def test_parse_bytes() -> None:
    assert parse_bytes("512MiB") == 512 * 2**20
    assert parse_bytes("2GB") == 2 * 10**9
    assert parse_bytes("1000") == 1000
    with pytest.raises(TuneError, match="--max-memory"):
        parse_bytes("lots")


def test_pareto_front() -> None:
    points = [(100.0, 5.0), (200.0, 8.0), (150.0, 9.0), (90.0, 4.0), (200.0, 7.0)]
    assert pareto_front(points) == [0, 3, 4]


def test_settings_round_trip_through_tune_json() -> None:
    for settings in (Settings(2, None, 64, True, 500, (16, 32)), Settings(1, 2, 8, False, gpus=(0, 1))):
        assert Settings.from_dict(json.loads(json.dumps(settings.as_dict()))) == settings


# ---- no level traded away: the start config's figures per level, their noise, the final call -------------


def _level(users: int, throughput: float, spread_pct: float = 1.0, p50: float | None = None) -> dict:
    """One level of a trial as tune.json keeps it (condensed): the figures by name and the stability."""
    p50 = p50 if p50 is not None else users / throughput * 1000
    return {
        "users": users,
        "throughput": throughput,
        "p50_ms": p50,
        "p99_ms": 2 * p50,
        "avg_batch_size": 1.0,
        "stability": {"spread_pct": spread_pct},
    }


def _runs(*throughputs: float) -> list[dict]:
    """A trial's load-test runs at 1 and 16 users, as the harness reports them."""
    return [_run_dict(u, t, p99=u / t * 2000) for u, t in zip((1, 16), throughputs, strict=True)]


START = [[_level(1, 500.0), _level(16, 2000.0)], [_level(1, 510.0), _level(16, 1980.0)]]


def test_noise_is_the_start_configs_own_spread_and_never_below_the_floor() -> None:
    # Between the two measurements: 2% at 1 user, 1% at 16: the 3% floor holds.
    assert level_noise(START, "throughput") == pytest.approx([0.03, 0.03])
    # Measurements 10% apart are that noisy; one measurement's windows apart is no noise of the mean.
    apart = [[_level(1, 500.0), _level(16, 2000.0, spread_pct=7.0)], [_level(1, 550.0), _level(16, 2000.0)]]
    assert level_noise(apart, "throughput") == pytest.approx([50 / 525, 0.03])
    # More measurements: the spread of a difference of two, sqrt(2) * stdev / mean (not a widening range).
    third = [*apart, [_level(1, 450.0), _level(16, 2200.0)]]
    assert level_noise(third, "throughput") == pytest.approx(
        [math.sqrt(2) * 50 / 500, math.sqrt(2) * 115.47 / 2066.67], rel=1e-4
    )


def test_a_candidate_worse_than_the_start_at_one_level_is_not_eligible() -> None:
    # The case: a big gain at 1 user, a 25% loss at 16; its geometric mean is the highest.
    objective = Objective.parse("throughput")
    guard = LevelGuard.from_start(objective, [1, 16], START)
    assert guard is not None and guard.reference == pytest.approx((505.0, 1990.0))
    trader, even, same = _runs(1100.0, 1500.0), _runs(600.0, 2010.0), _runs(505.0, 1990.0)
    assert objective.outcome(trader, 2).key() > objective.outcome(even, 2).key()  # the mean alone: trader

    outcomes = {
        name: objective.outcome(runs, 2, guard) for name, runs in [("trader", trader), ("even", even)]
    }
    outcomes["start"] = objective.outcome(same, 2)
    assert not outcomes["trader"].feasible and outcomes["trader"].violation == pytest.approx(
        (1990 - 1500) / 1990 - 0.03
    )
    assert outcomes["even"].feasible
    assert max(outcomes, key=lambda n: outcomes[n].key()) == "even"
    verdicts = [c.verdict for c in guard.compare([1100.0, 1500.0])]
    assert verdicts == ["better", "worse"]
    # Worse by less than the noise is the same: still eligible.
    assert objective.outcome(_runs(700.0, 1960.0), 2, guard).feasible
    # Only the trader and the start: the start stays.
    assert max(["trader", "start"], key=lambda n: outcomes[n].key()) == "start"


def test_latency_objectives_hold_every_level_too() -> None:
    objective = Objective.parse("p50")
    start = [[_level(1, 500.0, p50=2.0), _level(16, 2000.0, p50=8.0)]] * 2
    guard = LevelGuard.from_start(objective, [1, 16], start)
    assert guard is not None
    faster_at_one = [
        {"users": 1, "throughput": 900.0, "latency_ms": {"p50": 1.0}, "error_rate": 0.0},
        {"users": 16, "throughput": 1500.0, "latency_ms": {"p50": 10.0}, "error_rate": 0.0},
    ]
    assert objective.outcome(faster_at_one, 2).feasible
    assert not objective.outcome(faster_at_one, 2, guard).feasible
    [one, sixteen] = guard.compare([1.0, 10.0])
    assert (one.verdict, sixteen.verdict) == ("better", "worse")
    assert sixteen.describe("p50_ms") == "p50_ms at 16 users +25.0% (worse beyond the 3.0% noise)"


def test_the_final_call_wants_no_level_worse_and_one_better() -> None:
    objective = Objective.parse("throughput")
    guard = LevelGuard.from_start(objective, [1, 16], START)
    assert guard is not None
    again = guard.with_reference([_level(1, 500.0), _level(16, 2000.0)])
    start = objective.outcome(_runs(500.0, 2000.0), 2)

    def call(one: float, sixteen: float, trade: bool = False) -> tuple[bool, str]:
        return judge(again.compare([one, sixteen]), objective.outcome(_runs(one, sixteen), 2), start, trade)

    assert call(800.0, 2010.0) == (True, "it beat the start config again, and is worse at no level")
    confirmed, why = call(1100.0, 1500.0)
    assert not confirmed and "worse than the start config at 16 users" in why
    assert call(1100.0, 1500.0, trade=True)[0]  # --trade-levels: the mean decides
    confirmed, why = call(510.0, 2020.0)  # better, but within the noise everywhere
    assert not confirmed and "better than the start config at no level" in why
    assert not call(450.0, 1900.0, trade=True)[0]  # worse on the mean: never
    broken = Objective.parse("throughput", max_p99_ms=0.5)
    assert not judge(again.compare([800.0, 2010.0]), broken.outcome(_runs(800.0, 2010.0), 2), start)[0]


def test_the_quick_climb_does_not_move_to_a_candidate_that_trades_a_level() -> None:
    # One instance: 1 user much faster, 16 users much slower; the batcher off: a little better at both.
    space = _space(
        instances=[1, 2], threads=[None], max_batch_sizes=[64], queue_delays=[500], preferred=["start"]
    )
    objective = Objective.parse("throughput")
    guard = LevelGuard.from_start(objective, [1, 16], START)

    def figures(settings: Settings) -> list[dict]:
        one, sixteen = 505.0, 1990.0
        if settings.instances == 1:
            one, sixteen = one * 2.5, sixteen * 0.7
        if not settings.batching:
            one, sixteen = one * 1.2, sixteen * 1.02
        return _runs(one, sixteen)

    for hold, expected in ((guard, (2, False)), (None, (1, False))):
        climb = GreedyClimb(space)
        _run(climb, space, lambda s, hold=hold: objective.outcome(figures(s), 2, hold))
        crowned = space.settings(climb.current)
        assert (crowned.instances, crowned.batching) == expected


def test_the_report_shows_the_winner_against_the_start_level_by_level() -> None:
    objective = Objective.parse("throughput")
    guard = LevelGuard.from_start(objective, [1, 16], START)
    assert guard is not None
    changes = guard.compare([800.0, 2010.0])
    trial = {"number": 3, "role": "search", "describe": "x", "status": "measured", "objective": 1.0,
             "levels": [_level(1, 800.0), _level(16, 2010.0)], "constraints": {}, "seconds": 1.0,
             "vs_start": [c.as_dict() for c in changes]}  # fmt: skip
    start = {**trial, "number": 0, "role": "start", "levels": START[0], "vs_start": []}
    report = {
        "objective": {"text": "max throughput at 1, 16 users", "over_levels": "geometric mean",
                      "per_level": "no level worse than the start config beyond the measured noise"},
        "levels": [1, 16], "steadiness": {}, "machine": {"cpus": 2}, "notes": [],
        "models": {"m": {"trials": [start, trial], "winner": 3, "best": trial, "verdict": "trial 3 confirmed",
                         "vs_start": {"trial": 3, "metric": "throughput", "levels": [c.as_dict() for c in changes]},
                         "noise": {"how": "spread", "levels": [{"users": 1, "noise_pct": 3.0},
                                                                 {"users": 16, "noise_pct": 3.0}],
                                   "levels_held": True}}},
    }  # fmt: skip
    html = render_html(report)
    assert "Trial 3 against the start config, level by level" in html
    assert "+58.4%" in html and "+1.0%" in html  # 505 -> 800 at 1 user, 1990 -> 2010 at 16
    assert "better</td>" in html and "same</td>" in html
    assert "no level worse than the start config beyond the measured noise" in html
    assert changes[1].describe("throughput") == "throughput at 16 users +1.0% (within the 3.0% noise)"


def test_a_cached_model_is_measured_without_its_cache() -> None:
    cached = {**BASE, "response_cache": {"enable": True}}
    off = without_response_cache(cached)
    assert off is not None and off["response_cache"] == {"enable": False}
    assert cached["response_cache"] == {"enable": True}  # the model's own config is left as it is
    assert json.loads(config_json(off, start_settings(cached)))["response_cache"] == {"enable": False}
    assert without_response_cache(BASE) is None
    assert without_response_cache({**BASE, "response_cache": {"enable": False}}) is None


def test_only_scratch_copies_of_tunes_that_are_gone_are_cleared(tmp_path: Path) -> None:
    from generator.tune.scratch import OWNER, clear_stale_scratch, make_scratch, owner_alive

    mine = make_scratch(tmp_path)
    assert mine.name.startswith("tritongen-tune-") and owner_alive(mine) is True
    ended = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead = tmp_path / "tritongen-tune-dead"
    dead.mkdir()
    (dead / OWNER).write_text(json.dumps({"pid": int(ended.stdout), "started": 1.0}))
    (dead / "model_repository").mkdir()
    reused = tmp_path / "tritongen-tune-reused"  # a live process with the pid, started at another time
    reused.mkdir()
    (reused / OWNER).write_text(json.dumps({"pid": os.getpid(), "started": 1.0}))
    unknown = tmp_path / "tritongen-tune-unknown"  # no record yet (or an older tritongen's): left alone
    unknown.mkdir()
    other = tmp_path / "something-else"
    other.mkdir()
    (other / OWNER).write_text(json.dumps({"pid": int(ended.stdout), "started": 1.0}))

    assert clear_stale_scratch(tmp_path) == [dead, reused]
    assert mine.is_dir() and unknown.is_dir() and other.is_dir()
    assert not dead.exists() and not reused.exists()


def test_the_quick_climb_looks_past_a_candidate_that_trades_a_level() -> None:
    # The batcher off: far faster at 1 user but slower at 16 (traded away); with 1 thread as well it keeps
    # the gain at 1 user and is a little faster at 16. Every other neighbour of the start is worse.
    space = _space(
        instances=[2], threads=[None, 1], max_batch_sizes=[64], queue_delays=[500], preferred=["start"]
    )
    objective = Objective.parse("throughput")
    guard = LevelGuard.from_start(objective, [1, 16], START)

    def figures(settings: Settings) -> list[dict]:
        one, sixteen = 505.0, 1990.0
        if not settings.batching:
            one, sixteen = one * 2.0, sixteen * (1.05 if settings.threads == 1 else 0.7)
        elif settings.threads == 1:
            one, sixteen = one * 0.9, sixteen * 0.9
        return _runs(one, sixteen)

    climb = GreedyClimb(space)
    trials, _ = _run(climb, space, lambda s: objective.outcome(figures(s), 2, guard))
    crowned = space.settings(climb.current)
    assert (crowned.batching, crowned.threads) == (False, 1)
    assert climb.current_outcome is not None and climb.current_outcome.feasible
    assert trials == len(space.points())  # this space is small: every point was worth a look


SEQUENCE_BASE = {
    "name": "ranker",
    "max_batch_size": 8,
    "instance_group": [{"count": 1, "kind": "KIND_CPU"}],
    "sequence_batching": {
        "max_sequence_idle_microseconds": "5000000",
        "oldest": {
            "max_candidate_sequences": 4,
            "preferred_batch_size": [4],
            "max_queue_delay_microseconds": "100",
        },
        "state": [{"input_name": "h_in", "output_name": "h_out", "data_type": "TYPE_FP32", "dims": ["16"]}],
    },
}


@pytest.mark.parametrize("strategy", ["direct", "oldest"])
def test_a_stateful_model_keeps_its_sequence_batcher_and_tunes_its_delay(strategy: str) -> None:
    """No dynamic batcher is ever tried on a stateful model (Triton refuses both): the sequence batcher's
    queue delay (and Oldest's preferred sizes) vary instead, and every candidate is a config Triton parses
    and a tuned entry the spec takes."""
    from google.protobuf import json_format
    from tritonclient.grpc import model_config_pb2

    from generator.spec.models import Overlay, parse_spec

    base = json.loads(json.dumps(SEQUENCE_BASE))
    if strategy == "direct":
        base["sequence_batching"]["direct"] = {"max_queue_delay_microseconds": "100"}
        del base["sequence_batching"]["oldest"]
    start = start_settings(base)
    assert (start.sequence, start.batching, start.queue_delay_us) == (strategy, True, 100)
    space = Space(start, SpaceOptions(), batch_limit=2**16, smallest_batch=1, cpus=2)
    names = [d.name for d in space.dimensions]
    assert "batching" not in names and "queue_delay_us" in names
    assert ("preferred" in names) == (strategy == "oldest")
    entry = {
        "name": "ranker",
        "framework": "onnx",
        "source": "m.onnx",
        "max_batch_size": 8,
        "sequence_batching": {
            "strategy": strategy,
            "max_queue_delay_microseconds": 100,
            "state": [{"input_name": "h_in", "output_name": "h_out", "dtype": "FP32", "dims": [16]}],
        },
    }
    for point in space.points():
        settings = space.settings(point)
        config = json.loads(config_json(base, settings))
        assert "dynamic_batching" not in config
        assert (
            config["sequence_batching"][strategy]["max_queue_delay_microseconds"] == settings.queue_delay_us
        )
        json_format.ParseDict(config, model_config_pb2.ModelConfig())  # Triton's schema takes it
        tuned = spec_settings(settings)
        assert "dynamic_batching" not in tuned
        spec = parse_spec({"models": [entry]}, overlay=Overlay({"ranker": tuned}, "tuned.yaml"))
        assert spec.models[0].sequence_batching.max_queue_delay_microseconds == settings.queue_delay_us
    assert Settings.from_dict(start.as_dict()) == start
