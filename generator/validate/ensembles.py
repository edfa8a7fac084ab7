"""Checks of an ensemble's config against the configs of its step models, as Triton makes them.

Triton checks an ensemble twice. When it reads the config it checks the data flow that the step maps
alone describe (every step names a model and maps inputs and outputs, no tensor is written twice,
every ensemble input is read, every ensemble output is written, no tensor is left unused, none waits
on a cycle). When the step models are loaded it checks each step against its model's completed config
(every ``input_map`` key is an input of the model, every ``output_map`` key one of its outputs, every
non-optional input is mapped, the data type and shape of each tensor agree wherever it is named, the
ensemble's ``max_batch_size`` is within each batching step's, no step mixes tensors of different
decoupled models) and the model graph (each step model exists and serves the version asked for, no
ensemble contains itself). :func:`check_ensemble` makes all of these checks at once, plus those Triton
only fails at inference time (two readers that need different shapes of one tensor, a non-batching
step that can take one batch size only), and reports each finding at its place in the config.

Shapes are compared as Triton compares them: ``-1`` matches any size, and a tensor shared by a
batching and a non-batching model matches when the batching model's shape with the batch axis put in
front (``[-1, *dims]``) matches the other's. The ensemble's own inputs and outputs are taken with
their ``reshape`` when they have one; a step model's with their ``dims`` (Triton hands a step the
shape before that model's own reshape).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field

from tritonclient.grpc import model_config_pb2

from generator.validate.config import closest, shape_text, type_name

ENSEMBLE_PLATFORM = "ensemble"

ConfigPath = tuple[str | int, ...]
"""Keys and indexes into a config, e.g. ``("ensemble_scheduling", "step", 1, "input_map", "ids")``."""

_MAP_FIELDS = frozenset({"input_map", "output_map", "parameters"})
_STEP = ("ensemble_scheduling", "step")


@dataclass(frozen=True)
class EnsembleFinding:
    """One problem of an ensemble.

    Attributes:
        severity: ``error`` (Triton refuses the ensemble, or fails its requests) or ``warning``.
        path: Where in the ensemble's config, as keys and indexes (see :func:`format_path`).
        message: One line that says what is wrong and how to fix it.
    """

    severity: str
    path: ConfigPath
    message: str

    def __str__(self) -> str:
        return f"{self.severity}: {format_path(self.path)}: {self.message}"


def format_path(path: ConfigPath) -> str:
    """A config path as text: ``ensemble_scheduling.step[1].input_map["ids"]``.

    Indexes print as ``[i]``; the key after a map field (``input_map``, ``output_map``,
    ``parameters``) prints quoted in brackets; other keys are joined with dots.
    """
    text = ""
    previous: str | int | None = None
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        elif previous in _MAP_FIELDS:
            text += f"[{json.dumps(part)}]"
        else:
            text += f".{part}" if text else part
        previous = part
    return text


def is_ensemble(config: model_config_pb2.ModelConfig) -> bool:
    """Whether a config describes an ensemble (its platform, or ensemble scheduling)."""
    return config.platform == ENSEMBLE_PLATFORM or config.HasField("ensemble_scheduling")


@dataclass(frozen=True)
class _Use:
    """One place that names an ensemble tensor, with the type and shape it gives it there."""

    path: ConfigPath
    who: str
    data_type: int
    dims: tuple[int, ...]
    batching: bool

    @property
    def full_dims(self) -> tuple[int, ...]:
        return (-1, *self.dims) if self.batching else self.dims


@dataclass
class _Flow:
    """The data flow of an ensemble as its maps describe it (no step model needed)."""

    inputs: dict[str, int] = field(default_factory=dict)  # ensemble input -> its index
    outputs: dict[str, int] = field(default_factory=dict)
    writer: dict[str, tuple[int, str]] = field(default_factory=dict)  # tensor -> (step, model output)
    readers: dict[str, list[int]] = field(default_factory=dict)  # tensor -> steps that read it
    ready: set[str] = field(default_factory=set)  # tensors that get a value
    order: list[int] = field(default_factory=list)  # steps that run, in an order they can run


def _steps(config: model_config_pb2.ModelConfig) -> list[model_config_pb2.ModelEnsembling.Step]:
    return list(config.ensemble_scheduling.step)


def _same_dims(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    return len(a) == len(b) and all(x == y or -1 in (x, y) for x, y in zip(a, b, strict=True))


def _agree(a: _Use, b: _Use) -> bool:
    """Triton's shape test: the shapes match, or the full shapes (batch axis in front) do."""
    return _same_dims(a.dims, b.dims) or _same_dims(a.full_dims, b.full_dims)


