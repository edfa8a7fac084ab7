"""Write a load-test report: ``report.json``, ``report.csv`` and ``report.html`` (plots embedded as PNG).

The report is a plain dict (metadata plus ``runs``, one per load level; see :mod:`generator.loadtest.run`),
so an earlier ``report.json`` can be re-rendered or used as a baseline. Python formats every value; the
Jinja template (``report.html.j2``, shipped in this package) only lays them out. Each file is written to a
temporary name and renamed, so a reader never sees half a report.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from generator.core.errors import LoadTestError
from generator.loadtest.report.figures import FIGURE_NAMES, FIGURES, STEP_FIGURES, figure_value

__all__ = [
    "CSV_COLUMNS",
    "format_value",
    "render_html",
    "steps_table",
    "summary_table",
    "write_report",
    "write_text",
]

TEMPLATE = "report.html.j2"
CSV_COLUMNS = ("users", "window_s", "complete", "requests", "failures", "inferences", *FIGURE_NAMES)


def write_report(report: dict[str, Any], out: Path) -> dict[str, Path]:
    """Write the three report files into ``out`` (created if needed).

    Returns:
        ``{"json": ..., "csv": ..., "html": ...}``.

    Raises:
        LoadTestError: The directory cannot be created or written.
    """
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise LoadTestError(
            f"cannot create the report directory {out} ({error}); pick another with --out"
        ) from error
    files = {"json": out / "report.json", "csv": out / "report.csv", "html": out / "report.html"}
    write_text(files["json"], json.dumps(report, indent=2, sort_keys=False, default=_jsonable) + "\n")
    write_text(files["csv"], _csv(report))
    write_text(files["html"], render_html(report))
    return files


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def write_text(path: Path, text: str) -> None:
    """Write a file atomically (a temporary file beside it, then a rename)."""
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as stream:
            stream.write(text)
        os.replace(temporary, path)
    except OSError as error:
        raise LoadTestError(f"cannot write {path} ({error}); pick another directory with --out") from error


def _csv(report: dict[str, Any]) -> str:
    runs = report.get("runs", [])
    with_baseline = any(run.get("baseline") for run in runs)
    columns = list(CSV_COLUMNS)
    if with_baseline:
        columns += [f"{name}_change_pct" for name in FIGURE_NAMES]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for run in runs:
        row: list[Any] = [run.get(key) for key in CSV_COLUMNS[:6]]
        row += [figure_value(run, name) for name in FIGURE_NAMES]
        if with_baseline:
            figures = (run.get("baseline") or {}).get("figures", {})
            row += [(figures.get(name) or {}).get("change_pct") for name in FIGURE_NAMES]
        writer.writerow(["" if value is None else value for value in row])
    return buffer.getvalue()


def render_html(report: dict[str, Any]) -> str:
    """The HTML page of a report, with its plots embedded."""
    import jinja2

    from generator.loadtest.report import plots

    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(Path(__file__).resolve().parent)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    runs = report.get("runs", [])
    context = {
        "title": _title(report),
        "facts": _facts(report),
        "verdict": _verdict(report),
        "notes": list(report.get("notes", [])) + list((report.get("baseline") or {}).get("notes", [])),
        "columns": _columns_shown(runs),
        "rows": [_row(run, _columns_shown(runs)) for run in runs],
        "comparisons": _comparisons(runs),
        "per_model": _per_model(report, runs),
        "steps": _step_rows(runs),
        "step_columns": [_STEP_LABELS[f.name] for f in STEP_FIGURES],
        "errors": [
            (_users(run), message, count) for run in runs for message, count in run.get("errors", {}).items()
        ],
        "plots": [
            (title, image)
            for title, image in (
                ("Latency against throughput", plots.latency_vs_throughput(runs)),
                ("Server-side breakdown per load level", plots.server_breakdown(runs)),
                ("Latency distribution", plots.latency_histogram(runs)),
            )
            if image
        ],
    }
    return environment.get_template(TEMPLATE).render(**context)


_COLUMNS_SHOWN = (
    ("throughput", "throughput (infer/s)"),
    ("requests_per_s", "requests/s"),
    ("p50_ms", "p50 ms"),
    ("p90_ms", "p90 ms"),
    ("p95_ms", "p95 ms"),
    ("p99_ms", "p99 ms"),
    ("max_ms", "max ms"),
    ("error_rate", "errors"),
    ("queue_us", "queue us"),
    ("compute_input_us", "input us"),
    ("compute_infer_us", "infer us"),
    ("compute_output_us", "output us"),
    ("avg_batch_size", "avg batch"),
    ("cache_hit_rate", "cache hits"),
    ("cpu_utilization", "server CPU"),
    ("memory_bytes", "server memory"),
    ("gpu_utilization", "GPU"),
    ("gpu_memory_bytes", "GPU memory"),
    ("cost_per_1k", "cost / 1k inf."),
)

_SEQUENCE_COLUMNS = (
    ("sequences_per_s", "sequences/s"),
    ("seq_p50_ms", "seq p50 ms"),
    ("seq_p90_ms", "seq p90 ms"),
    ("seq_p99_ms", "seq p99 ms"),
    ("seq_error_rate", "failed seq"),
)
_STREAM_COLUMNS = (
    ("output_tokens_per_s", "tokens/s"),
    ("ttft_p50_ms", "TTFT p50 ms"),
    ("ttft_p99_ms", "TTFT p99 ms"),
    ("itl_p50_ms", "ITL p50 ms"),
    ("itl_p99_ms", "ITL p99 ms"),
)


def _mode_columns(runs: list[dict[str, Any]]) -> tuple[tuple[str, str], ...]:
    """The sequence and streaming figures' columns, where a run has them."""
    columns: tuple[tuple[str, str], ...] = ()
    if any(run.get("sequences") for run in runs):
        columns += _SEQUENCE_COLUMNS
    if any(run.get("stream") for run in runs):
        columns += _STREAM_COLUMNS
    return columns


