"""What the server did during a measurement window.

* :func:`server_figures`: from two snapshots of Triton's statistics API (:meth:`ServerControl.statistics`),
  the average queue, compute input, compute infer and compute output time per request (us) and the average
  executed batch size (inference count / execution count), over the window only;
  :func:`step_figures`: the same per step of each ensemble loaded, and which step is the bottleneck.
* :func:`parse_prometheus` and :class:`Sampler`: Triton's metrics page (``nv_cpu_utilization``,
  ``nv_cpu_memory_used_bytes``, ``nv_gpu_utilization``, ``nv_gpu_memory_used_bytes`` where present) and,
  when the server runs on this machine, its processes (server and backend stubs) through psutil.
"""

from __future__ import annotations

import logging
import math
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from generator.loadtest.pipelines import Step
from generator.loadtest.report.figures import pipeline_figures

__all__ = [
    "ProcessWatch",
    "Sampler",
    "find_listening_pid",
    "parse_prometheus",
    "server_figures",
    "step_figures",
]

logger = logging.getLogger(__name__)

_STAGES = ("queue", "compute_input", "compute_infer", "compute_output")


def server_figures(
    before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]], names: list[str] | None = None
) -> dict[str, Any]:
    """Server-side figures over a window, summed over models, from two statistics snapshots.

    Args:
        before: The snapshot at the window's start (:meth:`ServerControl.statistics`).
        after: The snapshot at its end.
        names: The models to count (those the test sends requests to), or None for every model in both.

    Returns:
        ``queue_us``, ``compute_input_us``, ``compute_infer_us``, ``compute_output_us`` (average per request),
        ``avg_batch_size``, ``cache_hit_rate`` (share of requests the response cache answered),
        ``inference_count``, ``execution_count``, ``success_count``, ``fail_count``, ``cache_hit_count``, and
        ``per_model`` with the same figures for each model. Averages are None
        where the window saw no request.
    """
    counted = [name for name in (names if names is not None else after) if name in before and name in after]
    per_model = {name: _figures(_delta(before[name], after[name])) for name in counted}
    total: dict[str, int] = {}
    for name in per_model:
        for key, value in _delta(before[name], after[name]).items():
            total[key] = total.get(key, 0) + value
    figures = _figures(total)
    figures["per_model"] = per_model
    return figures


def step_figures(
    before: dict[str, dict[str, Any]],
    after: dict[str, dict[str, Any]],
    pipelines: dict[str, tuple[Step, ...]],
) -> list[dict[str, Any]]:
    """Per-step figures of each ensemble over a window, from two statistics snapshots.

    Args:
        before: The snapshot at the window's start, with the steps' models.
        after: The snapshot at its end.
        pipelines: The steps of each ensemble the test loads (:attr:`Plan.pipelines`).

    Returns:
        One entry per ensemble, as :func:`~generator.loadtest.report.figures.pipeline_figures` makes it; a step
        whose model is missing from a snapshot is left out.
    """
    sections = []
    for ensemble, steps in pipelines.items():
        if ensemble not in before or ensemble not in after:
            continue
        rows = []
        for step in steps:
            if step.model not in before or step.model not in after:
                continue
            figures = _figures(_delta(before[step.model], after[step.model]))
            rows.append(
                {
                    "model": step.model,
                    "version": step.version,
                    "parent": step.parent,
                    "depth": step.depth,
                    "kind": "ensemble" if step.is_ensemble else "model",
                    "calls": step.calls,
                    "requests": figures["success_count"],
                    "failures": figures["fail_count"],
                    "inferences": figures["inference_count"],
                    "executions": figures["execution_count"],
                    **{key: figures[key] for key in ("avg_batch_size", *(f"{s}_us" for s in _STAGES))},
                }
            )
        sections.append(pipeline_figures(ensemble, _figures(_delta(before[ensemble], after[ensemble])), rows))
    return sections


def _delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, int]:
    return {key: int(after.get(key, 0)) - int(before.get(key, 0)) for key in after}


