"""Comparison with a baseline report: matched by load level, change as (new - old) / old, better per figure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from generator.core.errors import LoadTestError
from generator.loadtest.report.baseline import compare, load_baseline, mismatches


def run(users: float, throughput: float, p99: float, errors: float = 0.0, batch: float | None = 4.0) -> dict:
    return {
        "users": users,
        "throughput": throughput,
        "error_rate": errors,
        "latency_ms": {"p50": p99 / 2, "p99": p99},
        "server": {"avg_batch_size": batch, "queue_us": None},
    }


def test_changes_and_verdicts_follow_each_figures_better_direction() -> None:
    baseline = {"runs": [run(8, 1000.0, 20.0)]}
    [comparison] = compare([run(8, 1100.0, 25.0)], baseline)
    assert comparison is not None and comparison["users"] == 8
    throughput = comparison["figures"]["throughput"]
    assert throughput == {"old": 1000.0, "new": 1100.0, "change_pct": pytest.approx(10.0), "better": "higher",
                          "verdict": "better"}  # fmt: skip
    p99 = comparison["figures"]["p99_ms"]
    assert p99["change_pct"] == pytest.approx(25.0) and p99["better"] == "lower" and p99["verdict"] == "worse"
    assert comparison["figures"]["avg_batch_size"]["verdict"] == "same"


def test_zero_baseline_has_no_percentage_and_unmeasured_figures_are_skipped() -> None:
    [comparison] = compare([run(2, 500.0, 5.0, errors=0.01)], {"runs": [run(2, 500.0, 5.0, errors=0.0)]})
    assert comparison is not None
    errors = comparison["figures"]["error_rate"]
    assert errors["change_pct"] is None and errors["verdict"] == "worse"
    assert "queue_us" not in comparison["figures"]


def test_runs_are_matched_by_users_and_unmatched_ones_get_none() -> None:
    baseline = {"runs": [run(1, 100.0, 2.0), run(4, 400.0, 3.0)]}
    result = compare([run(4, 200.0, 6.0), run(16, 900.0, 9.0)], baseline)
    assert result[0] is not None and result[0]["figures"]["throughput"]["change_pct"] == pytest.approx(-50.0)
    assert result[1] is None


def test_load_baseline_accepts_a_report_or_its_directory(tmp_path: Path) -> None:
    (tmp_path / "report.json").write_text(json.dumps({"protocol": "http", "runs": [run(1, 10.0, 1.0)]}))
    assert load_baseline(tmp_path / "report.json")["runs"][0]["users"] == 1
    assert load_baseline(tmp_path)["path"] == str(tmp_path / "report.json")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "does not exist"),
        ("{not json", "not a readable JSON file"),
        ('{"runs": [{"x": 1}]}', "not a tritongen"),
    ],
)
def test_bad_baselines_are_clear_errors(tmp_path: Path, content: str | None, expected: str) -> None:
    path = tmp_path / "old.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(LoadTestError, match=expected):
        load_baseline(path)


def test_mismatches_note_how_the_runs_differ() -> None:
    notes = mismatches(
        {"protocol": "grpc", "batch_size": 8}, {"protocol": "http", "batch_size": 8, "runs": []}
    )
    assert notes == ["the baseline's protocol was 'http', this run's is 'grpc'"]
