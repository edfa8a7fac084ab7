"""The report's plots, drawn with matplotlib (no display needed) and returned as base64 PNG.

* :func:`latency_vs_throughput`: p50/p90/p99 latency against throughput over the load levels: where the
  curve turns up is the load the server can take.
* :func:`server_breakdown`: per load level, the average request's time as stacked bars: Triton's queue,
  compute input, compute infer, compute output, and the rest of the client's mean latency (network,
  protocol, server front end, client).
* :func:`latency_histogram`: the latency distribution of each load level.
"""

from __future__ import annotations

import base64
import io
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import ScalarFormatter

__all__ = ["latency_histogram", "latency_vs_throughput", "png", "server_breakdown"]

_SIZE = (7.5, 4.2)
_DPI = 100
_STAGES = (
    ("queue_us", "queue", "#c7a76c"),
    ("compute_input_us", "compute input", "#86b4a9"),
    ("compute_infer_us", "compute infer", "#3a6f8f"),
    ("compute_output_us", "compute output", "#9dbbd6"),
)
_OTHER_COLOR = "#d9d9d9"


def png(figure: Figure) -> str:
    """The figure as a base64 PNG, for an <img> in a report."""
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_DPI, metadata={"Software": None})
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _label(users: Any) -> str:
    value = float(users)
    return f"{int(value)}" if value.is_integer() else f"{value:.1f}"


def _users(users: Any) -> str:
    return f"{_label(users)} user" + ("" if float(users) == 1 else "s")


def latency_vs_throughput(runs: list[dict[str, Any]]) -> str | None:
    """Latency percentiles against throughput, one point per run (None when no run succeeded)."""
    points = [r for r in runs if r.get("latency_ms", {}).get("p50") is not None]
    if not points:
        return None
    figure = Figure(figsize=_SIZE)
    axes = figure.subplots()
    throughput = [r["throughput"] for r in points]
    for key, style in (("p50", "o-"), ("p90", "s--"), ("p99", "^:")):
        axes.plot(throughput, [r["latency_ms"][key] for r in points], style, label=key)
    for run in points:
        axes.annotate(
            _users(run["users"]),
            (run["throughput"], run["latency_ms"]["p99"]),
            textcoords="offset points",
            xytext=(4, 6),
            fontsize=8,
        )
    axes.set_xlabel("throughput (inferences/s)")
    axes.set_ylabel("latency (ms)")
    top = max(r["latency_ms"]["p99"] for r in points)
    axes.set_ylim(0, top * 1.2 if top > 0 else 1)
    axes.set_xlim(0, max(throughput) * 1.15 if max(throughput) > 0 else 1)
    axes.grid(alpha=0.3)
    axes.legend(loc="upper left")
    axes.set_title("Latency against throughput")
    return png(figure)


def server_breakdown(runs: list[dict[str, Any]]) -> str | None:
    """Stacked bars of where the average request's time went, per run (None without server figures)."""
    usable = [r for r in runs if any((r.get("server") or {}).get(key) is not None for key, _, _ in _STAGES)]
    if not usable:
        return None
    figure = Figure(figsize=_SIZE)
    axes = figure.subplots()
    labels = [_label(r["users"]) for r in usable]
    positions = list(range(len(usable)))
    bottoms = [0.0] * len(usable)
    for key, name, color in _STAGES:
        values = [((r["server"].get(key) or 0.0) / 1000.0) for r in usable]
        axes.bar(positions, values, bottom=bottoms, color=color, label=name, width=0.6)
        bottoms = [b + v for b, v in zip(bottoms, values, strict=True)]
    other = [max(0.0, (r["latency_ms"].get("mean") or 0.0) - b) for r, b in zip(usable, bottoms, strict=True)]
    axes.bar(positions, other, bottom=bottoms, color=_OTHER_COLOR, label="rest of client latency", width=0.6)
    axes.set_xticks(positions, labels)
    axes.set_xlabel("users")
    axes.set_ylabel("time per request (ms)")
    axes.grid(axis="y", alpha=0.3)
    axes.legend(loc="upper left", fontsize=8)
    axes.set_title("Where a request's time goes (server-side breakdown)")
    return png(figure)


def latency_histogram(runs: list[dict[str, Any]]) -> str | None:
    """The latency distribution of each run on a log axis (None when no run has latencies)."""
    usable = [r for r in runs if (r.get("latency_histogram") or {}).get("counts")]
    if not usable:
        return None
    figure = Figure(figsize=_SIZE)
    axes = figure.subplots()
    for run in usable:
        histogram = run["latency_histogram"]
        edges, counts = histogram["edges_ms"], histogram["counts"]
        total = sum(counts) or 1
        shares = [c / total for c in counts]
        axes.stairs(shares, edges, label=_users(run["users"]), linewidth=1.5)
    axes.set_xscale("log")
    axes.xaxis.set_major_formatter(ScalarFormatter())
    axes.set_xlabel("latency (ms, log scale)")
    axes.set_ylabel("share of requests")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    axes.set_title("Latency distribution")
    return png(figure)