def _figures(delta: dict[str, int]) -> dict[str, Any]:
    def average_us(stage: str) -> float | None:
        count = delta.get(f"{stage}_count", 0)
        return delta.get(f"{stage}_ns", 0) / count / 1000.0 if count > 0 else None

    executions = delta.get("execution_count", 0)
    result: dict[str, Any] = {f"{stage}_us": average_us(stage) for stage in _STAGES}
    result["avg_batch_size"] = delta.get("inference_count", 0) / executions if executions > 0 else None
    successes = delta.get("success_count", 0)
    result["cache_hit_rate"] = delta.get("cache_hit_count", 0) / successes if successes > 0 else None
    for key in ("inference_count", "execution_count", "success_count", "fail_count", "cache_hit_count"):
        result[key] = delta.get(key, 0)
    return result


def parse_prometheus(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Parse Prometheus text exposition format into ``{metric: [(labels, value), ...]}`` (comments skipped)."""
    metrics: dict[str, list[tuple[dict[str, str], float]]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        labels: dict[str, str] = {}
        if "{" in line:
            name, _, rest = line.partition("{")
            label_text, _, value_text = rest.rpartition("}")
            labels = _labels(label_text)
        else:
            name, _, value_text = line.partition(" ")
        parts = value_text.split()
        if not parts:
            continue
        try:
            value = float(parts[0])
        except ValueError:
            continue
        metrics.setdefault(name.strip(), []).append((labels, value))
    return metrics


def _labels(text: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    for item in text.split('",'):
        key, sep, value = item.partition("=")
        if sep:
            labels[key.strip().strip(",")] = value.strip().strip('"')
    return labels


def find_listening_pid(port: int) -> int | None:
    """The pid of the local process listening on TCP ``port``, if this user may see it."""
    import psutil

    try:
        connections = psutil.net_connections(kind="tcp")
    except (psutil.AccessDenied, OSError):
        return None
    for conn in connections:
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
            return int(conn.pid)
    return None


class ProcessWatch:
    """CPU time and resident memory of a process and its children (Triton and its backend stubs).

    Args:
        pid: The server's process id.
    """

    def __init__(self, pid: int) -> None:
        import psutil

        self._psutil = psutil
        self.pid = pid
        self._root = psutil.Process(pid)

    def _tree(self) -> list[Any]:
        try:
            return [self._root, *self._root.children(recursive=True)]
        except self._psutil.Error:
            return []

    def cpu_seconds(self) -> float | None:
        """User + system CPU seconds of the tree so far (None once the server is gone)."""
        total = 0.0
        tree = self._tree()
        for process in tree:
            try:
                times = process.cpu_times()
            except self._psutil.Error:
                continue
            total += times.user + times.system
        return total if tree else None

    def rss_bytes(self) -> int | None:
        """Resident set size of the tree (None once the server is gone)."""
        total = 0
        tree = self._tree()
        for process in tree:
            try:
                total += process.memory_info().rss
            except self._psutil.Error:
                continue
        return total if tree else None


@dataclass
class _Window:
    started: float
    cpu_start: float | None
    samples: dict[str, list[float]] = field(default_factory=dict)

    def add(self, key: str, value: float | None) -> None:
        if value is not None and not math.isnan(value):
            self.samples.setdefault(key, []).append(value)


class Sampler:
    """Samples the metrics page and the server's processes while a window is open.

    Args:
        metrics_url: Triton's Prometheus page, or None to skip it.
        pid: The server's pid when it runs on this machine, or None.
        interval: Seconds between samples.
    """

    def __init__(self, metrics_url: str | None, pid: int | None, interval: float = 1.0) -> None:
        self.metrics_url = metrics_url
        self.interval = interval
        self.notes: list[str] = []
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self._process: ProcessWatch | None = None
        if pid is not None:
            try:
                self._process = ProcessWatch(pid)
            except Exception as error:
                self.notes.append(f"server process {pid} cannot be watched ({error})")
        self._window: _Window | None = None
        self._last = 0.0
        self._cpus = _cpu_count()

    @property
    def watches_process(self) -> bool:
        """Whether process figures (CPU, memory of the server's processes) are measured."""
        return self._process is not None

    def check(self) -> None:
        """Fetch the metrics page once; on failure, note why and stop using it (never raises)."""
        if self.metrics_url is None:
            return
        try:
            self._fetch()
        except Exception as error:
            self.notes.append(f"Triton's metrics at {self.metrics_url} are unavailable ({error})")
            logger.info("metrics unavailable at %s: %s", self.metrics_url, error)
            self.metrics_url = None

    def _fetch(self) -> dict[str, list[tuple[dict[str, str], float]]]:
        assert self.metrics_url is not None
        with self._opener.open(self.metrics_url, timeout=2.0) as response:
            return parse_prometheus(response.read().decode("utf-8", errors="replace"))

    def open(self) -> None:
        """Start a window."""
        cpu = self._process.cpu_seconds() if self._process else None
        self._window = _Window(time.monotonic(), cpu)
        self._last = 0.0
        self.tick(force=True)

    def tick(self, force: bool = False) -> None:
        """Take a sample if the interval has passed (call it often; it is cheap otherwise)."""
        window = self._window
        now = time.monotonic()
        if window is None or (not force and now - self._last < self.interval):
            return
        self._last = now
        if self._process is not None:
            window.add("rss", _float(self._process.rss_bytes()))
        if self.metrics_url is None:
            return
        try:
            metrics = self._fetch()
        except Exception as error:
            logger.debug("metrics sample failed: %s", error)
            return
        window.add("host_cpu", _first(metrics, "nv_cpu_utilization"))
        window.add("host_memory", _first(metrics, "nv_cpu_memory_used_bytes"))
        gpu_util = [v for _, v in metrics.get("nv_gpu_utilization", [])]
        gpu_memory = [v for _, v in metrics.get("nv_gpu_memory_used_bytes", [])]
        if gpu_util:
            window.add("gpu_util", sum(gpu_util) / len(gpu_util))
        if gpu_memory:
            window.add("gpu_memory", sum(gpu_memory))

    def close(self) -> dict[str, Any]:
        """End the window; return its resource figures.

        Returns:
            ``cpu_utilization`` (0-1 of all cores: the server's processes when watched, else Triton's host
            figure), ``memory_bytes`` (the server's resident memory when watched, else the host's used
            memory from Triton), ``gpu_utilization`` (0-1, mean over GPUs), ``gpu_memory_bytes`` (sum over
            GPUs), ``host_cpu_utilization``, ``host_memory_used_bytes``, and ``resource_source``
            (``"process"`` or ``"metrics"``). Figures that were not measured are None.
        """
        self.tick(force=True)
        window, self._window = self._window, None
        if window is None:
            return {}
        elapsed = time.monotonic() - window.started
        result: dict[str, Any] = {
            "host_cpu_utilization": _mean(window.samples.get("host_cpu")),
            "host_memory_used_bytes": _max_int(window.samples.get("host_memory")),
            "gpu_utilization": _mean(window.samples.get("gpu_util")),
            "gpu_memory_bytes": _max_int(window.samples.get("gpu_memory")),
        }
        process_cpu = None
        if self._process is not None and window.cpu_start is not None and elapsed > 0:
            cpu_end = self._process.cpu_seconds()
            if cpu_end is not None:
                process_cpu = max(0.0, cpu_end - window.cpu_start) / elapsed / self._cpus
        if process_cpu is not None:
            result["cpu_utilization"] = process_cpu
            result["memory_bytes"] = _max_int(window.samples.get("rss"))
            result["resource_source"] = "process"
        else:
            result["cpu_utilization"] = result["host_cpu_utilization"]
            result["memory_bytes"] = result["host_memory_used_bytes"]
            result["resource_source"] = "metrics" if self.metrics_url else None
        return result


def _cpu_count() -> int:
    import psutil

    return psutil.cpu_count() or 1


def _first(metrics: dict[str, list[tuple[dict[str, str], float]]], name: str) -> float | None:
    values = metrics.get(name)
    return values[0][1] if values else None


def _float(value: int | None) -> float | None:
    return float(value) if value is not None else None


def _mean(values: list[float] | None) -> float | None:
    return sum(values) / len(values) if values else None


def _max_int(values: list[float] | None) -> int | None:
    return int(max(values)) if values else None