def _step_label(index: int, step: model_config_pb2.ModelEnsembling.Step) -> str:
    return f"step {index} (model '{step.model_name}')"


def _check_fields(config: model_config_pb2.ModelConfig) -> list[EnsembleFinding]:
    """What Triton refuses in an ensemble config before it looks at any step model."""
    found: list[EnsembleFinding] = []

    def error(path: ConfigPath, message: str) -> None:
        found.append(EnsembleFinding("error", path, message))

    if not config.HasField("ensemble_scheduling"):
        error(("ensemble_scheduling",), "an ensemble needs ensemble_scheduling with its steps; add them")
        return found
    if config.platform != ENSEMBLE_PLATFORM:
        error(
            ("platform",), f'only an ensemble takes ensemble_scheduling; set platform: "{ENSEMBLE_PLATFORM}"'
        )
    present = {
        "instance_group": bool(config.instance_group),
        "optimization": config.HasField("optimization"),
        "model_warmup": bool(config.model_warmup),
    }
    for name in (n for n, there in present.items() if there):
        error((name,), f"an ensemble takes no {name} (the models of its steps have their own); remove it")
    if not config.ensemble_scheduling.step:
        error(_STEP, "the ensemble has no step; add one step per model it runs")
    for index, step in enumerate(_steps(config)):
        if not step.model_name:
            error((*_STEP, index, "model_name"), f"step {index} names no model; set model_name")
        if not step.input_map:
            error(
                (*_STEP, index, "input_map"), f"{_step_label(index, step)} maps no input; add its input_map"
            )
        if not step.output_map:
            error(
                (*_STEP, index, "output_map"),
                f"{_step_label(index, step)} maps no output; add its output_map",
            )
    return found


def _flow(config: model_config_pb2.ModelConfig) -> tuple[_Flow, list[EnsembleFinding]]:
    """The tensors each step reads and writes; tensors written twice and steps writing ensemble inputs."""
    flow = _Flow()
    found: list[EnsembleFinding] = []
    for index, tensor in enumerate(config.input):
        flow.inputs.setdefault(tensor.name, index)
    for index, tensor in enumerate(config.output):
        flow.outputs.setdefault(tensor.name, index)
    for index, step in enumerate(_steps(config)):
        for key, tensor in sorted(step.output_map.items()):
            path = (*_STEP, index, "output_map", key)
            if tensor in flow.writer:
                other, other_key = flow.writer[tensor]
                found.append(
                    EnsembleFinding(
                        "error",
                        path,
                        f"tensor '{tensor}' is already written by step {other} (output '{other_key}'); "
                        "Triton lets one output write a tensor: give this one another name",
                    )
                )
                continue
            flow.writer[tensor] = (index, key)
            if tensor in flow.inputs:
                found.append(
                    EnsembleFinding(
                        "warning",
                        path,
                        f"tensor '{tensor}' is an ensemble input and {_step_label(index, step)} writes it "
                        "too; the steps that read it may see either value: give this output its own name",
                    )
                )
        for tensor in step.input_map.values():
            readers = flow.readers.setdefault(tensor, [])
            if index not in readers:
                readers.append(index)
    flow.ready = set(flow.inputs)
    waiting = list(range(len(config.ensemble_scheduling.step)))
    progress = True
    while progress:
        progress = False
        for index in list(waiting):
            step = config.ensemble_scheduling.step[index]
            if all(t in flow.ready for t in step.input_map.values()):
                waiting.remove(index)
                flow.order.append(index)
                flow.ready.update(step.output_map.values())
                progress = True
    return flow, found


def _cycles(config: model_config_pb2.ModelConfig, flow: _Flow) -> list[list[int]]:
    """Each cycle of steps that wait on each other's tensors, as step indexes in data-flow order."""
    steps = _steps(config)
    after: dict[int, list[int]] = {i: [] for i in range(len(steps))}  # step -> steps that read its output
    for index, step in enumerate(steps):
        for tensor in step.output_map.values():
            for reader in flow.readers.get(tensor, []):
                if reader not in after[index]:
                    after[index].append(reader)
    stuck = [i for i in range(len(steps)) if i not in flow.order]
    cycles: list[list[int]] = []
    covered: set[int] = set()
    for start in stuck:
        if start in covered:
            continue
        # the shortest way back to ``start``, breadth first
        paths = {start: [start]}
        queue = [start]
        cycle: list[int] | None = None
        while queue and cycle is None:
            node = queue.pop(0)
            for nxt in after[node]:
                if nxt == start:
                    cycle = paths[node]
                    break
                if nxt not in paths and nxt in stuck:
                    paths[nxt] = [*paths[node], nxt]
                    queue.append(nxt)
        if cycle is not None and not covered.intersection(cycle):
            cycles.append(cycle)
            covered.update(cycle)
    return cycles


