"""``--fail-if`` bounds: parsed safely (no eval), unknown metrics named with the valid ones, checked per run."""

from __future__ import annotations

import pytest

from generator.core.errors import LoadTestError
from generator.loadtest.report.figures import FIGURE_NAMES
from generator.loadtest.report.gate import check_bounds, parse_bound, valid_metrics


def run(users: int = 8, p99: float | None = 40.0, error_rate: float = 0.0, **extra: object) -> dict:
    return {
        "users": users,
        "throughput": 1000.0,
        "error_rate": error_rate,
        "latency_ms": {"p50": 10.0, "p90": 20.0, "p95": 30.0, "p99": p99, "max": 80.0, "mean": 12.0},
        "server": {"queue_us": 100.0, "avg_batch_size": 2.0},
        "gpu_utilization": None,
        **extra,
    }


@pytest.mark.parametrize(
    ("text", "metric", "op", "threshold"),
    [
        ("p99_ms>50", "p99_ms", ">", 50.0),
        ("  error_rate >= 0.001 ", "error_rate", ">=", 0.001),
        ("throughput<1.5e3", "throughput", "<", 1500.0),
        ("queue_us<=.5", "queue_us", "<=", 0.5),
        ("throughput_change_pct<-10", "throughput_change_pct", "<", -10.0),
    ],
)
def test_parses_metric_operator_number(text: str, metric: str, op: str, threshold: float) -> None:
    bound = parse_bound(text)
    assert (bound.metric, bound.op, bound.threshold) == (metric, op, threshold)
    assert bound.on_change == metric.endswith("_change_pct")


@pytest.mark.parametrize(
    "text",
    [
        "p99_ms",
        "p99_ms>",
        ">50",
        "p99_ms=50",
        "p99_ms==50",
        "p99_ms>50ms",
        "__import__('os')>1",
        "p99_ms>1 or 1",
        "",
    ],
)
def test_malformed_expressions_are_refused(text: str) -> None:
    with pytest.raises(LoadTestError, match="METRIC OP NUMBER"):
        parse_bound(text)


def test_unknown_metric_lists_the_valid_ones() -> None:
    with pytest.raises(LoadTestError) as caught:
        parse_bound("p98_ms>5")
    message = str(caught.value)
    assert "unknown metric 'p98_ms'" in message
    assert all(name in message for name in FIGURE_NAMES)
    assert "\n" not in message


def test_every_figure_and_its_change_is_a_valid_metric() -> None:
    assert set(valid_metrics()) == set(FIGURE_NAMES) | {f"{n}_change_pct" for n in FIGURE_NAMES}


def test_breach_names_the_bound_value_and_load_level() -> None:
    runs = [run(users=1, p99=20.0), run(users=8, p99=61.25)]
    breaches = check_bounds([parse_bound("p99_ms>50"), parse_bound("error_rate>0.001")], runs)
    assert breaches == ["p99_ms>50 breached: p99_ms = 61.25 at 8 users"]


def test_bounds_within_limits_pass() -> None:
    assert check_bounds([parse_bound("p99_ms>50"), parse_bound("avg_batch_size<1")], [run()]) == []


def test_a_bound_on_an_unmeasured_figure_fails_rather_than_passing_silently() -> None:
    breaches = check_bounds([parse_bound("gpu_utilization>0.9")], [run()])
    assert breaches == ["gpu_utilization>0.9 cannot be checked: it was not measured"]


def test_change_bounds_use_the_baseline_comparison() -> None:
    runs = [run(users=4), run(users=8)]
    comparisons = [
        {"users": 4, "figures": {"throughput": {"change_pct": -3.0}}},
        {"users": 8, "figures": {"throughput": {"change_pct": -12.5}}},
    ]
    breaches = check_bounds([parse_bound("throughput_change_pct<-10")], runs, comparisons)
    assert breaches == ["throughput_change_pct<-10 breached: throughput_change_pct = -12.5 at 8 users"]
    unchecked = check_bounds([parse_bound("throughput_change_pct<-10")], runs, [None, None])
    assert unchecked == ["throughput_change_pct<-10 cannot be checked: no run has a baseline to compare with"]
