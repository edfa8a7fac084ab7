"""The tune's report: ``tune.json`` (every trial, the best per model and level, the verdicts) and
``report.html`` (per model: the winner against the start config level by level in the objective's figure,
with each level's measured noise; throughput against p99 for every trial at each load level with the Pareto
front marked; the winner against the start figure by figure; and every trial in a table).

``tune.json`` is rewritten after every trial, so a tune that is cut short still leaves what it measured.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jinja2

from generator.core.errors import LoadTestError, TuneError
from generator.loadtest.report.write import write_text

__all__ = ["pareto_front", "write_tune_report"]

TEMPLATE = "report.html.j2"
_COMPARED = (
    ("throughput", "throughput (infer/s)", "higher"),
    ("p50_ms", "p50 (ms)", "lower"),
    ("p99_ms", "p99 (ms)", "lower"),
    ("avg_batch_size", "avg batch", None),
    ("queue_us", "queue (us)", None),
    ("compute_infer_us", "compute (us)", None),
    ("cpu_utilization", "server CPU", None),
    ("memory_bytes", "memory (MiB)", None),
)


def write_tune_report(report: dict[str, Any], out: Path, html: bool = True) -> dict[str, Path]:
    """Write ``tune.json`` (and with ``html``, ``report.html``) into ``out``; return the files.

    Raises:
        TuneError: The directory cannot be created or written.
    """
    try:
        out.mkdir(parents=True, exist_ok=True)
        files = {"json": out / "tune.json"}
        write_text(files["json"], json.dumps(report, indent=2) + "\n")
        if html:
            files["html"] = out / "report.html"
            write_text(files["html"], render_html(report))
    except (OSError, LoadTestError) as error:
        raise TuneError(
            f"cannot write the tune report into {out} ({error}); pick another with --out"
        ) from None
    return files


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both throughput (higher) and latency (lower)."""
    front = []
    for i, (throughput, latency) in enumerate(points):
        dominated = any(
            t >= throughput and lat <= latency and (t > throughput or lat < latency)
            for j, (t, lat) in enumerate(points)
            if j != i
        )
        if not dominated:
            front.append(i)
    return front


def render_html(report: dict[str, Any]) -> str:
    """The HTML report of a tune."""
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("generator.tune", "."),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    models = [_model_view(name, entry, report) for name, entry in report.get("models", {}).items()]
    return environment.get_template(TEMPLATE).render(report=report, models=models)


def _model_view(name: str, entry: dict[str, Any], report: dict[str, Any]) -> dict[str, Any]:
    trials = entry.get("trials", [])
    by_number = {t["number"]: t for t in trials}
    start = by_number.get(0)
    best = entry.get("best")
    winner = by_number.get(entry["winner"]) if entry.get("winner") is not None else None
    chosen = winner or best
    rows = []
    for index, users in enumerate(report.get("levels", [])):
        for key, label, better in _COMPARED:
            old = _level(start, index, key)
            new = _level(chosen, index, key)
            rows.append(
                {
                    "users": users,
                    "label": label,
                    "start": _shown(key, old),
                    "chosen": _shown(key, new),
                    "change": _change(old, new, better),
                }
            )
    return {
        "name": name,
        "entry": entry,
        "trials": trials,
        "start": start,
        "chosen": chosen,
        "winner": winner,
        "comparison": rows,
        "per_level": _per_level(entry.get("vs_start")),
        "plots": _plots(trials, report.get("levels", []), start, chosen),
    }


def _per_level(vs_start: dict[str, Any] | None) -> list[dict[str, str]]:
    """The confirmation's level-by-level comparison, as table cells."""
    rows = []
    for level in (vs_start or {}).get("levels", []):
        change = level.get("change_pct")
        verdict = level.get("verdict", "")
        rows.append(
            {
                "users": str(level.get("users")),
                "start": _shown("", level.get("start")),
                "chosen": _shown("", level.get("value")),
                "change": "-" if change is None else f"{change:+.1f}%",
                "noise": f"{level.get('noise_pct', 0):.1f}%",
                "verdict": verdict,
                "class": {"better": "better", "worse": "worse", "unmeasured": "worse"}.get(verdict, "same"),
            }
        )
    return rows


def _level(trial: dict[str, Any] | None, index: int, key: str) -> float | None:
    if trial is None or index >= len(trial.get("levels", [])):
        return None
    value = trial["levels"][index].get(key)
    return float(value) if isinstance(value, (int, float)) else None


def _shown(key: str, value: float | None) -> str:
    if value is None:
        return "-"
    if key == "memory_bytes":
        return f"{value / 2**20:,.0f}"
    if key == "cpu_utilization":
        return f"{value:.0%}"
    return f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.0f}"


def _change(old: float | None, new: float | None, better: str | None) -> dict[str, str]:
    if old is None or new is None or old == 0:
        return {"text": "", "class": "same"}
    change = (new - old) / abs(old) * 100
    if better is None or abs(change) < 0.5:
        return {"text": f"{change:+.1f}%", "class": "same"}
    good = (change > 0) == (better == "higher")
    return {"text": f"{change:+.1f}%", "class": "better" if good else "worse"}


def _plots(
    trials: list[dict[str, Any]],
    levels: list[int],
    start: dict[str, Any] | None,
    chosen: dict[str, Any] | None,
) -> list[str]:
    """One throughput-against-p99 scatter per load level, as base64 PNG."""
    from matplotlib.figure import Figure

    from generator.loadtest.report.plots import png

    measured = [t for t in trials if t.get("role") != "confirm" and t.get("levels")]
    images = []
    for index, users in enumerate(levels):
        points, numbers, feasible = [], [], []
        for trial in measured:
            throughput, p99 = _level(trial, index, "throughput"), _level(trial, index, "p99_ms")
            if throughput is not None and p99 is not None and trial.get("status") == "measured":
                points.append((throughput, p99))
                numbers.append(trial["number"])
                feasible.append(bool(trial.get("feasible")))
        if not points:
            continue
        figure = Figure(figsize=(6.4, 4.2))
        axes = figure.add_subplot()
        front = pareto_front(points)
        for ok, colour, label in (
            (True, "#4c72b0", "trial"),
            (False, "#c44e52", "trial breaking a constraint"),
        ):
            chosen_points = [p for p, f in zip(points, feasible, strict=True) if f == ok]
            if chosen_points:
                axes.scatter(*zip(*chosen_points, strict=True), s=22, color=colour, alpha=0.7, label=label)
        ordered = sorted((points[i] for i in front), key=lambda p: p[0])
        axes.plot(
            *zip(*ordered, strict=True),
            color="#55a868",
            linewidth=1.5,
            marker="o",
            markersize=4,
            label="Pareto front",
        )
        for trial, marker, label in ((start, "s", "start config"), (chosen, "*", "winner")):
            if trial is not None and trial["number"] in numbers:
                x, y = points[numbers.index(trial["number"])]
                axes.scatter(
                    [x],
                    [y],
                    s=160,
                    marker=marker,
                    facecolors="none",
                    edgecolors="#222",
                    linewidths=1.5,
                    label=label,
                )
        axes.set_xlabel("throughput (infer/s)")
        axes.set_ylabel("p99 latency (ms)")
        axes.set_title(f"{users} user{'s' if users != 1 else ''}: every trial")
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize=8)
        images.append(png(figure))
    return images
