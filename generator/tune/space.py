"""The settings a tune searches, the space of them for one model, and how a point becomes a config.

A :class:`Settings` is one candidate serving configuration: instance count (per GPU with GPUs), the
backend's thread count, ``max_batch_size``, the dynamic batcher (on or off, its queue delay and preferred
batch sizes) and, on GPUs, which ones. A :class:`Space` is one ordered list of values per dimension; a
point is one index per dimension, so a search can step to a neighbouring value. Points that differ only
in a dimension that does not apply (the queue delay with the batcher off) are the same settings.

:func:`config_json` turns settings into the model config JSON Triton's model control loads in place of
the repository's ``config.pbtxt``; :func:`spec_settings` into the spec keys ``build`` reads back from the
tuned file.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
from dataclasses import asdict, dataclass
from typing import Any

from generator.core.errors import TuneError

__all__ = [
    "THREAD_PARAMETER",
    "Dimension",
    "Settings",
    "Space",
    "SpaceOptions",
    "config_json",
    "spec_settings",
    "start_settings",
    "thread_parameter",
    "without_response_cache",
]

#: The backend parameter a tune sets for the thread count (ONNX Runtime's, and the embedded backend's).
THREAD_PARAMETER = "intra_op_thread_count"
#: The PyTorch backend's name for it (it reads only its own upper-case keys).
TORCH_THREAD_PARAMETER = "INTRA_OP_THREAD_COUNT"


def thread_parameter(config: dict[str, Any]) -> str:
    """The parameter that sets a model's thread count in its backend (Triton's JSON config)."""
    if config.get("platform") == "pytorch_libtorch" or config.get("backend") == "pytorch":
        return TORCH_THREAD_PARAMETER
    return THREAD_PARAMETER


@dataclass(frozen=True)
class Settings:
    """One candidate serving configuration.

    Attributes:
        instances: Model instances (per GPU when ``gpus`` is set).
        threads: The backend's thread count per instance (``intra_op_thread_count``), None: the backend's own.
        max_batch_size: Triton's ``max_batch_size`` (0: the model does not batch).
        batching: Whether the dynamic batcher is on.
        queue_delay_us: Its ``max_queue_delay_microseconds`` (0 with the batcher off).
        preferred: Its ``preferred_batch_size`` (empty with the batcher off).
        gpus: KIND_GPU instances on these GPUs; None: the base config's kind (KIND_CPU on a CPU machine).
        sequence: A stateful model's sequence batcher strategy (``direct`` or ``oldest``); then
            ``batching`` is always on (a stateful model cannot lose its batcher), ``queue_delay_us`` is the
            sequence batcher's ``max_queue_delay_microseconds`` and ``preferred`` Oldest's preferred sizes.
            None: the dynamic batcher.
    """

    instances: int
    threads: int | None
    max_batch_size: int
    batching: bool
    queue_delay_us: int = 0
    preferred: tuple[int, ...] = ()
    gpus: tuple[int, ...] | None = None
    sequence: str | None = None

    def describe(self) -> str:
        """A short line: ``2 instances, 2 threads, max batch 64, batcher 500 us, preferred [16, 32]``."""
        parts = [
            f"{self.instances} instance{'s' if self.instances != 1 else ''}"
            + (f" per GPU on {list(self.gpus)}" if self.gpus is not None else ""),
            f"{self.threads} thread{'s' if self.threads != 1 else ''}" if self.threads else "backend threads",
        ]
        if self.max_batch_size == 0:
            parts.append("no batching")
        else:
            parts.append(f"max batch {self.max_batch_size}")
            if self.batching:
                kind = f"sequence batcher ({self.sequence})" if self.sequence else "batcher"
                batcher = f"{kind} {self.queue_delay_us} us"
                if self.preferred:
                    batcher += f", preferred {list(self.preferred)}"
                parts.append(batcher)
            else:
                parts.append("batcher off")
        return ", ".join(parts)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Settings:
        """Settings back from :meth:`as_dict`'s plain data (a trial in tune.json)."""
        gpus = data["gpus"]
        return cls(
            data["instances"], data["threads"], data["max_batch_size"], data["batching"], data["queue_delay_us"],
            tuple(data["preferred"]), tuple(gpus) if gpus is not None else None, data.get("sequence"),
        )  # fmt: skip

    def as_dict(self) -> dict[str, Any]:
        """Plain data (tune.json)."""
        data = asdict(self)
        data["preferred"] = list(self.preferred)
        data["gpus"] = list(self.gpus) if self.gpus is not None else None
        return data


