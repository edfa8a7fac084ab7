"""The catalogue of built-in pipeline steps (``source: builtin:<kind>``).

A built-in step is a self-contained Triton Python-backend model file in this package (``tokenizer.py``,
``image.py``, ``postprocess.py``, ``token_labels.py``, ``generate.py``) plus settings under the spec's ``step:``. This
module validates those settings (one pydantic model per kind, :data:`STEP_KINDS`, each in its own module:
:mod:`.tokenizer_settings`, :mod:`.image_settings`, :mod:`.label_settings` for postprocess and
token_labels, :mod:`.generate_settings`) and turns them into a :class:`StepDefinition`: the config's inputs
and outputs, the ``parameters`` the step file reads back, and the files to copy. It runs nothing: the step
files are never imported here. :mod:`.hf_tokenizer` reads Hugging Face model folders and transformers
tokenizers for the tokenizer step.

Example::

    definition = step_definition("tokenizer", {"tokenizer": "tok.json", "max_length": 32}, spec_dir)
    definition.outputs  # [{"name": "input_ids", "dtype": "INT64", "dims": [32]}, ...]
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from generator.core.errors import SpecError
from generator.core.jsonfile import read_json
from generator.steps import dali
from generator.steps.base_settings import parameter_flag, spec_path
from generator.steps.generate_settings import (
    MODEL_FOLDER,
    GenerateSettings,
    generate_io,
    generate_parameters,
    model_folder_problems,
)
from generator.steps.hf_image import image_settings_from_processor, override_image_settings
from generator.steps.hf_tokenizer import (
    cached_file,
    fast_tokenizer_json,
    folder_tokenizer_json,
    tokenizer_settings_from_folder,
)
from generator.steps.image_settings import (
    ImageSettings,
    dali_problems,
    image_parameters,
    output_size,
    resize_size,
)
from generator.steps.label_settings import LABELS_FILE, PostprocessSettings, TokenLabelsSettings
from generator.steps.tokenizer_settings import (
    DEFAULT_MAX_LENGTH,
    PAD_TOKENS,
    TOKENIZER_OUTPUTS,
    TokenizerSettings,
)

__all__ = [
    "STEP_KINDS",
    "TOKENIZER_OUTPUTS",
    "GenerateSettings",
    "ImageSettings",
    "PostprocessSettings",
    "StepDefinition",
    "TokenLabelsSettings",
    "TokenizerSettings",
    "fast_tokenizer_json",
    "image_settings_from_processor",
    "override_image_settings",
    "settings_schema",
    "step_definition",
    "tokenizer_settings_from_folder",
]

_HERE = Path(__file__).resolve().parent

#: The built-in step kinds and their settings models.
STEP_KINDS: dict[str, type[BaseModel]] = {
    "tokenizer": TokenizerSettings,
    "image": ImageSettings,
    "postprocess": PostprocessSettings,
    "token_labels": TokenLabelsSettings,
    "generate": GenerateSettings,
}


@dataclass(frozen=True)
class StepDefinition:
    """What a built-in step becomes in a model repository.

    Attributes:
        kind: The step kind (a key of :data:`STEP_KINDS`).
        settings: The validated settings.
        inputs: The config's inputs: ``{"name", "dtype", "dims"}`` (dims without the batch axis).
        outputs: The config's outputs, the same way, plus ``label_filename`` where Triton's classification
            extension applies.
        parameters: The config's ``parameters``, which the step file reads back.
        backend: ``python``, or ``dali`` (Triton's DALI backend, for ``image`` with ``backend: dali``).
        model_file: The step file to copy as ``<version>/model.py``; None for dali.
        version_files: Files to copy into the version directory: name there -> source.
        model_files: Files to copy into the model directory (beside config.pbtxt): name there -> source.
        write_dali: For dali, ``write_dali(path, max_batch_size)`` writes ``<version>/model.dali``.
        decoupled: The step sends its responses through Triton's decoupled transaction policy (``generate``:
            one response per token), so its config needs ``model_transaction_policy { decoupled: true }``.
    """

    kind: str
    settings: BaseModel
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    parameters: dict[str, str]
    backend: Literal["python", "dali"] = "python"
    model_file: Path | None = None
    version_files: dict[str, Path] = field(default_factory=dict)
    model_files: dict[str, Path] = field(default_factory=dict)
    write_dali: Callable[[Path, int], None] | None = None
    decoupled: bool = False


def settings_schema(kind: str) -> dict[str, Any]:
    """The JSON Schema of a step kind's settings (for the spec's schema)."""
    return _settings_class(kind).model_json_schema()


def step_definition(
    kind: str, settings: Mapping[str, Any] | BaseModel | None, spec_dir: Path
) -> StepDefinition:
    """Validate a built-in step's settings and derive its config and files.

    Args:
        kind: The step kind, from ``source: builtin:<kind>``.
        settings: The spec's ``step:`` mapping (None for none), or an instance of the kind's settings model.
        spec_dir: The spec's directory; files in the settings are relative to it.

    Raises:
        SpecError: An unknown kind, an invalid setting, a missing or unusable file: one line per problem,
            each naming the setting (``step.max_length: must be at least 1 (got 0)``).
        MissingDependencyError: ``image`` with ``backend: dali`` where ``nvidia.dali`` is not installed.
    """
    model = _settings_class(kind)
    if isinstance(settings, model):
        validated = settings
    else:
        data = dict(settings or {})
        try:
            validated = model.model_validate(data)
        except PydanticValidationError as exc:
            raise SpecError(*_problems(exc, model)) from None
    return _DEFINERS[kind](validated, Path(spec_dir))


def _settings_class(kind: str) -> type[BaseModel]:
    if kind not in STEP_KINDS:
        kinds = ", ".join(f"builtin:{k}" for k in STEP_KINDS)
        raise SpecError(f"source: 'builtin:{kind}' is not a built-in step; use one of {kinds}")
    return STEP_KINDS[kind]


def _problems(exc: PydanticValidationError, model: type[BaseModel]) -> list[str]:
    """One line per validation problem, each starting with the setting's path (``step.size[0]``)."""
    lines = []
    for error in exc.errors():
        path = "step" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"])
        if error["type"] == "extra_forbidden":
            allowed = ", ".join(model.model_fields)
            line = f"{path}: unknown setting; the settings of this step are: {allowed}"
        elif error["type"] == "missing":
            line = f"{path}: required setting is missing; add it"
        elif error["type"] in ("too_short", "too_long"):
            context = error.get("ctx") or {}
            bound = (
                f"at least {context['min_length']}"
                if "min_length" in context
                else f"at most {context.get('max_length')}"
            )
            what = model.model_fields[str(error["loc"][0])].description or ""
            line = f"{path}: must hold {bound} item(s), got {context.get('actual_length', '?')} ({what.rstrip('.')})"
        else:
            message = str(error["msg"]).removeprefix("Value error, ")
            for theirs, ours in _BOUNDS.items():
                message = message.replace(theirs, ours)
            value = error.get("input")
            shown = f" (got {json.dumps(value)})" if isinstance(value, (str, int, float, bool)) else ""
            line = f"{path}: {message}{shown}"
        if line not in lines:
            lines.append(line)
    return lines