def _check_reads(config: model_config_pb2.ModelConfig, flow: _Flow) -> list[EnsembleFinding]:
    """Each tensor a step reads is an ensemble input or written by a step."""
    found: list[EnsembleFinding] = []
    known = [*flow.inputs, *(t for t in flow.writer if t not in flow.inputs)]
    for index, step in enumerate(_steps(config)):
        for key, tensor in sorted(step.input_map.items()):
            if tensor in flow.inputs or tensor in flow.writer:
                continue
            close = closest(tensor, known)
            hint = f"did you mean '{close}'?" if close else "map it from an ensemble input or a step's output"
            found.append(
                EnsembleFinding(
                    "error",
                    (*_STEP, index, "input_map", key),
                    f"tensor '{tensor}' is neither an ensemble input nor written by any step; {hint}",
                )
            )
    return found


def _check_cycles(config: model_config_pb2.ModelConfig, flow: _Flow) -> list[EnsembleFinding]:
    """No steps wait on each other's tensors."""
    found: list[EnsembleFinding] = []
    steps = _steps(config)
    for cycle in _cycles(config, flow):
        ring = " -> ".join(_step_label(i, steps[i]) for i in [*cycle, cycle[0]])
        members = set(cycle)
        tensors = sorted(
            {t for i in cycle for t in steps[i].output_map.values() if members & set(flow.readers.get(t, []))}
        )
        found.append(
            EnsembleFinding(
                "error",
                (*_STEP, cycle[0]),
                f"steps wait on each other in a cycle, {ring}, through tensor(s) {', '.join(tensors)}, so none "
                "of them ever runs; break the cycle",
            )
        )
    return found


def _check_ends(flow: _Flow) -> list[EnsembleFinding]:
    """Every ensemble output is written, every ensemble input is read, every written tensor is used."""
    found: list[EnsembleFinding] = []
    unread = [t for t in flow.writer if t not in flow.readers and t not in flow.outputs]
    missing = [t for t in flow.outputs if t not in flow.writer and t not in flow.inputs]
    for tensor in missing:
        close = closest(tensor, unread)
        hint = (
            f"did you mean '{close}' (written by step {flow.writer[close][0]}, read by none)?"
            if close
            else "map a step's output to it"
        )
        found.append(
            EnsembleFinding(
                "error",
                ("output", flow.outputs[tensor]),
                f"ensemble output '{tensor}' is written by no step; {hint}",
            )
        )
    for tensor, index in flow.inputs.items():
        if tensor not in flow.readers:
            found.append(
                EnsembleFinding(
                    "error",
                    ("input", index),
                    f"ensemble input '{tensor}' is read by no step, which Triton refuses; map it in a step's "
                    "input_map or remove it",
                )
            )
    for tensor in unread:
        index, key = flow.writer[tensor]
        close = closest(tensor, missing)
        hint = (
            f"did you mean ensemble output '{close}'?"
            if close
            else "read it in a step, add it to the ensemble's outputs, or drop this output_map entry"
        )
        found.append(
            EnsembleFinding(
                "error",
                (*_STEP, index, "output_map", key),
                f"tensor '{tensor}' is written but read by no step and is no ensemble output, which Triton "
                f"refuses; {hint}",
            )
        )
    return found