@dataclass(frozen=True)
class Dimension:
    """One searched setting and its values, in order (a search steps between neighbours)."""

    name: str
    values: tuple[Any, ...]


@dataclass
class SpaceOptions:
    """What the user asked to search; None: the default values for this model and machine.

    Attributes:
        instances: Instance counts.
        threads: Thread counts; None in the list means the backend's own.
        max_batch_sizes: ``max_batch_size`` values.
        batching: Batcher on (True) and/or off (False).
        queue_delays: ``max_queue_delay_microseconds`` values.
        preferred: ``preferred_batch_size`` choices: ``"none"``, ``"max"`` (the max batch size),
            ``"start"`` (the start config's), or sizes joined with ``+`` (``"4+8"``).
        gpu_sets: GPU id sets for KIND_GPU instances (only with GPUs).
    """

    instances: list[int] | None = None
    threads: list[int | None] | None = None
    max_batch_sizes: list[int] | None = None
    batching: list[bool] | None = None
    queue_delays: list[int] | None = None
    preferred: list[str] | None = None
    gpu_sets: list[tuple[int, ...]] | None = None


def _ordered(values: list[Any], start: Any) -> tuple[Any, ...]:
    """The values with ``start`` among them, without repeats, in order (None first)."""
    unique = list(dict.fromkeys([*values, start]))
    return tuple(sorted(unique, key=lambda v: (v is not None, v if v is not None else 0)))


def _powers(limit: int) -> list[int]:
    return [2**k for k in range(0, 8) if 2**k <= limit]


def _preferred_token(token: str) -> str:
    token = token.strip()
    if token in ("none", "max", "start"):
        return token
    sizes = token.split("+")
    if not all(s.isdigit() and int(s) > 0 for s in sizes):
        raise TuneError(f"--preferred '{token}': use none, max, start, or sizes joined with + (e.g. 4+8)")
    return "+".join(str(int(s)) for s in sizes)


