"""The figures of a run: how they are computed from recorded requests, and what each one means.

A run (one load level) is a plain dict, exactly as it is written to ``report.json``. :data:`FIGURES` names
every figure a user can compare against a baseline or gate on (``--fail-if``), with its unit, where it sits
in the run dict, and which direction is better; :func:`figure_value` reads one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["FIGURES", "FIGURE_NAMES", "Metric", "client_figures", "cost_per_1k", "figure_value"]


@dataclass(frozen=True)
class Metric:
    """One figure of a run: its name, label, unit, place in the run dict and better direction.

    Attributes:
        name: The flat name (CSV column, ``--fail-if`` metric, baseline key).
        label: Human-readable name.
        unit: Unit as shown in reports.
        path: Keys leading to the value in a run dict.
        better: ``"higher"`` or ``"lower"``: the direction that counts as an improvement.
    """

    name: str
    label: str
    unit: str
    path: tuple[str, ...]
    better: str


FIGURES: tuple[Metric, ...] = (
    Metric("throughput", "throughput", "infer/s", ("throughput",), "higher"),
    Metric("requests_per_s", "requests per second", "req/s", ("requests_per_s",), "higher"),
    Metric("p50_ms", "p50 latency", "ms", ("latency_ms", "p50"), "lower"),
    Metric("p90_ms", "p90 latency", "ms", ("latency_ms", "p90"), "lower"),
    Metric("p95_ms", "p95 latency", "ms", ("latency_ms", "p95"), "lower"),
    Metric("p99_ms", "p99 latency", "ms", ("latency_ms", "p99"), "lower"),
    Metric("max_ms", "max latency", "ms", ("latency_ms", "max"), "lower"),
    Metric("mean_ms", "mean latency", "ms", ("latency_ms", "mean"), "lower"),
    Metric("error_rate", "error rate", "", ("error_rate",), "lower"),
    Metric("queue_us", "server queue", "us", ("server", "queue_us"), "lower"),
    Metric("compute_input_us", "server compute input", "us", ("server", "compute_input_us"), "lower"),
    Metric("compute_infer_us", "server compute infer", "us", ("server", "compute_infer_us"), "lower"),
    Metric("compute_output_us", "server compute output", "us", ("server", "compute_output_us"), "lower"),
    Metric("avg_batch_size", "average executed batch", "", ("server", "avg_batch_size"), "higher"),
    Metric("cache_hit_rate", "response cache hit rate", "", ("server", "cache_hit_rate"), "higher"),
    Metric("cpu_utilization", "server CPU utilization", "", ("cpu_utilization",), "lower"),
    Metric("memory_bytes", "server memory", "bytes", ("memory_bytes",), "lower"),
    Metric("gpu_utilization", "GPU utilization", "", ("gpu_utilization",), "lower"),
    Metric("gpu_memory_bytes", "GPU memory", "bytes", ("gpu_memory_bytes",), "lower"),
    Metric("cost_per_1k", "cost per 1,000 inferences", "", ("cost_per_1k",), "lower"),
)

FIGURE_NAMES: tuple[str, ...] = tuple(f.name for f in FIGURES)
_BY_NAME = {f.name: f for f in FIGURES}

PERCENTILES = {"p50": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0}
HISTOGRAM_BINS = 40


def figure_value(run: dict[str, Any], name: str) -> float | None:
    """The value of figure ``name`` in ``run``, or None when it was not measured.

    Raises:
        KeyError: ``name`` is not a figure.
    """
    value: Any = run
    for key in _BY_NAME[name].path:
        if not isinstance(value, dict) or value.get(key) is None:
            return None
        value = value[key]
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else float(value)


def cost_per_1k(throughput: float | None, price_per_hour: float | None) -> float | None:
    """Cost of 1,000 inferences at ``throughput`` inferences/s on a machine costing ``price_per_hour``."""
    if price_per_hour is None or not throughput:
        return None
    return price_per_hour / (throughput * 3600.0) * 1000.0


def client_figures(rows: np.ndarray, seconds: float, names: list[str], messages: list[str]) -> dict[str, Any]:
    """The client's view of a window from its recorded requests (rows of :data:`recorder.ROW`).

    Latency percentiles are over successful requests (a refused connection fails in microseconds and would
    flatter them); throughput counts successful inferences per second.

    Returns:
        ``requests``, ``failures``, ``inferences``, ``throughput``, ``requests_per_s``, ``error_rate``,
        ``latency_ms`` (p50/p90/p95/p99/max/mean), ``latency_histogram``, ``errors`` (message -> count) and
        ``per_model`` (the same figures, without the histogram, per model that was sent requests).
    """
    figures = _summary(rows, seconds)
    ok = rows[rows["error"] < 0]
    figures["latency_histogram"] = _histogram(ok["latency_ms"])
    failed = rows["error"][rows["error"] >= 0]
    codes, counts = np.unique(failed, return_counts=True)
    figures["errors"] = {messages[int(c)]: int(n) for c, n in zip(codes, counts, strict=True)}
    figures["per_model"] = {
        names[int(m)]: _summary(rows[rows["model"] == m], seconds) for m in np.unique(rows["model"])
    }
    return figures


def _summary(rows: np.ndarray, seconds: float) -> dict[str, Any]:
    ok = rows[rows["error"] < 0]
    requests = len(rows)
    failures = requests - len(ok)
    inferences = int(ok["inferences"].sum())
    latency: dict[str, float | None]
    if len(ok):
        values = np.percentile(ok["latency_ms"], list(PERCENTILES.values()))
        latency = {key: float(v) for key, v in zip(PERCENTILES, values, strict=True)}
        latency["max"] = float(ok["latency_ms"].max())
        latency["mean"] = float(ok["latency_ms"].mean())
    else:
        latency = {key: None for key in (*PERCENTILES, "max", "mean")}
    return {
        "requests": requests,
        "failures": failures,
        "inferences": inferences,
        "throughput": inferences / seconds if seconds > 0 else 0.0,
        "requests_per_s": len(ok) / seconds if seconds > 0 else 0.0,
        "error_rate": failures / requests if requests else 0.0,
        "latency_ms": latency,
    }


def _histogram(latencies: np.ndarray) -> dict[str, list[float]]:
    if not len(latencies):
        return {"edges_ms": [], "counts": []}
    low = max(float(latencies.min()), 1e-3)
    high = max(float(latencies.max()), low * 1.01)
    edges = np.geomspace(low, high, HISTOGRAM_BINS + 1)
    counts, _ = np.histogram(latencies, bins=edges)
    return {"edges_ms": [round(float(e), 4) for e in edges], "counts": [int(c) for c in counts]}
