"""A ``framework: huggingface`` entry expanded into the spec entries it stands for.

One entry (a local model folder and a task) becomes, before the spec is validated:

- ``NAME_preprocess``: the built-in tokenizer step (text tasks) or image step (image tasks), its settings
  read from the folder's own files (tokenizer.json and tokenizer_config.json; preprocessor_config.json),
  with ``pipeline.preprocess`` merged over them;
- ``NAME_model``: the model itself (``framework: huggingface``, ``pipeline: false``), exported to ONNX
  with its inputs named after the step's outputs, and every serving setting of the entry;
- ``NAME_postprocess``: what the task implies after the model (softmax or sigmoid and the labels of
  ``config.id2label`` for classification, per-token labels for token classification), with
  ``pipeline.postprocess`` merged over it. Feature extraction has none: sentence-transformers' pooling
  and normalisation (``modules.json``) are exported inside the model's graph;
- an ensemble ``NAME`` wiring them: text (``TEXT``) or encoded images (``IMAGE``) in, what the task
  returns out.

A model the spec itself names ``NAME_preprocess`` or ``NAME_postprocess`` replaces the derived one. The
expansion reads JSON files only: nothing is loaded from, or fetched for, the model here.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from generator.core.errors import SpecError
from generator.core.jsonfile import read_json
from generator.steps import (
    TOKENIZER_OUTPUTS,
    image_settings_from_processor,
    override_image_settings,
    step_definition,
    tokenizer_settings_from_folder,
)

__all__ = [
    "HF_TASKS",
    "HF_TASK_ALIASES",
    "Expansion",
    "embedding_plan",
    "expand",
    "expansion_summary",
    "normalized_task",
]

#: The Hugging Face tasks a ``framework: huggingface`` entry can serve.
HF_TASKS = ("feature-extraction", "text-classification", "token-classification", "image-classification")
#: transformers' and sentence-transformers' other names for them.
HF_TASK_ALIASES = {
    "sentence-similarity": "feature-extraction",
    "sentence-embeddings": "feature-extraction",
    "sentence-embedding": "feature-extraction",
    "embeddings": "feature-extraction",
    "sentiment-analysis": "text-classification",
    "sequence-classification": "text-classification",
    "ner": "token-classification",
}


def normalized_task(value: Any) -> str:
    """A task as the spec writes it (any case, ``_`` or ``-``, an alias) in its canonical name."""
    text = str(value).strip().lower().replace("_", "-")
    return HF_TASK_ALIASES.get(text, text)


#: The ensemble's tensor names, by task.
TEXT_INPUT = "TEXT"
IMAGE_INPUT = "IMAGE"
#: Settings of the steps around the model: they batch what is queued without waiting (a request crosses
#: every step, and a queue delay at each adds up; perf/bench_pipeline.py).
STEP_SERVING: dict[str, Any] = {
    "instance_group": {"count": 1},
    "dynamic_batching": {"preferred_batch_size": [], "max_queue_delay_microseconds": 0},
}
#: The model's max_batch_size when neither the entry nor the defaults set one (the spec's own default).
DEFAULT_MAX_BATCH_SIZE = 8
#: Sequence lengths parity runs at when the spec gives none: short, typical, and as long as is affordable.
_PARITY_LENGTHS = (1, 16, 128)


@dataclass
class Expansion:
    """What one ``framework: huggingface`` entry became.

    Attributes:
        name: The entry's name (the ensemble's).
        task: The task.
        source: The folder (as written in the spec).
        parts: Role (``preprocess``, ``model``, ``postprocess``) -> model name.
        derived: Roles whose entry was derived here (not given in the spec).
        outputs: The ensemble's outputs: model or step output -> ensemble tensor.
        embedding: For feature extraction: pooling and normalisation exported with the model.
    """

    name: str
    task: str
    source: str
    parts: dict[str, str] = field(default_factory=dict)
    derived: list[str] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)
    embedding: dict[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """The manifest's record of the expansion."""
        return {
            "framework": "huggingface",
            "task": self.task,
            "source": self.source,
            "parts": dict(self.parts),
            "derived": list(self.derived),
            **({"embedding": dict(self.embedding)} if self.embedding else {}),
        }


def expansion_summary(name: str, record: dict[str, Any]) -> str:
    """One line: ``minilm: huggingface feature-extraction from models/minilm -> minilm_preprocess ->
    minilm_model, served as ensemble minilm``."""
    parts = record.get("parts") or {}
    chain = " -> ".join(parts[role] for role in ("preprocess", "model", "postprocess") if role in parts)
    return f"{name}: huggingface {record.get('task')} from {record.get('source')} -> {chain}, served as ensemble {name}"