def _columns_shown(runs: list[dict[str, Any]]) -> tuple[tuple[str, str], ...]:
    return _COLUMNS_SHOWN[:8] + _mode_columns(runs) + _COLUMNS_SHOWN[8:]


def format_value(name: str, value: float | None) -> str:
    """A figure as shown to a reader ("–" when not measured)."""
    if value is None:
        return "–"
    if name in ("requests", "executions", "inferences"):
        return f"{int(value):,}"
    if name in (
        "error_rate",
        "seq_error_rate",
        "cpu_utilization",
        "gpu_utilization",
        "cache_hit_rate",
        "share",
    ):
        return f"{value * 100:.2f}%" if name.endswith("error_rate") else f"{value * 100:.0f}%"
    if name.endswith("_bytes"):
        return f"{value / 2**20:,.1f} MiB"
    if name.endswith("_ms"):
        return f"{value:,.2f}"
    if name.endswith("_us"):
        return f"{value:,.0f}"
    if name in ("throughput", "requests_per_s", "output_tokens_per_s"):
        return f"{value:,.0f}"
    if name == "sequences_per_s":
        return f"{value:,.1f}"
    if name == "cost_per_1k":
        return np.format_float_positional(value, precision=4, unique=False, fractional=False, trim="-")
    return f"{value:,.2f}"


_SUMMARY = (
    ("throughput", "infer/s"),
    ("p50_ms", "p50 ms"),
    ("p90_ms", "p90 ms"),
    ("p99_ms", "p99 ms"),
    ("error_rate", "errors"),
    ("queue_us", "queue us"),
    ("compute_infer_us", "infer us"),
    ("avg_batch_size", "batch"),
    ("cpu_utilization", "server CPU"),
    ("cost_per_1k", "cost/1k"),
)


_FULL_ONLY = ("seq_p90_ms", "seq_error_rate", "itl_p99_ms")  # in report.html, not in the terminal's table
_CHANGES_SHOWN = (
    "throughput",
    "p99_ms",
    "sequences_per_s",
    "seq_p99_ms",
    "output_tokens_per_s",
    "ttft_p99_ms",
)


