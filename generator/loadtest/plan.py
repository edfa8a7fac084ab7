"""What a load test sends: options (as Locust's parsed options carry them) resolved against the server.

The options travel as attributes of Locust's ``parsed_options`` namespace, because that is what Locust's
master sends to its workers; :func:`options_from` reads them back. :func:`build_plan` asks the server for
each model's metadata and config and prebuilds the request tensors; :func:`plan_for` does that once per
process and hands every user the same :class:`Plan`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from gevent.lock import RLock

from generator.core.errors import LoadTestError
from generator.loadtest.clients import (
    GrpcChannel,
    GrpcConnection,
    GrpcRequests,
    HttpConnection,
    HttpRequests,
    ReplyTensor,
)
from generator.loadtest.images import image_inputs
from generator.loadtest.options import default
from generator.loadtest.parameters import ParamValue, parse_params, sequence_parameters
from generator.loadtest.payloads import (
    Batch,
    ModelInfo,
    check_input_shapes,
    load_payload_samples,
    make_batches,
    model_info,
    parse_input_shapes,
)
from generator.loadtest.pipelines import Step, pipeline_steps
from generator.loadtest.sequences import (
    SequenceIds,
    SequenceModel,
    SequenceSettings,
    parse_id_range,
    sequence_model,
)
from generator.loadtest.target import resolve_target
from generator.serve.control import ServerControl, Target

__all__ = ["HarnessOptions", "Plan", "build_plan", "options_from", "parse_models", "plan_for"]

logger = logging.getLogger(__name__)

_DEFAULT_TIMEOUT: float = default("request_timeout")


def parse_models(values: str | list[str] | tuple[str, ...] | None) -> tuple[tuple[str, float], ...]:
    """Parse ``--model`` values: ``name`` or ``name:weight``, repeated or comma-separated.

    Raises:
        LoadTestError: No model, a bad weight, or a model named twice.
    """
    if isinstance(values, str):
        values = [values]
    models: list[tuple[str, float]] = []
    for value in values or []:
        for item in str(value).split(","):
            item = item.strip()
            if not item:
                continue
            name, sep, weight_text = item.rpartition(":")
            if not sep:
                name, weight_text = item, "1"
            try:
                weight = float(weight_text)
            except ValueError:
                raise LoadTestError(
                    f"--model '{item}': the weight after ':' must be a number, e.g. {name}:2"
                ) from None
            if not name or weight <= 0:
                raise LoadTestError(f"--model '{item}': write NAME or NAME:WEIGHT with a weight above 0")
            if any(name == other for other, _ in models):
                raise LoadTestError(f"--model '{name}' is given twice; give each model once (NAME:WEIGHT)")
            models.append((name, weight))
    if not models:
        raise LoadTestError("no model to load: pass --model NAME (repeat it, or NAME:WEIGHT, for several)")
    return tuple(models)


@dataclass(frozen=True)
class HarnessOptions:
    """The options every process of one test shares.

    Attributes:
        host: The server URL (Locust's ``--host``); see :mod:`generator.loadtest.target`.
        models: ``(name, weight)`` pairs; each request goes to one model, picked by weight.
        protocol: ``"http"``, ``"grpc"`` or None (from the URL's scheme).
        grpc_url: The gRPC endpoint when ``host`` is an ``http://`` URL and the protocol is gRPC.
        batch_size: Samples per request.
        data: A data file of real samples, or None for generated values.
        seed: Seed of the generated values.
        request_timeout: Seconds a request may take before it counts as failed.
        shapes: ``--shape NAME:DIMS`` values: the dims of inputs with -1 axes.
        params: ``--param NAME=VALUE`` values (see :mod:`~generator.loadtest.parameters`).
        sequence_length: Requests per sequence of a stateful model.
        sequence_length_variation: How much a sequence's length varies, in percent.
        sequence_id_range: ``START[:END]`` of the correlation IDs, or None (from 1).
        sequences_per_user: Sequences each user keeps going at once.
        processes: Load processes that share the correlation IDs (Locust workers; 1: this one).
    """

    host: str
    models: tuple[tuple[str, float], ...]
    protocol: str | None = None
    grpc_url: str | None = None
    batch_size: int = 1
    data: str | None = None
    seed: int = 0
    request_timeout: float = _DEFAULT_TIMEOUT
    shapes: tuple[str, ...] = ()
    params: tuple[str, ...] = ()
    sequence_length: int = default("sequence_length")
    sequence_length_variation: float = default("sequence_length_variation")
    sequence_id_range: str | None = None
    sequences_per_user: int = 1
    processes: int = 1

    def sequence_settings(self) -> SequenceSettings:
        """The sequence settings (checked).

        Raises:
            LoadTestError: A bad sequence option.
        """
        start, end = parse_id_range(self.sequence_id_range)
        settings = SequenceSettings(
            self.sequence_length, self.sequence_length_variation, start, end, self.sequences_per_user
        )
        settings.check(processes=self.processes)
        return settings


def options_from(parsed: Any, host: str | None) -> HarnessOptions:
    """Read the harness's options from Locust's ``parsed_options`` and the environment's host.

    Raises:
        LoadTestError: An option is missing or malformed.
    """
    return HarnessOptions(
        host=host or "",
        models=parse_models(getattr(parsed, "models", None)),
        protocol=getattr(parsed, "protocol", None) or None,
        grpc_url=getattr(parsed, "grpc_url", None) or None,
        batch_size=int(getattr(parsed, "batch_size", 1) or 1),
        data=getattr(parsed, "data", None) or None,
        seed=int(getattr(parsed, "seed", 0) or 0),
        request_timeout=float(getattr(parsed, "request_timeout", None) or _DEFAULT_TIMEOUT),
        shapes=tuple(getattr(parsed, "input_shapes", None) or ()),
        params=tuple(getattr(parsed, "params", None) or ()),
        sequence_length=int(_given(parsed, "sequence_length", default("sequence_length"))),
        sequence_length_variation=float(
            _given(parsed, "sequence_length_variation", default("sequence_length_variation"))
        ),
        sequence_id_range=getattr(parsed, "sequence_id_range", None) or None,
        sequences_per_user=int(_given(parsed, "sequences_per_user", 1)),
        processes=max(
            1, int(getattr(parsed, "load_processes", None) or getattr(parsed, "expect_workers", 1) or 1)
        ),
    )


def _given(parsed: Any, name: str, fallback: Any) -> Any:
    value = getattr(parsed, name, None)
    return fallback if value is None else value


@dataclass
class Plan:
    """The resolved test: models, their request pools, and per-protocol prebuilt requests.

    Attributes:
        options: What it was built from.
        target: The endpoint for ``options.protocol``.
        server: The server's metadata (``name``, ``version``, ...).
        models: One :class:`ModelInfo` per model, in ``options.models`` order.
        weights: The models' weights, same order.
        batches: The request pool of each model, same order.
        pipelines: The steps of each model that is an ensemble (see :mod:`~generator.loadtest.pipelines`).
    """

    options: HarnessOptions
    target: Target
    server: dict[str, Any]
    models: list[ModelInfo]
    weights: list[float]
    batches: list[list[Batch]]
    pipelines: dict[str, tuple[Step, ...]] = field(default_factory=dict)
    params: dict[str, ParamValue] = field(default_factory=dict)
    _requests: dict[str, list[Any]] = field(default_factory=dict, repr=False)
    _lock: Any = field(default_factory=RLock, repr=False)
    _grpc_channel: GrpcChannel | None = field(default=None, repr=False)
    _ids: SequenceIds | None = field(default=None, repr=False)

    @property
    def batch_size(self) -> int:
        """Samples per request."""
        return self.options.batch_size

    @property
    def has_sequences(self) -> bool:
        """Whether a model of the test is stateful (its requests go in sequences)."""
        return any(m.sequence is not None for m in self.models)

    @property
    def has_streams(self) -> bool:
        """Whether a model of the test is decoupled (its requests go on gRPC streams)."""
        return any(m.decoupled for m in self.models)

    def sequence_ids(self, process: int = 0) -> SequenceIds:
        """This process's correlation IDs (process ``process`` of the test's, e.g. a Locust worker's index)."""
        with self._lock:
            if self._ids is None:
                settings = self.options.sequence_settings()
                self._ids = SequenceIds(settings.id_start, settings.id_end, process, self.options.processes)
            return self._ids

    def target_for(self, protocol: str) -> Target:
        """The endpoint for ``protocol`` (the plan's own, or derived from the same host)."""
        if protocol == self.target.protocol:
            return self.target
        return resolve_target(self.options.host, protocol, self.options.grpc_url)

    def requests(self, protocol: str) -> list[Any]:
        """The prebuilt requests of every model for ``protocol`` (built on first use)."""
        with self._lock:
            if protocol not in self._requests:
                built: list[Any] = []
                for info, batches in zip(self.models, self.batches, strict=True):
                    parameters = {
                        k: v for k, v in self.params.items() if k not in {s.name for s in info.inputs}
                    }
                    if protocol == "http":
                        built.append(HttpRequests(self.target_for("http"), info, batches, parameters))
                    else:
                        built.append(GrpcRequests(info, batches, parameters, streaming=info.decoupled))
                self._requests[protocol] = built
            return self._requests[protocol]

    def connect(self, protocol: str) -> HttpConnection | GrpcConnection:
        """A new connection for one user (HTTP/1.1 keep-alive, or its own HTTP/2 connection for gRPC)."""
        target = self.target_for(protocol)
        timeout = self.options.request_timeout
        if protocol == "http":
            return HttpConnection(target, timeout)
        with self._lock:
            if self._grpc_channel is None:
                self._grpc_channel = GrpcChannel(target)
        return GrpcConnection(self._grpc_channel, timeout)

    def inferences_per_request(self, index: int) -> int:
        """Inferences one request to model ``index`` carries (its batch size, 1 without a batch axis)."""
        return self.options.batch_size if self.models[index].max_batch_size > 0 else 1

    @property
    def statistics_models(self) -> list[str]:
        """The models whose statistics a run snapshots: those it loads, then their pipelines' steps."""
        names = [m.name for m in self.models]
        names += [step.model for steps in self.pipelines.values() for step in steps]
        return list(dict.fromkeys(names))

    def check_replies(self, protocol: str) -> dict[str, dict[str, dict[str, Any]]]:
        """Send each model's first request once and check its reply, before any load starts.

        The request goes through the users' own prebuilt requests and client; the reply is decoded
        (text outputs too) and every output the model declares must be there, with its datatype and a
        shape that fits its dims and the request's batch.

        Returns:
            Per model, per output: ``{"datatype", "shape"}`` as the reply carried them.

        Raises:
            LoadTestError: A request failed, or a reply does not match the model's outputs.
        """
        requests = self.requests(protocol)
        connection = self.connect(protocol)
        seen: dict[str, dict[str, dict[str, Any]]] = {}
        try:
            for info, pool, batches in zip(self.models, requests, self.batches, strict=True):
                extra = None
                if info.sequence is not None:  # a sequence of one request: START and END
                    sequence_id = self.sequence_ids().next()
                    extra = pool.encode(
                        sequence_parameters(
                            str(sequence_id) if info.sequence.string_ids else sequence_id, True, True
                        )
                    )
                try:
                    outputs = connection.reply(pool, 0, extra)
                except Exception as error:
                    raise LoadTestError(
                        f"model '{info.name}' failed the harness's first request before the load started "
                        f"({_message(error)}); check what it is sent (--data, --shape, --batch-size) against "
                        "the model"
                    ) from None
                if info.decoupled and not outputs:
                    raise LoadTestError(
                        f"model '{info.name}' streamed no output for the harness's first request; give its "
                        "generation settings, e.g. --param max_tokens=16"
                    )
                problems = reply_problems(info, batches[0], outputs)
                if problems:
                    raise LoadTestError(
                        f"model '{info.name}' answered the first request with {'; '.join(problems)}"
                    )
                seen[info.name] = {
                    name: {"datatype": tensor.datatype, "shape": list(tensor.array.shape)}
                    for name, tensor in outputs.items()
                }
        finally:
            connection.close()
        return seen


def build_plan(options: HarnessOptions) -> Plan:
    """Resolve the target, check the server and every model, and build the request pools.

    Raises:
        LoadTestError: The server is unreachable, a model is unknown, or the inputs cannot be built.
    """
    target = resolve_target(options.host or None, options.protocol, options.grpc_url)
    shapes = parse_input_shapes(options.shapes)
    params = parse_params(options.params)
    options.sequence_settings()  # checked before the server is asked
    samples = load_payload_samples(options.data) if options.data else None
    with ServerControl(target, timeout=min(options.request_timeout, 10.0), error=LoadTestError) as control:
        server = control.check_ready()
        models = []
        pipelines = {}
        for name, _ in options.models:
            metadata, config = control.model(name)
            is_ensemble = (config.get("platform") or metadata.get("platform")) == "ensemble"
            steps = pipeline_steps(name, control.config) if is_ensemble else ()
            stateful, decoupled = _through_steps(steps, control.config)
            info = model_info(metadata, config, images=image_inputs(name, control.config), sequence=stateful)
            if decoupled and not info.decoupled:
                info = replace(info, decoupled=True)
            models.append(info)
            if steps:
                pipelines[name] = steps
    check_input_shapes(shapes, models)
    _check_modes(models, target.protocol, options.batch_size)
    batches = [
        make_batches(m, options.batch_size, seed=options.seed, samples=samples, shapes=shapes, values=params)
        for m in models
    ]
    logger.info(
        "load plan: %s over %s, batch %d", ", ".join(m.name for m in models), target.url, options.batch_size
    )
    return Plan(options, target, server, models, [w for _, w in options.models], batches, pipelines, params)


def _through_steps(
    steps: tuple[Step, ...], config_of: Callable[[str], dict[str, Any]]
) -> tuple[SequenceModel | None, bool]:
    """An ensemble's stateful step (the first) and whether a step is decoupled (then so is the ensemble)."""
    stateful = None
    decoupled = False
    for step in steps:
        config = config_of(step.model)
        stateful = stateful or sequence_model(config, through=step.model)
        policy = config.get("model_transaction_policy")
        decoupled = decoupled or (isinstance(policy, dict) and bool(policy.get("decoupled")))
    return stateful, decoupled


def _check_modes(models: list[ModelInfo], protocol: str, batch_size: int) -> None:
    """Refuse what Triton would refuse of stateful and decoupled models, before any load.

    Raises:
        LoadTestError: A decoupled model over HTTP, or a batch above 1 for a stateful model.
    """
    for info in models:
        if info.decoupled and protocol != "grpc":
            raise LoadTestError(
                f"model '{info.name}' is decoupled (it streams its responses), which Triton serves over gRPC "
                "streaming only; pass --protocol grpc or a grpc:// URL"
            )
        if info.sequence is not None and batch_size != 1:
            raise LoadTestError(
                f"model '{info.name}' is stateful (sequence batching), and Triton takes one sample per request "
                f"of a sequence; use --batch-size 1, not {batch_size}"
            )


def reply_problems(info: ModelInfo, batch: Batch, outputs: dict[str, ReplyTensor]) -> list[str]:
    """What is wrong with a reply to ``batch``: missing outputs, other datatypes, shapes that do not fit."""
    problems = []
    rows = len(next(iter(batch.values()))) if info.max_batch_size > 0 and batch else None
    for spec in info.outputs:
        tensor = outputs.get(spec.name)
        if tensor is None:
            problems.append(f"no output '{spec.name}' (it sent: {', '.join(sorted(outputs)) or 'none'})")
            continue
        if tensor.datatype != spec.datatype:
            problems.append(
                f"output '{spec.name}' as {tensor.datatype}, but the model declares {spec.datatype}"
            )
        expected = (rows, *spec.dims) if rows is not None else spec.dims
        shape = tuple(tensor.array.shape)
        if len(shape) != len(expected) or any(
            e >= 0 and e != s for s, e in zip(shape, expected, strict=False)
        ):
            problems.append(
                f"output '{spec.name}' of shape {list(shape)}, but a request of this batch takes "
                f"{list(expected)} (-1 is free)"
            )
    return problems


def _message(error: BaseException) -> str:
    message = error.message() if hasattr(error, "message") and callable(error.message) else str(error)
    return " ".join(str(message).split()) or type(error).__name__


_plans: dict[HarnessOptions, Plan] = {}
_plans_lock = RLock()  # a gevent lock: users build the plan in greenlets


def plan_for(parsed: Any, host: str | None) -> Plan:
    """The plan for these options in this process, built once and shared by every user."""
    options = options_from(parsed, host)
    with _plans_lock:
        plan = _plans.get(options)
        if plan is None:
            plan = _plans[options] = build_plan(options)
        return plan


def remember_plan(plan: Plan) -> None:
    """Make ``plan`` the one :func:`plan_for` returns for its options (the orchestrator built it already)."""
    with _plans_lock:
        _plans[plan.options] = plan
