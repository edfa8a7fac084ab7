"""One model on one Triton, measured again and again until steady: the engine behind ``tune``.

:class:`ModelBench` resolves the test once (the target, the loopback rule, the model's request pool, the
resource sampler) and then measures as often as asked: each :meth:`ModelBench.measure` is one Locust
session that plays the load levels in turn and, at each, measures window after window until the throughput
is steady (:meth:`~generator.loadtest.session.Session.run_steady`). A level's figures are those of
``report.json``'s runs (:func:`~generator.loadtest.run.run_entry`) over the steady windows, plus how steady
they were. The model may be reloaded with another config between measurements (same inputs and outputs).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from generator.core.errors import LoadTestError
from generator.loadtest.metrics import Sampler, find_listening_pid
from generator.loadtest.plan import build_plan, options_from, remember_plan
from generator.loadtest.run import LoadTestConfig, parsed_options, run_entry
from generator.loadtest.session import LoadProgressCallback, Session, Window
from generator.loadtest.steady import Steadiness, SteadyLevel, merge_resources
from generator.loadtest.target import is_loopback, require_loopback, resolve_target
from generator.serve.control import ServerControl
from generator.serve.server import EmbeddedServer

__all__ = ["Measurement", "ModelBench", "Steadiness"]


@dataclass
class Measurement:
    """The outcome of :meth:`ModelBench.measure`.

    Attributes:
        levels: One run dict per level measured (as in ``report.json``), each with ``stability``:
            ``{"windows", "kept", "spread_pct", "stable", "throughputs"}``.
        aborted: Why the measurement was cut short (the server died), or None.
        notes: What the session noticed (users that did not all start, ...).
    """

    levels: list[dict[str, Any]]
    aborted: str | None
    notes: list[str]


class ModelBench:
    """One model on one endpoint, ready to be measured (see the module docstring).

    Args:
        url: The endpoint (``http://host:port`` or ``grpc://host:port``).
        model: The model to load.
        server: The embedded server behind ``url`` when this process started it (watched for death), else None.
        protocol: ``"http"`` or ``"grpc"`` (None: from the URL).
        batch_size: Samples per request.
        data: A file of real samples (.npz or .json), or None for generated inputs.
        seed: Seed of the generated inputs.
        request_timeout: Seconds before a request counts as failed.
        allow_remote: Allow an endpoint that is not on this machine.
        metrics_url: Triton's metrics page (default: the server's own, else the host's port 8002).

    Raises:
        LoadTestError: The endpoint is not allowed or not reachable, or the model is not ready.
    """

    def __init__(
        self,
        url: str,
        model: str,
        server: EmbeddedServer | None = None,
        protocol: str | None = None,
        batch_size: int = 1,
        data: str | None = None,
        seed: int = 0,
        request_timeout: float = 60.0,
        allow_remote: bool = False,
        metrics_url: str | None = None,
    ) -> None:
        self.target = resolve_target(url, protocol)
        require_loopback(self.target, allow_remote)
        self.server = server
        self._stack = contextlib.ExitStack()
        config = LoadTestConfig(
            models=[model],
            protocol=self.target.protocol,
            batch_size=batch_size,
            data=data,
            seed=seed,
            request_timeout=request_timeout,
        )
        self._parsed = parsed_options(config, self.target.url, data)
        try:
            self.control = self._stack.enter_context(ServerControl(self.target, error=LoadTestError))
            self._probe = self._stack.enter_context(
                ServerControl(self.target, timeout=2.0, error=LoadTestError)
            )
            self.plan = build_plan(options_from(self._parsed, self.target.url))
            self.plan.requests(self.target.protocol)
        except BaseException:
            self._stack.close()
            raise
        remember_plan(self.plan)
        local = is_loopback(self.target.host)
        pid = server.pid if server else (find_listening_pid(self.target.port) if local else None)
        self.sampler = Sampler(
            metrics_url or (server.endpoints.metrics if server else self.target.default_metrics_url()), pid
        )
        self.sampler.check()

    def close(self) -> None:
        """Close the control connections. Idempotent."""
        self._stack.close()

    def __enter__(self) -> ModelBench:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def measure(
        self, levels: list[int], steadiness: Steadiness, notify: LoadProgressCallback | None = None
    ) -> Measurement:
        """Measure the model as it is loaded now, at each of ``levels`` users in turn, until steady."""
        with contextlib.ExitStack() as stack:
            session = Session(
                self.plan,
                self._parsed,
                self.control,
                self._probe,
                self.server,
                None,
                self.sampler,
                notify or (lambda _: None),
                stack,
            )
            steady, aborted = session.run_steady(
                levels,
                steadiness.warmup,
                steadiness.window,
                steadiness.tolerance_pct,
                (steadiness.least, steadiness.most),
            )
        entries = [_entry(level, session) for level in steady if level.measured]
        return Measurement(entries, aborted, list(session.notes))


def _entry(level: SteadyLevel, session: Session) -> dict[str, Any]:
    kept = level.measured
    merged = Window(
        users=float(level.users),
        start=kept[0].start,
        end=kept[-1].end,
        stats_before=kept[0].stats_before,
        stats_after=kept[-1].stats_after,
        resources=merge_resources([w.resources for w in kept]),
        complete=all(w.complete for w in kept),
    )
    entry = run_entry(merged, session.records, None, session.plan.pipelines)
    entry["stability"] = {
        "windows": len(level.windows),
        "kept": level.kept,
        "spread_pct": level.spread_pct,
        "stable": level.stable,
        "throughputs": [round(t, 3) for t in level.throughputs],
    }
    return entry