def _read_json(path: Path, where: str) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = read_json(path)
    except ValueError as reason:
        raise SpecError(
            f"{where}: cannot read {path.name} of '{path.parent}' ({reason}); fix or remove it"
        ) from None
    if not isinstance(data, dict):
        raise SpecError(f"{where}: {path} is not a JSON object; fix or remove it")
    return data


def _folder(source: str, base_dir: Path, where: str) -> Path | None:
    """The model folder a source names; None for a factory (``file.py:function``)."""
    head, sep, tail = source.rpartition(":")
    if sep and tail.isidentifier() and head.endswith(".py"):
        return None
    for candidate in (base_dir / source, Path.cwd() / source):
        if candidate.is_dir():
            if not (candidate / "config.json").is_file():
                raise SpecError(
                    f"{where}.source: '{candidate}' has no config.json, so it is no Hugging Face model folder; "
                    "point source at the folder save_pretrained wrote"
                )
            return candidate.resolve()
    raise SpecError(
        f"{where}.source: no model folder at '{base_dir / source}'; give a local folder written by "
        "save_pretrained (nothing is downloaded), or a file.py:function factory"
    )


def _labels(config: dict[str, Any], where: str) -> list[str] | None:
    id2label = config.get("id2label")
    if not isinstance(id2label, dict) or not id2label:
        return None
    try:
        ordered = sorted((int(key), str(value)) for key, value in id2label.items())
    except (TypeError, ValueError):
        raise SpecError(f"{where}: config.json's id2label keys must be class numbers 0..N-1") from None
    if [index for index, _ in ordered] != list(range(len(ordered))):
        raise SpecError(f"{where}: config.json's id2label must number the classes 0..N-1 without gaps")
    return [label for _, label in ordered]


def _activation(config: dict[str, Any], labels: list[str] | None) -> str:
    """transformers' choice for text classification: sigmoid for multi-label or one logit, else softmax."""
    if config.get("problem_type") == "multi_label_classification" or (
        labels is not None and len(labels) == 1
    ):
        return "sigmoid"
    return "softmax"


def sentence_transformers_modules(folder: Path, where: str) -> dict[str, Any] | None:
    """Pooling and normalisation from a sentence-transformers folder's ``modules.json``; None without one.

    Returns ``{"pooling": mean|cls|max|mean_sqrt_len, "normalize": bool, "max_length": int | None,
    "dense": bool}``.
    """
    modules = _read_json_list(folder / "modules.json", where)
    if modules is None:
        return None
    found: dict[str, Any] = {"pooling": "none", "normalize": False, "dense": False, "max_length": None}
    for module in modules:
        kind = str(module.get("type", "")) if isinstance(module, dict) else ""
        path = folder / str(module.get("path", "")) if isinstance(module, dict) else folder
        if kind.endswith("Pooling"):
            found["pooling"] = _pooling_modes(_read_json(path / "config.json", where) or {})
        elif kind.endswith("Normalize"):
            found["normalize"] = True
        elif kind.endswith("Dense"):
            found["dense"] = True
    settings = _read_json(folder / "sentence_bert_config.json", where) or {}
    if isinstance(settings.get("max_seq_length"), int):
        found["max_length"] = settings["max_seq_length"]
    return found


#: sentence-transformers' legacy pooling flags (before its ``pooling_mode`` key) and the mode each means.
_LEGACY_POOLING = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}


def _pooling_modes(config: dict[str, Any]) -> str:
    """A Pooling module's mode(s), ``+``-joined: its ``pooling_mode`` (a name or a list) or legacy flags."""
    mode = config.get("pooling_mode")
    if isinstance(mode, str):
        modes = [mode]
    elif isinstance(mode, list):
        modes = [str(m) for m in mode]
    else:
        modes = [name for key, name in _LEGACY_POOLING.items() if config.get(key)]
    modes = [m.removesuffix("_tokens") for m in modes]
    return "+".join(modes) or "mean"


def _read_json_list(path: Path, where: str) -> list[Any] | None:
    if not path.is_file():
        return None
    try:
        data = read_json(path)
    except ValueError as reason:
        raise SpecError(f"{where}: cannot read {path} ({reason}); fix or remove it") from None
    if not isinstance(data, list):
        raise SpecError(f"{where}: {path} must be a JSON list of modules")
    return data