_BOUNDS = {
    "Input should be less than or equal to": "must be at most",
    "Input should be greater than or equal to": "must be at least",
    "Input should be greater than": "must be greater than",
    "Input should be": "must be",
    "String should have at least 1 character": "must not be empty",
}


def _source_file(setting: str, value: str, spec_dir: Path, *, folder: bool = False) -> Path:
    """A file (or, with ``folder``, a folder) named by a setting, resolved against the spec's directory;
    SpecError if it is neither."""
    path = spec_path(value, spec_dir)
    if folder and path.is_dir():
        return path
    if not path.is_file():
        what = "is a directory, not a file" if path.is_dir() else "does not exist"
        raise SpecError(f"step.{setting}: '{path}' {what}; give the path relative to the spec's directory")
    return path


def _tokenizer(settings: TokenizerSettings, spec_dir: Path) -> StepDefinition:
    source = _source_file("tokenizer", settings.tokenizer, spec_dir, folder=True)
    path = folder_tokenizer_json(source) if source.is_dir() else source
    folder = tokenizer_settings_from_folder(source) if source.is_dir() else {}
    data = _tokenizer_data(path)
    own_padding = data.get("padding") if isinstance(data.get("padding"), dict) else {}
    own_truncation = data.get("truncation") if isinstance(data.get("truncation"), dict) else {}

    def chosen(name: str, own: Any, default: Any) -> Any:
        """The setting, else the folder's, else the tokenizer.json's own, else the default."""
        for value in (getattr(settings, name), folder.get(name), own):
            if value is not None:
                return value
        return default

    pad_token = _pad_token(path, data, settings.pad_token or folder.get("pad_token"))
    max_length = chosen("max_length", own_truncation.get("max_length"), DEFAULT_MAX_LENGTH)
    outputs = chosen("outputs", None, list(TOKENIZER_OUTPUTS))
    sides = {
        "padding_side": str(chosen("padding_side", own_padding.get("direction"), "right")).lower(),
        "truncation_side": str(chosen("truncation_side", own_truncation.get("direction"), "right")).lower(),
    }
    length = max_length if settings.padding == "max_length" else -1
    return StepDefinition(
        kind="tokenizer",
        settings=settings,
        inputs=[{"name": "text", "dtype": "STRING", "dims": [1]}],
        outputs=[{"name": name, "dtype": settings.dtype, "dims": [length]} for name in outputs],
        parameters={
            "max_length": str(max_length),
            "padding": settings.padding,
            "truncation": parameter_flag(settings.truncation),
            **sides,
            "add_special_tokens": parameter_flag(settings.add_special_tokens),
            "dtype": settings.dtype,
            "outputs": ",".join(outputs),
            "pad_token": pad_token,
        },
        model_file=_HERE / "tokenizer.py",
        version_files={"tokenizer.json": path},
    )