def _check_model(
    index: int,
    step: model_config_pb2.ModelEnsembling.Step,
    steps: Mapping[str, model_config_pb2.ModelConfig | None],
    versions: Mapping[str, Collection[int]] | None,
    ensemble: str,
) -> list[EnsembleFinding]:
    """The step's model: not the ensemble itself, present, serving the version asked for."""
    name = step.model_name
    path = (*_STEP, index)
    if name == ensemble:
        return [
            EnsembleFinding(
                "error",
                (*path, "model_name"),
                f"step {index} runs the ensemble '{ensemble}' itself, a circular dependency Triton refuses; "
                "name the model this step should run",
            )
        ]
    if name not in steps:
        choices = [n for n in steps if n != ensemble]
        close = closest(name, choices)
        hint = (
            f"did you mean '{close}'?"
            if close
            else f"the repository has: {', '.join(sorted(choices)) or '(none)'}"
        )
        return [EnsembleFinding("error", (*path, "model_name"), f"there is no model '{name}'; {hint}")]
    version = step.model_version
    if version < -1:
        return [
            EnsembleFinding(
                "error",
                (*path, "model_version"),
                f"model_version {version} is no version; use -1 (the latest served) or a version number",
            )
        ]
    served = versions.get(name) if versions is not None else None
    if version != -1 and served and version not in served:
        listed = ", ".join(str(v) for v in sorted(served))
        return [
            EnsembleFinding(
                "error",
                (*path, "model_version"),
                f"model '{name}' serves version(s) {listed}, not {version}; use -1 (the latest served) or one of "
                "those",
            )
        ]
    return []


def _check_maps(
    index: int, step: model_config_pb2.ModelEnsembling.Step, model: model_config_pb2.ModelConfig
) -> list[EnsembleFinding]:
    """The step's maps against its model's inputs and outputs.

    A key that is no tensor of the model is matched to the closest name, or to the one tensor of its
    kind the step leaves unmapped; an unmapped input that such a key stands for is not reported again.
    """
    found: list[EnsembleFinding] = []
    path = (*_STEP, index)
    label = f"model '{step.model_name}'"
    inputs = {t.name: t for t in model.input}
    outputs = [t.name for t in model.output]
    required = [n for n, t in inputs.items() if n not in step.input_map and not t.optional]
    suggested: set[str] = set()
    for kind, mapping, names, left in (
        ("input", step.input_map, list(inputs), required),
        ("output", step.output_map, outputs, [n for n in outputs if n not in step.output_map]),
    ):
        wrong = [key for key in sorted(mapping) if key not in names]
        for key in wrong:
            close = closest(key, names) or (left[0] if len(left) == 1 and len(wrong) == 1 else None)
            suggested.add(close or "")
            hint = f"did you mean '{close}'?" if close else f"its {kind}s are: {', '.join(names) or '(none)'}"
            found.append(
                EnsembleFinding(
                    "error", (*path, f"{kind}_map", key), f"'{key}' is not an {kind} of {label}; {hint}"
                )
            )
    for name in required:
        if name not in suggested:
            found.append(
                EnsembleFinding(
                    "error",
                    (*path, "input_map"),
                    f"input '{name}' of {label} is mapped to no tensor and is not optional; map it in input_map",
                )
            )
    return found


def _check_batch(
    config: model_config_pb2.ModelConfig, index: int, model: model_config_pb2.ModelConfig, name: str
) -> list[EnsembleFinding]:
    if model.max_batch_size != 0 and model.max_batch_size < config.max_batch_size:
        return [
            EnsembleFinding(
                "error",
                ("max_batch_size",),
                f"max_batch_size {config.max_batch_size} exceeds the {model.max_batch_size} of step {index}'s model "
                f"'{name}'; lower it to {model.max_batch_size} or raise the model's",
            )
        ]
    return []


def _uses(
    config: model_config_pb2.ModelConfig, models: Mapping[int, model_config_pb2.ModelConfig]
) -> dict[str, list[_Use]]:
    """Every place each tensor is named, in Triton's order: ensemble inputs, outputs, then each step."""
    uses: dict[str, list[_Use]] = {}
    batching = config.max_batch_size > 0
    for kind, tensors in (("input", config.input), ("output", config.output)):
        for position, tensor in enumerate(tensors):
            dims = tuple(tensor.reshape.shape) if tensor.HasField("reshape") else tuple(tensor.dims)
            uses.setdefault(tensor.name, []).append(
                _Use((kind, position), f"ensemble {kind} '{tensor.name}'", tensor.data_type, dims, batching)
            )
    for index, step in enumerate(_steps(config)):
        model = models.get(index)
        if model is None:
            continue
        declared = {t.name: t for t in model.input} | {t.name: t for t in model.output}
        for kind, mapping in (("input", step.input_map), ("output", step.output_map)):
            for key, tensor in sorted(mapping.items()):
                if key in declared:
                    io = declared[key]
                    uses.setdefault(tensor, []).append(
                        _Use(
                            (*_STEP, index, f"{kind}_map", key),
                            f"model '{step.model_name}' {kind} '{key}'",
                            io.data_type,
                            tuple(io.dims),
                            model.max_batch_size > 0,
                        )
                    )
    return uses