def summary_table(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The report's key figures as a table for a terminal: headers and one row per run.

    With a baseline, throughput and p99 carry their change, e.g. ``1,234 (+5.1%)``. A test of a stateful
    model adds sequences per second and sequence latency; one of a decoupled model, output tokens per
    second, time to first token and inter-token latency.
    """
    columns = _SUMMARY[:5] + tuple(c for c in _mode_columns(report.get("runs", [])) if c[0] not in _FULL_ONLY)
    columns += _SUMMARY[5:]
    names = [name for name, _ in columns]
    if report.get("price_per_hour") is None:
        names.remove("cost_per_1k")
    headers = ["users", *(label for name, label in columns if name in names)]
    rows = []
    for run in report.get("runs", []):
        changes = ((run.get("baseline") or {}).get("figures")) or {}
        cells = [_users(run) + ("" if run.get("complete", True) else " (cut short)")]
        for name in names:
            cell = format_value(name, figure_value(run, name))
            change = (changes.get(name) or {}).get("change_pct") if name in _CHANGES_SHOWN else None
            cells.append(f"{cell} ({change:+.1f}%)" if change is not None else cell)
        rows.append(cells)
    return headers, rows


_STEP_LABELS = {
    "requests": "requests",
    "executions": "executions",
    "avg_batch_size": "avg batch",
    "queue_us": "queue us",
    "compute_input_us": "input us",
    "compute_infer_us": "infer us",
    "compute_output_us": "output us",
    "step_us": "per pipeline request us",
    "share": "share",
}


def steps_table(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The steps of each ensemble loaded, per load level, as a table for a terminal (no rows: none loaded).

    A nested ensemble's steps are indented under it; the bottleneck is marked.
    """
    headers = ["users", "ensemble", "step", *(_STEP_LABELS[f.name] for f in STEP_FIGURES), ""]
    rows = [
        [
            row["users"],
            row["ensemble"],
            row["step"],
            *row["values"],
            "bottleneck" if row["bottleneck"] else "",
        ]
        for row in _step_rows(report.get("runs", []))
    ]
    return headers, rows


def _step_rows(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for run in runs:
        for section in run.get("steps") or []:
            for step in section.get("steps", []):
                label = "  " * (int(step.get("depth", 1)) - 1) + str(step.get("model"))
                if step.get("kind") == "ensemble":
                    label += " (ensemble)"
                if int(step.get("calls", 1)) > 1:
                    label += f" (x{step['calls']})"
                rows.append(
                    {
                        "users": _users(run),
                        "ensemble": str(section.get("ensemble")),
                        "step": label,
                        "values": [format_value(f.name, figure_value(step, f)) for f in STEP_FIGURES],
                        "bottleneck": bool(step.get("bottleneck")),
                    }
                )
    return rows


def _users(run: dict[str, Any]) -> str:
    users = float(run.get("users") or 0)
    return f"{int(users)}" if users.is_integer() else f"{users:.1f}"


def _users_label(run: dict[str, Any]) -> str:
    count = _users(run)
    return f"{count} user" if count == "1" else f"{count} users"


def _row(run: dict[str, Any], columns: tuple[tuple[str, str], ...] = _COLUMNS_SHOWN) -> dict[str, Any]:
    return {
        "users": _users(run),
        "complete": bool(run.get("complete", True)),
        "requests": f"{run.get('requests', 0):,}",
        "values": [format_value(name, figure_value(run, name)) for name, _ in columns],
    }


def _comparisons(runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """One table: a row per figure, a column per load level that has a baseline counterpart."""
    compared = [run for run in runs if run.get("baseline")]
    if not compared:
        return None
    rows = []
    for figure in FIGURES:
        cells = []
        for run in compared:
            entry = run["baseline"]["figures"].get(figure.name)
            if entry is None:
                cells.append(None)
                continue
            change = entry.get("change_pct")
            cells.append(
                {
                    "values": f"{format_value(figure.name, entry['old'])} → {format_value(figure.name, entry['new'])}",
                    "change": "" if change is None else f"{change:+.1f}%",
                    "verdict": entry["verdict"],
                }
            )
        if any(cells):
            rows.append({"label": figure.label, "better": f"{figure.better} is better", "cells": cells})
    return {"levels": [_users_label(run) for run in compared], "rows": rows}


def _per_model(report: dict[str, Any], runs: list[dict[str, Any]]) -> list[dict[str, str]]:
    if len(report.get("models", [])) < 2:
        return []
    rows = []
    for run in runs:
        for name, figures in run.get("per_model", {}).items():
            latency = figures.get("latency_ms", {})
            rows.append(
                {
                    "users": _users(run),
                    "model": name,
                    "throughput": format_value("throughput", figures.get("throughput")),
                    "p50": format_value("p50_ms", latency.get("p50")),
                    "p99": format_value("p99_ms", latency.get("p99")),
                    "errors": format_value("error_rate", figures.get("error_rate")),
                }
            )
    return rows


def _title(report: dict[str, Any]) -> str:
    models = ", ".join(m["name"] for m in report.get("models", [])) or "load test"
    return f"{models} over {str(report.get('protocol', '')).upper() or '?'}"


def _facts(report: dict[str, Any]) -> list[tuple[str, str]]:
    server = report.get("server") or {}
    models = ", ".join(
        f"{m['name']} (weight {m['weight']:g})" if len(report.get("models", [])) > 1 else m["name"]
        for m in report.get("models", [])
    )
    shape = report.get("shape", "step")
    levels = ", ".join(str(level) for level in report.get("levels", []))
    totals = report.get("totals") or {}
    facts = [
        ("models", models),
        ("target", f"{report.get('target', '?')} ({str(report.get('protocol', '')).upper()})"),
        ("server", f"{server.get('name') or 'triton'} {server.get('version') or ''}".strip()),
        ("batch size", str(report.get("batch_size", "?"))),
        (
            "load",
            f"{shape}: {levels} users, {report.get('duration_s', '?')} s measured per level"
            if shape == "step"
            else f"ramp to {levels.split(', ')[-1]} users over {report.get('duration_s', '?')} s",
        ),
        ("warm-up", f"{report.get('warmup_s', 0)} s per level (excluded)"),
        (
            "Locust workers",
            str(report.get("workers") or "none (one process)")
            + (f", master at {report['master']}" if report.get("master") else ""),
        ),
        ("inputs", report.get("data") or f"random, seed {report.get('seed', 0)}"),
        *_mode_facts(report),
        ("requests in all", f"{totals.get('requests', 0):,} ({totals.get('failures', 0):,} failed)"),
        ("created", f"{report.get('created', '')} by {report.get('tool', 'tritongen')}"),
    ]
    if report.get("price_per_hour") is not None:
        facts.append(("price per hour", f"{report['price_per_hour']:g}"))
    return facts


def _mode_facts(report: dict[str, Any]) -> list[tuple[str, str]]:
    """What the sequences and streams were, for a test of a stateful or decoupled model."""
    facts = []
    if report.get("params"):
        facts.append(("parameters", ", ".join(report["params"])))
    sequences = report.get("sequences")
    if sequences:
        totals = report.get("totals") or {}
        facts.append(
            (
                "sequences",
                f"{', '.join(sequences['models'])}: {sequences['length']} requests "
                f"(+/- {sequences['length_variation_pct']:g}%), {sequences['per_user']} per user, IDs "
                f"{sequences.get('id_range') or 'from 1'}; {totals.get('sequences', 0):,} completed, "
                f"{totals.get('sequence_failures', 0):,} failed, {totals.get('sequences_closed', 0):,} ended "
                "at the stop",
            )
        )
    if report.get("streaming"):
        tokens = (report.get("totals") or {}).get("output_tokens", 0)
        facts.append(("streamed (gRPC)", f"{', '.join(report['streaming'])}; {tokens:,} output tokens"))
    return facts


def _verdict(report: dict[str, Any]) -> dict[str, Any]:
    gate = report.get("gate") or {}
    if report.get("aborted"):
        return {
            "status": "fail",
            "headline": "Run cut short",
            "lines": [report["aborted"], *gate.get("breaches", [])],
        }
    if gate.get("breaches"):
        return {"status": "fail", "headline": "Gate failed", "lines": list(gate["breaches"])}
    if gate.get("bounds"):
        return {
            "status": "pass",
            "headline": "Gate passed",
            "lines": [f"checked: {', '.join(gate['bounds'])}"],
        }
    return {"status": "info", "headline": "Completed", "lines": []}