def _tokenizer_data(path: Path) -> dict[str, Any]:
    """A tokenizer.json's content; SpecError when it is not one."""
    try:
        data = read_json(path)
    except ValueError as reason:
        raise SpecError(f"step.tokenizer: '{path}' is not a tokenizer.json file ({reason})") from None
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise SpecError(
            f"step.tokenizer: '{path}' is not a Hugging Face tokenizer.json (it has no 'model' section)"
        )
    return data


def _pad_token(path: Path, data: dict[str, Any], wanted: str | None) -> str:
    """The pad token of a tokenizer.json: ``wanted`` (checked against its vocabulary) or its own."""
    added = [t for t in data.get("added_tokens") or [] if isinstance(t, dict)]
    if wanted is not None:
        vocab = data["model"].get("vocab")
        known = {t.get("content") for t in added}
        if isinstance(vocab, dict):
            known.update(vocab)
        elif isinstance(vocab, list):  # Unigram: [[token, score], ...]
            known.update(entry[0] for entry in vocab if isinstance(entry, list) and entry)
        if wanted not in known:
            raise SpecError(f"step.pad_token: '{wanted}' is not a token of '{path}'; name one of its tokens")
        return wanted
    padding = data.get("padding")
    if isinstance(padding, dict) and isinstance(padding.get("pad_token"), str):
        return padding["pad_token"]
    special = {t.get("content") for t in added if t.get("special")}
    for name in PAD_TOKENS:
        if name in special:
            return name
    raise SpecError(
        f"step.padding: padding needs a pad token and the tokenizer '{path}' has none (no padding section, "
        f"no special token named {' or '.join(PAD_TOKENS)}); set step.pad_token to one of its tokens"
    )