def _check_tensors(
    config: model_config_pb2.ModelConfig, uses: dict[str, list[_Use]]
) -> list[EnsembleFinding]:
    """Each tensor's data type and shape agree wherever it is named (once per place that disagrees)."""
    found: list[EnsembleFinding] = []
    for tensor, named in uses.items():
        for position, use in enumerate(named):
            for earlier in named[:position]:
                if use.data_type != earlier.data_type:
                    found.append(
                        EnsembleFinding(
                            "error",
                            use.path,
                            f"tensor '{tensor}' is {type_name(use.data_type)} as {use.who} but "
                            f"{type_name(earlier.data_type)} as {earlier.who}; make the data types equal",
                        )
                    )
                    break
                if not _agree(use, earlier):
                    found.append(
                        EnsembleFinding(
                            "error",
                            use.path,
                            f"tensor '{tensor}' has shape {shape_text(use.full_dims)} as {use.who} but "
                            f"{shape_text(earlier.full_dims)} as {earlier.who}; make the shapes agree (-1 matches "
                            "any size)",
                        )
                    )
                    break
    found += _check_batch_only(config, uses)
    return found


def _check_batch_only(
    config: model_config_pb2.ModelConfig, uses: dict[str, list[_Use]]
) -> list[EnsembleFinding]:
    """A non-batching step fed a batched tensor takes only the batch sizes its first dimension allows.

    Triton passes the batched tensor on whole when its shape fits the step's dims, else strips the batch
    axis when the batch size is 1, else the request fails at inference time.
    """
    if config.max_batch_size <= 1:
        return []
    found: list[EnsembleFinding] = []
    for tensor, named in uses.items():
        sources = [u for u in named if u.path[0] == "input" or u.path[-2:-1] == ("output_map",)]
        if not sources or not sources[0].batching:
            continue
        source = sources[0]
        for use in named:
            if use.path[-2:-1] != ("input_map",) or use.batching or not _agree(use, source):
                continue
            whole = len(use.dims) == len(source.dims) + 1 and _same_dims(use.dims, source.full_dims)
            if whole and use.dims[0] == -1:
                continue
            sizes = f"batch size is {use.dims[0]}" if whole else "batch size is 1"
            found.append(
                EnsembleFinding(
                    "warning",
                    use.path,
                    f"{use.who} does not batch and takes tensor '{tensor}' as {shape_text(use.dims)}, so requests "
                    f"to the ensemble fail at inference time unless their {sizes}; give the model a -1 first "
                    f"dimension ({shape_text((-1, *source.dims))}) or max_batch_size >= {config.max_batch_size}",
                )
            )
    return found


def _check_decoupled(
    config: model_config_pb2.ModelConfig, flow: _Flow, models: Mapping[int, model_config_pb2.ModelConfig]
) -> list[EnsembleFinding]:
    """No step reads tensors that come from different decoupled models (or from one and the inputs)."""
    steps = _steps(config)
    origin: dict[str, int] = dict.fromkeys(flow.inputs, -1)  # tensor -> decoupled step it comes from
    found: list[EnsembleFinding] = []
    for index in flow.order:
        step = steps[index]
        sources = {origin[t] for t in step.input_map.values() if t in origin}
        if len(sources) > 1:
            named = [
                f"decoupled {_step_label(s, steps[s])}" if s >= 0 else "the ensemble's inputs"
                for s in sorted(sources)
            ]
            found.append(
                EnsembleFinding(
                    "error",
                    (*_STEP, index),
                    f"{_step_label(index, step)} reads tensors from {' and from '.join(named)}, which Triton refuses "
                    "(their responses cannot be paired); feed it from one of them only",
                )
            )
        model = models.get(index)
        decoupled = model is not None and model.model_transaction_policy.decoupled
        label = index if decoupled else min(sources, default=-1)
        for tensor in step.output_map.values():
            origin.setdefault(tensor, label)
    return found + _check_decoupled_outputs(config, origin)


