"""Report writing, hermetic: report.json round-trips, the CSV has one row per run, the HTML embeds the plots."""

from __future__ import annotations

import base64
import csv
import json
import re
from pathlib import Path

import pytest

from generator.core.errors import LoadTestError
from generator.loadtest.report.baseline import compare
from generator.loadtest.report.figures import FIGURE_NAMES
from generator.loadtest.report.write import CSV_COLUMNS, summary_table, write_report


def make_run(users: int, throughput: float, p99: float) -> dict:
    return {
        "users": users,
        "window_s": 3.0,
        "complete": True,
        "requests": int(throughput * 3),
        "failures": 0,
        "inferences": int(throughput * 3),
        "throughput": throughput,
        "requests_per_s": throughput,
        "error_rate": 0.0,
        "latency_ms": {
            "p50": p99 / 3,
            "p90": p99 / 2,
            "p95": p99 / 1.5,
            "p99": p99,
            "max": p99 * 2,
            "mean": p99 / 3,
        },
        "server": {
            "queue_us": 300.0,
            "compute_input_us": 20.0,
            "compute_infer_us": 400.0,
            "compute_output_us": 50.0,
            "avg_batch_size": users / 2,
            "cache_hit_rate": 0.0,
        },
        "cpu_utilization": 0.4,
        "memory_bytes": 300 * 2**20,
        "gpu_utilization": None,
        "gpu_memory_bytes": None,
        "cost_per_1k": 0.0004,
        "errors": {"InferenceServerException: overloaded": 2} if users == 8 else {},
        "per_model": {},
        "latency_histogram": {"edges_ms": [0.5, 1.0, 2.0, 4.0], "counts": [10, 30, 5]},
    }


@pytest.fixture
def report() -> dict:
    runs = [make_run(1, 800.0, 2.0), make_run(8, 3200.0, 6.0)]
    baseline = {"runs": [make_run(8, 3000.0, 5.0)]}
    comparisons = compare(runs, baseline)
    for run, comparison in zip(runs, comparisons, strict=True):
        run["baseline"] = comparison
    return {
        "tool": "tritongen test",
        "created": "2026-01-01T00:00:00+00:00",
        "target": "http://127.0.0.1:8000",
        "protocol": "http",
        "models": [{"name": "digits_cnn", "weight": 1.0}],
        "batch_size": 1,
        "shape": "step",
        "levels": [1, 8],
        "duration_s": 3.0,
        "warmup_s": 1.0,
        "workers": 0,
        "data": None,
        "seed": 0,
        "price_per_hour": 1.2,
        "server": {"name": "triton", "version": "2.51.0"},
        "totals": {"requests": 12000, "failures": 2},
        "aborted": None,
        "notes": ["the client ran on the same machine as the server <2 CPUs>"],
        "baseline": {"path": "old/report.json", "notes": []},
        "gate": {"bounds": ["p99_ms>50"], "breaches": [], "passed": True},
        "runs": runs,
    }


def test_writes_json_csv_and_html(tmp_path: Path, report: dict) -> None:
    files = write_report(report, tmp_path / "out")
    assert {k: p.name for k, p in files.items()} == {
        "json": "report.json",
        "csv": "report.csv",
        "html": "report.html",
    }
    assert json.loads(files["json"].read_text()) == report
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "report.csv",
        "report.html",
        "report.json",
    ]


def test_csv_has_a_row_per_run_with_every_figure_and_its_change(tmp_path: Path, report: dict) -> None:
    rows = list(csv.DictReader(write_report(report, tmp_path)["csv"].open()))
    assert len(rows) == 2
    assert list(rows[0])[: len(CSV_COLUMNS)] == list(CSV_COLUMNS)
    assert set(FIGURE_NAMES) <= set(rows[0])
    assert rows[1]["users"] == "8" and float(rows[1]["p99_ms"]) == 6.0 and rows[1]["gpu_utilization"] == ""
    assert rows[0]["throughput_change_pct"] == "" and float(
        rows[1]["throughput_change_pct"]
    ) == pytest.approx(200 / 3000 * 100)


def test_html_embeds_three_plots_and_the_baseline_table(tmp_path: Path, report: dict) -> None:
    html = write_report(report, tmp_path)["html"].read_text()
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(images) == 3
    assert all(base64.b64decode(image).startswith(b"\x89PNG") for image in images)
    assert "Gate passed" in html and "Against the baseline" in html and "overloaded" in html
    assert "&lt;2 CPUs&gt;" in html  # text is escaped
    assert "3,200" in html and "+6.7%" in html


def test_html_shows_a_failed_gate_and_a_cut_short_run(tmp_path: Path, report: dict) -> None:
    report["aborted"] = "the Triton server process exited during the run"
    report["gate"] = {
        "bounds": ["p99_ms>5"],
        "breaches": ["p99_ms>5 breached: p99_ms = 6 at 8 users"],
        "passed": False,
    }
    report["runs"][1]["complete"] = False
    html = write_report(report, tmp_path)["html"].read_text()
    assert "Run cut short" in html and "p99_ms&gt;5 breached" in html and "(cut short)" in html


def test_a_report_without_successes_still_renders(tmp_path: Path, report: dict) -> None:
    for run in report["runs"]:
        run["latency_ms"] = dict.fromkeys(run["latency_ms"])
        run["server"] = dict.fromkeys(run["server"])
        run["latency_histogram"] = {"edges_ms": [], "counts": []}
    html = write_report(report, tmp_path)["html"].read_text()
    assert "data:image/png" not in html and "–" in html


def test_summary_table_shows_changes_against_the_baseline(report: dict) -> None:
    headers, rows = summary_table(report)
    assert headers[:3] == ["users", "infer/s", "p50 ms"] and "cost/1k" in headers
    assert rows[1][0] == "8" and rows[1][1] == "3,200 (+6.7%)"


def test_unwritable_directory_is_a_clear_error(tmp_path: Path, report: dict) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(LoadTestError, match="pick another"):
        write_report(report, blocker / "out")