def _merged(derived: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(derived)
    merged.update(copy.deepcopy(override))
    return merged


def _text_parts(
    entry: dict[str, Any], folder_settings: dict[str, Any] | None, modules: dict[str, Any] | None
) -> tuple[dict[str, Any], list[str]]:
    """The tokenizer step's settings and the names of its outputs (the model's inputs).

    Args:
        entry: The huggingface entry.
        folder_settings: What the model folder's tokenizer files say (None for a factory).
        modules: The folder's sentence-transformers modules, for feature extraction (else None).
    """
    derived: dict[str, Any] = {}
    if folder_settings is not None:
        derived = dict(folder_settings)
        derived["tokenizer"] = entry["source"]
        # Each request padded to its longest text, as transformers pads a batch: a short text costs what
        # it needs, not model_max_length (512 for BERT). Requests of one length still batch together.
        derived["padding"] = "longest"
        if modules and modules.get("max_length"):
            derived["max_length"] = modules["max_length"]
    settings = _merged(derived, _overrides(entry, "preprocess"))
    outputs = settings.get("outputs") or TOKENIZER_OUTPUTS
    return settings, [str(name) for name in outputs]


def _image_parts(entry: dict[str, Any], folder: Path | None) -> tuple[dict[str, Any], list[int]]:
    """The image step's settings and its output's dims."""
    derived = image_settings_from_processor(folder) if folder is not None else {}
    settings = override_image_settings(derived, _overrides(entry, "preprocess"))
    try:
        definition = step_definition("image", settings, folder or Path("."))
    except SpecError:
        return settings, []  # reported with the step's own field paths when it is validated
    return settings, list(definition.outputs[0]["dims"])


def _model_entry(entry: dict[str, Any], inputs: list[dict[str, Any]]) -> dict[str, Any]:
    """The model part: the entry's own settings, ``pipeline: false``, the inputs the step feeds."""
    model = {key: copy.deepcopy(value) for key, value in entry.items() if key not in ("name", "pipeline")}
    model.update(name=f"{entry['name']}_model", pipeline=False, task=normalized_task(entry["task"]))
    if inputs:
        model["inputs"] = inputs
    return model


def _step_entry(name: str, kind: str, settings: dict[str, Any], batch: Any) -> dict[str, Any]:
    step: dict[str, Any] = {
        "name": name,
        "framework": "python",
        "source": f"builtin:{kind}",
        "step": settings,
    }
    step.update(copy.deepcopy(STEP_SERVING))
    # The steps batch as the model does, so the ensemble takes the model's max_batch_size.
    step["max_batch_size"] = batch
    return step


def _text_model_inputs(
    names: list[str], settings: dict[str, Any], entry: dict[str, Any]
) -> tuple[list, dict]:
    dtype = str(settings.get("dtype", "INT64")).upper().removeprefix("TYPE_")
    inputs = [{"name": name, "dtype": dtype, "dims": [-1]} for name in names]
    longest = int(settings.get("max_length") or 128)
    lengths = sorted({min(length, longest) for length in _PARITY_LENGTHS})
    shapes = entry.get("shapes") or {
        name: {"min": [lengths[0]], "opt": [lengths[len(lengths) // 2]], "max": [lengths[-1]]}
        for name in names
    }
    return inputs, shapes


def _text_model_values(names: list[str], entry: dict[str, Any]) -> dict[str, Any]:
    """Parity's attention masks are all ones unless the spec says otherwise: a tokenizer never masks every
    token of a row, and a row masked whole is numerical noise in any attention (padding is checked end to
    end, on real texts)."""
    values = dict(entry.get("values") or {})
    if "attention_mask" in names:
        values.setdefault("attention_mask", {"min": 1, "max": 1})
    return values


def _expand_one(
    entry: dict[str, Any], base_dir: Path, where: str, taken: set[str], defaults: dict[str, Any]
) -> tuple[list, dict, Expansion]:
    """The model entries and the ensemble of one huggingface entry."""
    _check_pipeline(entry.get("pipeline"), where)
    batch = entry.get("max_batch_size", defaults.get("max_batch_size", DEFAULT_MAX_BATCH_SIZE))
    name, task, source = str(entry["name"]), normalized_task(entry["task"]), str(entry["source"])
    expansion = Expansion(name=name, task=task, source=source)
    folder = _folder(source, base_dir, where)
    config = (_read_json(folder / "config.json", where) or {}) if folder else {}
    modules: dict[str, Any] | None = None  # a sentence-transformers folder's pooling and normalisation
    models: list[dict[str, Any]] = []
    steps: list[dict[str, Any]] = []
    pre_name, model_name, post_name = f"{name}_preprocess", f"{name}_model", f"{name}_postprocess"
    expansion.parts["preprocess"] = pre_name
    if task == "image-classification":
        settings, dims = _image_parts(entry, folder)
        pre = _step_entry(pre_name, "image", settings, batch)
        model_inputs = [{"name": "pixel_values", "dtype": str(settings.get("dtype", "FP32")), "dims": dims}]
        steps.append(
            {
                "model": pre_name,
                "input_map": {"image": IMAGE_INPUT},
                "output_map": {"pixel_values": "pixel_values"},
            }
        )
        model = _model_entry(entry, model_inputs if dims else [])
        feeds = {"pixel_values": "pixel_values"}
    else:
        folder_settings = tokenizer_settings_from_folder(folder) if folder is not None else None
        if folder is not None and task == "feature-extraction":
            modules = sentence_transformers_modules(folder, where)
        settings, names = _text_parts(entry, folder_settings, modules)
        pre = _step_entry(pre_name, "tokenizer", settings, batch)
        steps.append(
            {"model": pre_name, "input_map": {"text": TEXT_INPUT}, "output_map": {n: n for n in names}}
        )
        inputs, shapes = _text_model_inputs(names, settings, entry)
        model = _model_entry(entry, inputs)
        model["shapes"] = shapes
        model["values"] = _text_model_values(names, entry)
        feeds = {n: n for n in names}
    if pre_name not in taken:
        models.append(pre)
        expansion.derived.append("preprocess")
    expansion.parts["model"] = model_name
    models.append(model)
    expansion.derived.append("model")
    model_outputs, expansion.embedding = _task_outputs(entry, task, modules, where)
    steps.append({"model": model_name, "input_map": feeds, "output_map": {o: o for o in model_outputs}})
    post = _postprocess(entry, config, where, task)
    if post is not None:
        expansion.parts["postprocess"] = post_name
        kind, post_settings, post_outputs = post
        if post_name not in taken:
            models.append(_step_entry(post_name, kind, post_settings, batch))
            expansion.derived.append("postprocess")
        steps.append(
            {
                "model": post_name,
                "input_map": {"logits": "logits"},
                "output_map": {o: o.upper() for o in post_outputs},
            }
        )
        expansion.outputs = {o: o.upper() for o in post_outputs}
    else:
        steps[-1]["output_map"] = {o: o.upper() for o in model_outputs}
        expansion.outputs = dict(steps[-1]["output_map"])
    ensemble: dict[str, Any] = {"name": name, "steps": steps}
    if "version" in entry:
        ensemble["version"] = entry["version"]
    return models, ensemble, expansion


def embedding_plan(
    pooling: str | None, normalize: bool | None, modules: dict[str, Any] | None, where: str
) -> dict[str, Any] | None:
    """How a feature-extraction model's graph ends: None for the token embeddings (last_hidden_state),
    else ``{"pooling", "normalize", "sentence_transformers"}``; the last is true when the folder's own
    sentence-transformers modules are exported as they are (no pooling or normalize given).

    Raises:
        SpecError: normalize without pooling.
    """
    if pooling is None and normalize is None and modules is not None:
        return {
            "pooling": modules["pooling"],
            "normalize": bool(modules["normalize"]),
            "sentence_transformers": True,
        }
    chosen = pooling or (modules or {}).get("pooling") or "none"
    wanted = bool((modules or {}).get("normalize")) if normalize is None else normalize
    if chosen == "none":
        if wanted:
            raise SpecError(f"{where}.normalize: needs pooling (mean, cls, max); set pooling as well")
        return None
    if "+" in chosen:
        raise SpecError(
            f"{where}.pooling: modules.json combines the pooling modes {chosen}; export it as it is "
            "(leave pooling and normalize unset) or choose one"
        )
    return {"pooling": chosen, "normalize": wanted, "sentence_transformers": False}


def _overrides(entry: dict[str, Any], part: str) -> dict[str, Any]:
    """The settings ``pipeline.<part>`` writes over the derived ones (none when it writes none)."""
    pipeline = entry.get("pipeline")
    found = pipeline.get(part) if isinstance(pipeline, dict) else None
    return found if isinstance(found, dict) else {}


def _check_pipeline(pipeline: Any, where: str) -> None:
    """The entry's ``pipeline`` overrides are mappings of settings (its parts are validated as steps).

    Raises:
        SpecError: anything else, at its field path.
    """
    if pipeline is None or pipeline is True:
        return
    if not isinstance(pipeline, dict):
        raise SpecError(f"{where}.pipeline: must be a mapping (preprocess, postprocess) or false")
    problems = [
        f"{where}.pipeline.{key}: unknown field; allowed: preprocess, postprocess"
        for key in pipeline
        if key not in ("preprocess", "postprocess")
    ]
    problems += [
        f"{where}.pipeline.{key}: must be a mapping of the step's settings"
        for key in ("preprocess", "postprocess")
        if pipeline.get(key) is not None and not isinstance(pipeline.get(key), dict)
    ]
    if problems:
        raise SpecError(*problems)


def _task_outputs(
    entry: dict[str, Any], task: str, modules: dict[str, Any] | None, where: str
) -> tuple[list[str], dict[str, Any]]:
    """The model's output names, and the embedding plan exported in a feature-extraction model's graph
    (:func:`embedding_plan`; empty without one)."""
    if task != "feature-extraction":
        return ["logits"], {}
    plan = embedding_plan(entry.get("pooling"), entry.get("normalize"), modules, where)
    if plan is None:
        return ["last_hidden_state"], {}
    return ["embedding"], plan


def _postprocess(
    entry: dict[str, Any], config: dict[str, Any], where: str, task: str
) -> tuple[str, dict[str, Any], list[str]] | None:
    """The post-processing step's kind, settings and outputs; None for feature extraction."""
    if task == "feature-extraction":
        return None
    labels = _labels(config, where)
    derived: dict[str, Any] = {}
    if labels is not None:
        derived["labels"] = labels
    overrides = _overrides(entry, "postprocess")
    if task == "token-classification":
        settings = _merged(derived, overrides)
        outputs = ["labels", "scores"] if settings.get("labels") else ["indices", "scores"]
        return "token_labels", settings, outputs
    derived["activation"] = _activation(config, labels)
    settings = _merged(derived, overrides)
    activation = settings.get("activation", "softmax")
    outputs = ["scores", "indices"]
    if settings.get("labels"):
        outputs.append("labels")
    if activation != "none" and settings.get("softmax", True) is not False:
        outputs.insert(0, "probabilities")
    return "postprocess", settings, outputs


def expand(
    data: dict[str, Any], base_dir: Path, origin: str
) -> tuple[dict[str, Any], list[Expansion], dict[int, str]]:
    """The spec's data with every ``framework: huggingface`` entry (not ``pipeline: false``) expanded.

    Args:
        data: The spec as plain data (not changed).
        base_dir: The spec's directory, where sources resolve.
        origin: The spec's name, for error lines.

    Returns:
        The expanded data, what each entry became, and for each expanded model's index in the new
        ``models`` list, the field path its problems are reported at (``models[1] (minilm_preprocess)``).

    Raises:
        SpecError: a folder that is missing or not a model folder, unreadable files in it.
    """
    raw_models = data.get("models")
    if not isinstance(raw_models, list) or not any(_is_expandable(raw) for raw in raw_models):
        return data, [], {}
    taken = {str(raw.get("name")) for raw in raw_models if isinstance(raw, dict)}
    models: list[Any] = []
    ensembles = data.get("ensembles")
    ensembles = list(ensembles) if isinstance(ensembles, list) else [] if ensembles is None else ensembles
    defaults = data.get("defaults") if isinstance(data.get("defaults"), dict) else {}
    expansions: list[Expansion] = []
    places: dict[int, str] = {}
    problems: list[str] = []
    for index, raw in enumerate(raw_models):
        if not _is_expandable(raw):
            places[len(models)] = f"models[{index}]"
            models.append(raw)
            continue
        where = f"models[{index}]"
        try:
            parts, ensemble, expansion = _expand_one(raw, base_dir, where, taken, defaults)
        except SpecError as error:
            problems += [f"{origin}: {line}" for line in error.problems]
            continue
        for part in parts:
            places[len(models)] = f"{where} ({part['name']})"
            models.append(part)
        if isinstance(ensembles, list):
            ensembles.append(ensemble)
        expansions.append(expansion)
    if problems:
        raise SpecError(*problems)
    expanded = dict(data)
    expanded["models"] = models
    if isinstance(ensembles, list):
        expanded["ensembles"] = ensembles
    return expanded, expansions, places


def _is_expandable(raw: Any) -> bool:
    return (
        isinstance(raw, dict)
        and raw.get("framework") == "huggingface"
        and raw.get("pipeline") is not False
        and isinstance(raw.get("name"), str)
        and isinstance(raw.get("task"), str)
        and normalized_task(raw["task"]) in HF_TASKS
        and isinstance(raw.get("source"), str)
    )