def _image(settings: ImageSettings, spec_dir: Path) -> StepDefinition:
    if settings.processor is not None:
        settings = _image_with_processor(settings, spec_dir)
    size = output_size(settings)
    assert size is not None  # ImageSettings refuses settings without one
    height, width = size
    mean = settings.mean or [0.0] * settings.channels
    std = settings.std or [1.0] * settings.channels
    dims = (
        [settings.channels, height, width]
        if settings.layout == "NCHW"
        else [height, width, settings.channels]
    )
    outputs = [{"name": "pixel_values", "dtype": settings.dtype, "dims": dims}]
    if settings.backend == "dali":
        problems = dali_problems(settings)
        if problems:
            raise SpecError(*problems)
        if not dali.dali_available():
            raise dali.missing_dali()
        writer = partial(
            dali.write_pipeline,
            size=resize_size(settings) or [height, width],
            channels=settings.channels,
            resample=str(settings.resample),
            scale=settings.scale,
            mean=mean,
            std=std,
            layout=settings.layout,
            dtype=settings.dtype,
        )
        return StepDefinition(
            kind="image",
            settings=settings,
            inputs=[{"name": dali.INPUT, "dtype": "UINT8", "dims": [-1]}],
            outputs=outputs,
            parameters={},
            backend="dali",
            write_dali=writer,
        )
    return StepDefinition(
        kind="image",
        settings=settings,
        inputs=[{"name": "image", "dtype": "STRING", "dims": [1]}],
        outputs=outputs,
        parameters=image_parameters(settings),
        model_file=_HERE / "image.py",
    )


def _image_with_processor(settings: ImageSettings, spec_dir: Path) -> ImageSettings:
    """The settings a Hugging Face processor implies, with the ones the spec writes over them
    (:func:`override_image_settings`)."""
    path = spec_path(str(settings.processor), spec_dir)
    if not path.exists():
        raise SpecError(
            f"step.processor: '{path}' does not exist; give a Hugging Face model folder or its "
            "preprocessor_config.json, relative to the spec's directory"
        )
    try:
        derived = image_settings_from_processor(path)
    except SpecError as error:
        raise SpecError(*(f"step.processor: {line}" for line in error.problems)) from None
    explicit = {name: getattr(settings, name) for name in settings.model_fields_set if name != "processor"}
    try:
        return ImageSettings.model_validate(override_image_settings(derived, explicit))
    except PydanticValidationError as exc:
        raise SpecError(*_problems(exc, ImageSettings)) from None


def _postprocess(settings: PostprocessSettings, spec_dir: Path) -> StepDefinition:
    labels_path, labels = _labels_file(settings.labels, spec_dir)
    classes, top_k = _classes_and_top_k(settings, labels_path, labels)
    activation = settings.applied
    outputs: list[dict[str, Any]] = []
    if activation != "none":
        probabilities: dict[str, Any] = {"name": "probabilities", "dtype": "FP32", "dims": [classes]}
        if labels_path:
            probabilities["label_filename"] = LABELS_FILE
        outputs.append(probabilities)
    outputs += [
        {"name": "scores", "dtype": "FP32", "dims": [top_k]},
        {"name": "indices", "dtype": "INT64", "dims": [top_k]},
    ]
    parameters = {"classes": str(classes), "top_k": str(top_k), "activation": activation}
    version_files: dict[str, Path] = {}
    model_files: dict[str, Path] = {}
    if labels_path:
        outputs.append({"name": "labels", "dtype": "STRING", "dims": [top_k]})
        parameters["labels_file"] = LABELS_FILE
        version_files[LABELS_FILE] = labels_path
        if activation != "none":
            model_files[LABELS_FILE] = labels_path
    return StepDefinition(
        kind="postprocess",
        settings=settings,
        inputs=[{"name": "logits", "dtype": "FP32", "dims": [classes]}],
        outputs=outputs,
        parameters=parameters,
        model_file=_HERE / "postprocess.py",
        version_files=version_files,
        model_files=model_files,
    )