def _check_decoupled_outputs(
    config: model_config_pb2.ModelConfig, origin: dict[str, int]
) -> list[EnsembleFinding]:
    """The ensemble's outputs all come from one decoupled model's responses, or none does.

    Triton checks the outputs as it checks a step's inputs, and names the ensemble as the step that
    "receives inputs originated from different decoupled models".
    """
    steps = _steps(config)
    first: dict[int, int] = {}  # decoupled step (-1: none) -> the first output that comes from it
    for position, tensor in enumerate(config.output):
        if tensor.name in origin:
            first.setdefault(origin[tensor.name], position)
    if len(first) < 2:
        return []
    named = [
        f"decoupled {_step_label(s, steps[s])}" if s >= 0 else "steps that are not decoupled"
        for s in sorted(first)
    ]
    return [
        EnsembleFinding(
            "error",
            ("output", sorted(first.values())[1]),
            f"the ensemble's outputs come from {' and from '.join(named)}, which Triton refuses (their responses "
            "cannot be paired into one); take every output from one decoupled step (or from steps after it)",
        )
    ]


def _ensemble_cycle(
    ensemble: str, start: str, steps: Mapping[str, model_config_pb2.ModelConfig | None]
) -> list[str] | None:
    """The chain of nested ensembles from ``start`` back to ``ensemble``, if there is one."""
    seen: set[str] = set()

    def walk(name: str, chain: list[str]) -> list[str] | None:
        if name == ensemble:
            return chain
        if name in seen:
            return None
        seen.add(name)
        model = steps.get(name)
        if model is None or not is_ensemble(model):
            return None
        for step in model.ensemble_scheduling.step:
            found = walk(step.model_name, [*chain, step.model_name])
            if found is not None:
                return found
        return None

    return walk(start, [start])


def _step_models(
    config: model_config_pb2.ModelConfig,
    steps: Mapping[str, model_config_pb2.ModelConfig | None],
    versions: Mapping[str, Collection[int]] | None,
    ensemble: str,
) -> tuple[dict[int, model_config_pb2.ModelConfig], list[EnsembleFinding]]:
    """Each step's model checked for existence, version, nesting, batching and maps."""
    models: dict[int, model_config_pb2.ModelConfig] = {}
    found: list[EnsembleFinding] = []
    for index, step in enumerate(_steps(config)):
        if not step.model_name:
            continue
        problems = _check_model(index, step, steps, versions, ensemble)
        found += problems
        if problems and problems[0].path[-1] == "model_name":
            continue
        chain = _ensemble_cycle(ensemble, step.model_name, steps)
        if chain is not None:
            ring = " -> ".join([ensemble, *chain])
            found.append(
                EnsembleFinding(
                    "error",
                    (*_STEP, index, "model_name"),
                    f"circular dependency between ensembles: {ring}, which Triton refuses; an ensemble cannot "
                    "contain itself",
                )
            )
            continue
        model = steps.get(step.model_name)
        if model is None:
            continue  # the model exists but its inputs and outputs are not known here
        models[index] = model
        found += _check_batch(config, index, model, step.model_name)
        found += _check_maps(index, step, model)
    return models, found


def check_ensemble(
    config: model_config_pb2.ModelConfig,
    steps: Mapping[str, model_config_pb2.ModelConfig | None],
    *,
    versions: Mapping[str, Collection[int]] | None = None,
    name: str | None = None,
) -> list[EnsembleFinding]:
    """Check an ensemble's config against the configs of the models its steps run; every problem at once.

    Args:
        config: The ensemble's parsed config.
        steps: Model name -> its parsed config, for the step models and any other model of the
            repository (nested ensembles' steps are looked up here too, for the cycle check). None for a
            model that exists but whose inputs and outputs are not known here (no readable config, or
            one Triton auto-completes): only its existence is checked. A name that is missing is no model.
        versions: Model name -> the version numbers it serves; when given, a step's ``model_version``
            must be one of them (or -1).
        name: The ensemble's name when the config leaves it out (the directory's name).

    Returns:
        The findings (config-only ones first, then those against the step models); empty when the
        ensemble is sound.
    """
    ensemble = name or config.name
    found = _check_fields(config)
    if not config.HasField("ensemble_scheduling"):
        return found
    flow, notes = _flow(config)
    found += notes + _check_reads(config, flow) + _check_cycles(config, flow) + _check_ends(flow)
    models, notes = _step_models(config, steps, versions, ensemble)
    found += notes
    found += _check_tensors(config, _uses(config, models))
    found += _check_decoupled(config, flow, models)
    return found


def step_models(config: model_config_pb2.ModelConfig) -> Iterator[str]:
    """The model names an ensemble's steps run, each once, in step order."""
    yield from dict.fromkeys(step.model_name for step in _steps(config) if step.model_name)