class Space:
    """The searched settings of one model: one :class:`Dimension` per setting, and the start point.

    Args:
        start: The settings the model is served with now (the search starts here; always in the space).
        options: The user's values per dimension (None: defaults for this machine).
        batch_limit: The largest ``max_batch_size`` the model allows (0: it does not batch).
        smallest_batch: The smallest ``max_batch_size`` that works (the warm-up and request batch size).
        cpus: CPU cores of the serving machine.

    Raises:
        TuneError: A user's value cannot work for this model.
    """

    def __init__(
        self, start: Settings, options: SpaceOptions, batch_limit: int, smallest_batch: int, cpus: int
    ) -> None:
        self.start_settings = start
        dims = [
            Dimension(
                "instances", _ordered(options.instances or _powers(min(8, max(2, 2 * cpus))), start.instances)
            ),
            Dimension("threads", _ordered(self._threads(options, start, cpus), start.threads)),
        ]
        delays = Dimension(
            "queue_delay_us", _ordered(options.queue_delays or [0, 100, 500, 2000], start.queue_delay_us)
        )
        if batch_limit > 0 and start.sequence is not None:  # the sequence batcher stays; its delay varies
            sizes = self._batch_sizes(options, start, batch_limit, smallest_batch)
            dims += [Dimension("max_batch_size", sizes), delays]
            if start.sequence == "oldest":
                dims.append(Dimension("preferred", tuple(dict.fromkeys(self._preferred(options, start)))))
        elif batch_limit > 0:
            sizes = self._batch_sizes(options, start, batch_limit, smallest_batch)
            dims += [
                Dimension("max_batch_size", sizes),
                Dimension("batching", _ordered(options.batching or [False, True], start.batching)),
                delays,
                Dimension("preferred", tuple(dict.fromkeys(self._preferred(options, start)))),
            ]
        if start.gpus is not None or options.gpu_sets:
            dims.append(Dimension("gpus", tuple(dict.fromkeys([start.gpus, *(options.gpu_sets or [])]))))
        self.dimensions: tuple[Dimension, ...] = tuple(dims)
        self.start = tuple(self._index(d, start) for d in self.dimensions)

    @staticmethod
    def _threads(options: SpaceOptions, start: Settings, cpus: int) -> list[int | None]:
        if options.threads is not None:
            return list(options.threads)
        # Without a thread count of its own in the start config, "the backend's own" is a choice too; with
        # one, it is not: the tuned file can set a parameter but not remove the spec's.
        return ([None] if start.threads is None else []) + sorted({1, max(1, cpus // 2), cpus})

    @staticmethod
    def _batch_sizes(options: SpaceOptions, start: Settings, limit: int, smallest: int) -> tuple[int, ...]:
        asked = options.max_batch_sizes or [8, 32, 128]
        bad = [s for s in asked if not smallest <= s <= limit]
        if options.max_batch_sizes and bad:
            raise TuneError(
                f"--max-batch-sizes {','.join(map(str, bad))}: this model takes max_batch_size from "
                f"{smallest} (its warm-up or request batch) to {limit}"
            )
        return _ordered([s for s in asked if smallest <= s <= limit], start.max_batch_size)

    @staticmethod
    def _preferred(options: SpaceOptions, start: Settings) -> list[str]:
        own = "start" if start.preferred else "none"  # the token that reproduces the start config
        asked = [_preferred_token(t) for t in options.preferred] if options.preferred else ["none", "max"]
        return [own, *asked]

    def _index(self, dimension: Dimension, start: Settings) -> int:
        if dimension.name == "preferred":
            return 0  # "start" when the start has preferred sizes, else "none" (see _preferred)
        return dimension.values.index(getattr(start, dimension.name))

    def settings(self, point: tuple[int, ...]) -> Settings:
        """The settings at ``point`` (dimensions that do not apply fall back to neutral values)."""
        values = {d.name: d.values[i] for d, i in zip(self.dimensions, point, strict=True)}
        max_batch = values.get("max_batch_size", 0)
        sequence = self.start_settings.sequence
        batching = (sequence is not None or bool(values.get("batching", False))) and max_batch > 0
        preferred: tuple[int, ...] = ()
        if batching:
            token = values.get("preferred", "none")
            if token == "max":
                preferred = (max_batch,)
            elif token == "start":
                preferred = tuple(p for p in self.start_settings.preferred if p <= max_batch)
            elif token != "none":
                preferred = tuple(sorted(int(p) for p in token.split("+")))
        return Settings(
            instances=values["instances"],
            threads=values["threads"],
            max_batch_size=max_batch,
            batching=batching,
            queue_delay_us=values.get("queue_delay_us", 0) if batching else 0,
            preferred=preferred,
            gpus=values.get("gpus"),
            sequence=sequence,
        )

    def neighbours(self, point: tuple[int, ...], every: bool = False) -> list[tuple[int, ...]]:
        """The points one step away along one dimension (``every``: any other value of one dimension,
        nearest first)."""
        found = []
        for axis, dimension in enumerate(self.dimensions):
            reach = len(dimension.values) if every else 2
            for distance in range(1, reach):
                for step in (-distance, distance):
                    index = point[axis] + step
                    if 0 <= index < len(dimension.values):
                        found.append((*point[:axis], index, *point[axis + 1 :]))
        return found

    def points(self) -> list[tuple[int, ...]]:
        """Every point, one per distinct settings, the start first."""
        seen = {self.settings(self.start)}
        result = [self.start]
        for point in itertools.product(*(range(len(d.values)) for d in self.dimensions)):
            settings = self.settings(point)
            if settings not in seen:
                seen.add(settings)
                result.append(point)
        return result

    def describe(self) -> dict[str, list[Any]]:
        """The dimensions as plain data (tune.json)."""
        return {d.name: [list(v) if isinstance(v, tuple) else v for v in d.values] for d in self.dimensions}


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def start_settings(config: dict[str, Any]) -> Settings:
    """The settings of a model config as Triton reports it (JSON, as from ``GET /v2/models/M/config``)."""
    groups = config.get("instance_group") or [{"count": 1, "kind": "KIND_CPU"}]
    gpu_groups = [g for g in groups if g.get("kind") == "KIND_GPU"]
    if gpu_groups:
        instances = _int(gpu_groups[0].get("count"), 1)
        gpus: tuple[int, ...] | None = tuple(sorted({_int(i) for g in gpu_groups for i in g.get("gpus", [])}))
    else:
        instances = sum(_int(g.get("count"), 1) for g in groups)
        gpus = None
    threads = (config.get("parameters") or {}).get(thread_parameter(config), {}).get("string_value")
    batcher = config.get("dynamic_batching")
    max_batch = _int(config.get("max_batch_size"))
    sequence = config.get("sequence_batching")
    if isinstance(sequence, dict):
        strategy = "oldest" if isinstance(sequence.get("oldest"), dict) else "direct"
        own = sequence.get(strategy) or {}
        return Settings(
            instances=max(1, instances),
            threads=_int(threads) or None if threads is not None else None,
            max_batch_size=max_batch,
            batching=max_batch > 0,
            queue_delay_us=_int(own.get("max_queue_delay_microseconds")) if max_batch > 0 else 0,
            preferred=tuple(sorted(_int(p) for p in own.get("preferred_batch_size", []))),
            gpus=gpus,
            sequence=strategy,
        )
    return Settings(
        instances=max(1, instances),
        threads=_int(threads) or None if threads is not None else None,
        max_batch_size=max_batch,
        batching=batcher is not None and max_batch > 0,
        queue_delay_us=_int((batcher or {}).get("max_queue_delay_microseconds"))
        if batcher is not None
        else 0,
        preferred=tuple(sorted(_int(p) for p in (batcher or {}).get("preferred_batch_size", []))),
        gpus=gpus,
    )


def config_json(base: dict[str, Any], settings: Settings) -> str:
    """The model config JSON for ``settings``: ``base`` (Triton's own JSON of the model) with them applied."""
    config = copy.deepcopy(base)
    config["max_batch_size"] = settings.max_batch_size
    if settings.sequence is not None:
        sequence = dict(config.get("sequence_batching") or {})
        own = dict(sequence.get(settings.sequence) or {})
        own["max_queue_delay_microseconds"] = settings.queue_delay_us
        if settings.sequence == "oldest":
            own["preferred_batch_size"] = list(settings.preferred)
        sequence[settings.sequence] = own
        config["sequence_batching"] = sequence
    elif settings.batching:
        batcher = dict(config.get("dynamic_batching") or {})
        batcher["max_queue_delay_microseconds"] = settings.queue_delay_us
        batcher["preferred_batch_size"] = list(settings.preferred)
        config["dynamic_batching"] = batcher
    else:
        config.pop("dynamic_batching", None)
    group: dict[str, Any] = {"count": settings.instances}
    if settings.gpus is not None:
        group.update(kind="KIND_GPU", gpus=list(settings.gpus))
    else:
        kinds = {g.get("kind") for g in base.get("instance_group") or []} - {"KIND_GPU"}
        group["kind"] = kinds.pop() if len(kinds) == 1 else "KIND_CPU"
    config["instance_group"] = [group]
    parameters = dict(config.get("parameters") or {})
    key = thread_parameter(base)
    if settings.threads is None:
        parameters.pop(key, None)
    else:
        parameters[key] = {"string_value": str(settings.threads)}
    config["parameters"] = parameters
    for warmup in config.get("model_warmup") or []:
        warmup["batch_size"] = max(1, min(_int(warmup.get("batch_size"), 1), settings.max_batch_size))
    return json.dumps(config)


def without_response_cache(config: dict[str, Any]) -> dict[str, Any] | None:
    """A model config (Triton's JSON) with its response cache turned off; None when it is not on."""
    cache = config.get("response_cache")
    if not isinstance(cache, dict) or not cache.get("enable"):
        return None
    return {**config, "response_cache": {**cache, "enable": False}}


def spec_settings(settings: Settings, threads_key: str = THREAD_PARAMETER) -> dict[str, Any]:
    """The spec keys that reproduce ``settings`` when ``build`` merges them over a model's entry.

    Args:
        settings: The tuned settings.
        threads_key: The backend's thread-count parameter (:func:`thread_parameter` of the model's config).
    """
    result: dict[str, Any] = {
        "max_batch_size": settings.max_batch_size,
        "instance_group": {"count": settings.instances},
    }
    if settings.sequence is not None and settings.max_batch_size > 0:
        sequence: dict[str, Any] = {"max_queue_delay_microseconds": settings.queue_delay_us}
        if settings.sequence == "oldest":
            sequence["preferred_batch_size"] = list(settings.preferred)
        result["sequence_batching"] = sequence
    elif settings.max_batch_size > 0:
        result["dynamic_batching"] = (
            {
                "max_queue_delay_microseconds": settings.queue_delay_us,
                "preferred_batch_size": list(settings.preferred),
            }
            if settings.batching
            else False
        )
    if settings.gpus is not None:
        result["instance_group"]["gpus"] = list(settings.gpus)
    if settings.threads is not None:
        result["parameters"] = {threads_key: settings.threads}
    return result


def cpu_count() -> int:
    """Cores this process may use (the serving machine's, for the embedded server)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1