def _token_labels(settings: TokenLabelsSettings, spec_dir: Path) -> StepDefinition:
    labels_path, labels = _labels_file(settings.labels, spec_dir)
    classes, _ = _classes_and_top_k(settings, labels_path, labels)
    outputs: list[dict[str, Any]] = []
    parameters = {"classes": str(classes), "activation": settings.activation}
    version_files: dict[str, Path] = {}
    if labels_path:
        outputs.append({"name": "labels", "dtype": "STRING", "dims": [-1]})
        parameters["labels_file"] = LABELS_FILE
        version_files[LABELS_FILE] = labels_path
    outputs += [
        {"name": "scores", "dtype": "FP32", "dims": [-1]},
        {"name": "indices", "dtype": "INT64", "dims": [-1]},
    ]
    return StepDefinition(
        kind="token_labels",
        settings=settings,
        inputs=[{"name": "logits", "dtype": "FP32", "dims": [-1, classes]}],
        outputs=outputs,
        parameters=parameters,
        model_file=_HERE / "token_labels.py",
        version_files=version_files,
    )


def _generate(settings: GenerateSettings, spec_dir: Path) -> StepDefinition:
    folder = spec_path(settings.model, spec_dir)
    found, context = model_folder_problems(folder)
    problems = [f"step.model: {line}" for line in found]
    explicit = "max_new_tokens" in settings.model_fields_set  # the default is cut to the room a prompt leaves
    if context is not None and explicit and settings.max_new_tokens >= context:
        problems.append(
            f"step.max_new_tokens: {settings.max_new_tokens} leaves no room for a prompt in the model's "
            f"{context}-token context; lower it"
        )
    if problems:
        raise SpecError(*problems)
    inputs, outputs = generate_io(settings)
    return StepDefinition(
        kind="generate",
        settings=settings,
        inputs=inputs,
        outputs=outputs,
        parameters=generate_parameters(settings),
        model_file=_HERE / "generate.py",
        version_files={MODEL_FOLDER: folder},
        decoupled=True,
    )


def _labels_file(value: str | list[str] | None, spec_dir: Path) -> tuple[Path | None, list[str] | None]:
    """The label file to copy and its labels: the file named, or an inline list written to one."""
    if value is None:
        return None, None
    if isinstance(value, list):
        return cached_file(LABELS_FILE, "".join(f"{label}\n" for label in value).encode("utf-8")), value
    path = _source_file("labels", value, spec_dir)
    return path, _read_labels(path)


def _classes_and_top_k(
    settings: PostprocessSettings | TokenLabelsSettings, labels_path: Path | None, labels: list[str] | None
) -> tuple[int, int]:
    """N (from classes or the labels) and k; SpecError when they are unknown or disagree."""
    problems = []
    if labels is not None and settings.classes is not None and settings.classes != len(labels):
        named = f"'{labels_path}' has" if isinstance(settings.labels, str) else "step.labels lists"
        problems.append(
            f"step.classes: {settings.classes} classes but {named} {len(labels)} labels; "
            "make them agree or leave classes out"
        )
    classes = settings.classes if settings.classes is not None else (len(labels) if labels else 0)
    if not classes:
        problems.append("step.classes: the number of classes is unknown; set classes or labels")
    wanted = getattr(settings, "top_k", None)
    top_k = wanted if wanted is not None else min(5, classes or 5)
    if classes and top_k > classes:
        problems.append(f"step.top_k: {top_k} is more than the {classes} classes; use at most {classes}")
    if problems:
        raise SpecError(*problems)
    return classes, top_k


def _read_labels(path: Path) -> list[str]:
    """The labels of a label file, one per line (trailing empty lines dropped); SpecError if unusable."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        reason = " ".join(str(error).split())
        raise SpecError(f"step.labels: cannot read '{path}' as UTF-8 text ({reason})") from None
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise SpecError(f"step.labels: '{path}' has no labels; write one label per line")
    blank = [str(number) for number, line in enumerate(lines, 1) if not line.strip()]
    if blank:
        raise SpecError(
            f"step.labels: '{path}' has empty labels on line(s) {', '.join(blank)}; one label per line"
        )
    return lines


_DEFINERS: dict[str, Callable[[Any, Path], StepDefinition]] = {
    "tokenizer": _tokenizer,
    "image": _image,
    "postprocess": _postprocess,
    "token_labels": _token_labels,
    "generate": _generate,
}
