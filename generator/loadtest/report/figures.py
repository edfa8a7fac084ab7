"""The figures of a run: how they are computed from recorded requests, and what each one means.

A run (one load level) is a plain dict, exactly as it is written to ``report.json``. :data:`FIGURES` names
every figure a user can compare against a baseline or gate on (``--fail-if``), with its unit, where it sits
in the run dict, and which direction is better; :func:`figure_value` reads one.

A run of a test with a stateful model also has ``sequences`` (:func:`sequence_figures`), one with a
decoupled model ``stream`` (:func:`stream_figures`); their figures are None in other runs.

A run that loads an ensemble also has ``steps``: per ensemble, the figures of each composing model from
Triton's statistics (:data:`STEP_FIGURES`), each step's queue + compute time per pipeline request, its
share of the steps' time, and the bottleneck, the step that takes the most (:func:`pipeline_figures`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "FIGURES",
    "FIGURE_NAMES",
    "STEP_FIGURES",
    "Metric",
    "client_figures",
    "cost_per_1k",
    "figure_value",
    "pipeline_figures",
    "sequence_figures",
    "stream_figures",
]


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
    Metric("sequences_per_s", "sequences per second", "seq/s", ("sequences", "per_s"), "higher"),
    Metric("seq_p50_ms", "p50 sequence latency", "ms", ("sequences", "latency_ms", "p50"), "lower"),
    Metric("seq_p90_ms", "p90 sequence latency", "ms", ("sequences", "latency_ms", "p90"), "lower"),
    Metric("seq_p99_ms", "p99 sequence latency", "ms", ("sequences", "latency_ms", "p99"), "lower"),
    Metric("seq_error_rate", "failed sequences", "", ("sequences", "error_rate"), "lower"),
    Metric("ttft_p50_ms", "p50 time to first token", "ms", ("stream", "ttft_ms", "p50"), "lower"),
    Metric("ttft_p90_ms", "p90 time to first token", "ms", ("stream", "ttft_ms", "p90"), "lower"),
    Metric("ttft_p99_ms", "p99 time to first token", "ms", ("stream", "ttft_ms", "p99"), "lower"),
    Metric("itl_p50_ms", "p50 inter-token latency", "ms", ("stream", "itl_ms", "p50"), "lower"),
    Metric("itl_p90_ms", "p90 inter-token latency", "ms", ("stream", "itl_ms", "p90"), "lower"),
    Metric("itl_p99_ms", "p99 inter-token latency", "ms", ("stream", "itl_ms", "p99"), "lower"),
    Metric("output_tokens_per_s", "output tokens per second", "tok/s", ("stream", "tokens_per_s"), "higher"),
)

FIGURE_NAMES: tuple[str, ...] = tuple(f.name for f in FIGURES)
_BY_NAME = {f.name: f for f in FIGURES}

STEP_FIGURES: tuple[Metric, ...] = (
    Metric("requests", "requests", "", ("requests",), "higher"),
    Metric("executions", "executions", "", ("executions",), "lower"),
    Metric("avg_batch_size", "average executed batch", "", ("avg_batch_size",), "higher"),
    Metric("queue_us", "queue", "us", ("queue_us",), "lower"),
    Metric("compute_input_us", "compute input", "us", ("compute_input_us",), "lower"),
    Metric("compute_infer_us", "compute infer", "us", ("compute_infer_us",), "lower"),
    Metric("compute_output_us", "compute output", "us", ("compute_output_us",), "lower"),
    Metric("step_us", "queue + compute per pipeline request", "us", ("step_us",), "lower"),
    Metric("share", "share of the steps' time", "", ("share",), "lower"),
)
"""The figures of one step of an ensemble (a model it runs), over a window, from Triton's statistics.

Requests, executions and the average batch are Triton's counts for the step's model; the times are its
averages per request of that model; ``step_us`` is queue + compute per request times the step's ``calls``
(how often one pipeline request runs the model), and ``share`` is ``step_us`` over the sum of the steps'
``step_us`` (steps that are ensembles themselves are left out of the sum: their steps are counted).
"""

_STAGES_US = ("queue_us", "compute_input_us", "compute_infer_us", "compute_output_us")

PERCENTILES = {"p50": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0}
HISTOGRAM_BINS = 40


def figure_value(run: dict[str, Any], name: str | Metric) -> float | None:
    """The value of figure ``name`` in ``run`` (or of a :class:`Metric`, e.g. a step's), None if not measured.

    Raises:
        KeyError: ``name`` is not a figure.
    """
    value: Any = run
    for key in (name if isinstance(name, Metric) else _BY_NAME[name]).path:
        if not isinstance(value, dict) or value.get(key) is None:
            return None
        value = value[key]
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else float(value)


def pipeline_figures(ensemble: str, whole: dict[str, Any], steps: list[dict[str, Any]]) -> dict[str, Any]:
    """One ensemble's per-step figures: each step's time per pipeline request, its share, the bottleneck.

    Args:
        ensemble: The ensemble's name.
        whole: The ensemble's own server figures over the window (``success_count``, ``queue_us``, ...).
        steps: One dict per step with ``model``, ``kind`` (``"model"`` or ``"ensemble"``), ``calls`` and
            the figures of :data:`STEP_FIGURES` up to ``compute_output_us``; ``step_us``, ``share`` and
            ``bottleneck`` are added.

    Returns:
        ``ensemble``, ``requests`` (the ensemble's successful requests), ``end_to_end_us`` (its own queue +
        compute per request, the whole pipeline as Triton times it), ``bottleneck`` (the model of the step
        with the largest ``step_us``, None when nothing was measured) and ``steps``.
    """
    for step in steps:
        per_request = _time_us(step)
        step["step_us"] = per_request * int(step.get("calls", 1)) if per_request is not None else None
    leaves = [s for s in steps if s.get("kind") != "ensemble" and s["step_us"] is not None]
    total = sum(s["step_us"] for s in leaves)
    slowest = max(leaves, key=lambda s: s["step_us"], default=None)
    counted = {id(s) for s in leaves} if total > 0 else set()
    for step in steps:
        step["share"] = step["step_us"] / total if id(step) in counted else None
        step["bottleneck"] = step is slowest
    return {
        "ensemble": ensemble,
        "requests": whole.get("success_count", 0),
        "end_to_end_us": _time_us(whole),
        "bottleneck": slowest["model"] if slowest is not None else None,
        "steps": steps,
    }


def _time_us(figures: dict[str, Any]) -> float | None:
    """Queue + compute time per request, or None when no stage was measured."""
    stages = [figures.get(stage) for stage in _STAGES_US]
    measured = [value for value in stages if value is not None]
    return sum(measured) if measured else None


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


def sequence_figures(rows: np.ndarray, seconds: float) -> dict[str, Any]:
    """The sequences that ended in a window, from the rows of the requests that ended them.

    Returns:
        ``completed`` and ``failed`` sequences, ``per_s`` (completed per second), ``error_rate`` (failed over
        ended), ``latency_ms`` (p50/p90/p95/p99/max/mean of the completed ones, from the sending of the
        first request to the last reply) and ``length_mean`` (their requests, on average).
    """
    ended = rows[rows["sequence"] > 0]
    ok = ended[ended["error"] < 0]
    return {
        "completed": len(ok),
        "failed": len(ended) - len(ok),
        "per_s": len(ok) / seconds if seconds > 0 else 0.0,
        "error_rate": (len(ended) - len(ok)) / len(ended) if len(ended) else 0.0,
        "latency_ms": _percentiles(ok["sequence_ms"]),
        "length_mean": float(ok["sequence_length"].mean()) if len(ok) else None,
    }


def stream_figures(rows: np.ndarray, seconds: float) -> dict[str, Any]:
    """A window's streamed requests: tokens, time to first token and inter-token latency (genai-perf's figures).

    A token is a response that carried outputs. Time to first token runs from the sending of a request to
    its first token; inter-token latency is a request's mean gap between consecutive tokens, (last -
    first) / (tokens - 1), for requests of two tokens or more; percentiles are over requests.

    Returns:
        ``requests`` (successful streamed requests), ``output_tokens``, ``tokens_per_s`` (output tokens per
        second), ``tokens_per_request`` (mean), ``ttft_ms`` and ``itl_ms`` (p50/p90/p95/p99/max/mean).
    """
    ok = rows[(rows["error"] < 0) & (rows["tokens"] > 0)]
    tokens = int(ok["tokens"].sum())
    return {
        "requests": len(ok),
        "output_tokens": tokens,
        "tokens_per_s": tokens / seconds if seconds > 0 else 0.0,
        "tokens_per_request": tokens / len(ok) if len(ok) else None,
        "ttft_ms": _percentiles(ok["ttft_ms"]),
        "itl_ms": _percentiles(ok["itl_ms"][ok["tokens"] > 1]),
    }


def _percentiles(values: np.ndarray) -> dict[str, float | None]:
    values = values[~np.isnan(values)]
    if not len(values):
        return {key: None for key in (*PERCENTILES, "max", "mean")}
    result = {
        key: float(v)
        for key, v in zip(PERCENTILES, np.percentile(values, list(PERCENTILES.values())), strict=True)
    }
    result["max"] = float(values.max())
    result["mean"] = float(values.mean())
    return result


def _summary(rows: np.ndarray, seconds: float) -> dict[str, Any]:
    ok = rows[rows["error"] < 0]
    requests = len(rows)
    failures = requests - len(ok)
    inferences = int(ok["inferences"].sum())
    latency = _percentiles(ok["latency_ms"])
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
