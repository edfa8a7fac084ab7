"""The catalogue of built-in pipeline steps (``source: builtin:<kind>``).

A built-in step is a self-contained Triton Python-backend model file in this package (``tokenizer.py``,
``image.py``, ``postprocess.py``) plus settings under the spec's ``step:``. This module validates those
settings (one pydantic model per kind, :data:`STEP_KINDS`) and turns them into a :class:`StepDefinition`:
the config's inputs and outputs, the ``parameters`` the step file reads back, and the files to copy. It
runs nothing: the step files are never imported here.

Example::

    definition = step_definition("tokenizer", {"tokenizer": "tok.json", "max_length": 32}, spec_dir)
    definition.outputs  # [{"name": "input_ids", "dtype": "INT64", "dims": [32]}, ...]
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic import ValidationError as PydanticValidationError

from generator.core.errors import SpecError
from generator.steps import dali

__all__ = [
    "STEP_KINDS",
    "ImageSettings",
    "PostprocessSettings",
    "StepDefinition",
    "TokenizerSettings",
    "settings_schema",
    "step_definition",
]

_HERE = Path(__file__).resolve().parent
#: Triton's bound on a dimension (an int64 in model_config.proto).
_INT64_MAX = 2**63 - 1
TOKENIZER_OUTPUTS = ("input_ids", "attention_mask", "token_type_ids")
#: Pad tokens recognised by name among a tokenizer's special tokens (tokenizer.py has the same list).
PAD_TOKENS = ("[PAD]", "<pad>", "<|pad|>", "<PAD>")
LABELS_FILE = "labels.txt"


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TokenizerSettings(_Settings):
    """Settings of ``builtin:tokenizer``: text (TYPE_STRING [1]) to token ids with a Hugging Face
    ``tokenizer.json``."""

    tokenizer: str = Field(
        min_length=1,
        description="Path of a Hugging Face tokenizer.json, relative to the spec's directory; copied into "
        "the version directory.",
    )
    max_length: int = Field(
        default=128,
        ge=1,
        le=_INT64_MAX,
        description="Tokens per text: the output length with padding max_length, the truncation length.",
    )
    padding: Literal["max_length", "longest"] = Field(
        default="max_length",
        description="max_length: every output has max_length tokens (fixed shapes batch well downstream); "
        "longest: dims [-1], padded to the longest text of each request.",
    )
    truncation: bool = Field(
        default=True,
        description="Cut texts to max_length tokens. Without it, with padding max_length, a longer text "
        "fails its request.",
    )
    add_special_tokens: bool = Field(
        default=True, description="Add the tokenizer's special tokens ([CLS], [SEP], ...)."
    )
    dtype: Literal["INT64", "INT32"] = Field(default="INT64", description="Data type of the outputs.")
    outputs: list[Literal["input_ids", "attention_mask", "token_type_ids"]] = Field(
        default=list(TOKENIZER_OUTPUTS),
        min_length=1,
        description="The outputs to produce, some of input_ids, attention_mask, token_type_ids.",
    )
    pad_token: str | None = Field(
        default=None,
        min_length=1,
        description="The token to pad with. Default: the tokenizer's own (its padding section, else a special "
        f"token named {', '.join(PAD_TOKENS)}).",
    )

    @field_validator("dtype", mode="before")
    @classmethod
    def _dtype(cls, value: Any) -> Any:
        return value.upper().removeprefix("TYPE_") if isinstance(value, str) else value

    @field_validator("outputs")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("names an output twice; list each once")
        return value


class ImageSettings(_Settings):
    """Settings of ``builtin:image``: encoded images (TYPE_STRING [1]) to normalised ``pixel_values``."""

    size: list[int] = Field(
        min_length=2, max_length=2, description="[height, width] of the output, in pixels."
    )
    channels: Literal[1, 3] = Field(default=3, description="3: RGB; 1: grey (Pillow's mode L).")
    resize: Literal["bilinear", "nearest", "bicubic"] = Field(
        default="bilinear",
        description="Resampling filter of the resize to size (the aspect ratio is not kept).",
    )
    scale: float = Field(
        default=1 / 255, gt=0, description="Factor applied to the 0-255 pixel values before mean and std."
    )
    mean: list[float] | None = Field(
        default=None,
        description="Per channel, subtracted after scaling; default 0. Output: (pixel * scale - mean) / std.",
    )
    std: list[float] | None = Field(
        default=None, description="Per channel, nonzero, divides after the mean; default 1."
    )
    layout: Literal["NCHW", "NHWC"] = Field(
        default="NCHW", description="NCHW: pixel_values dims [C, H, W]; NHWC: [H, W, C]."
    )
    dtype: Literal["FP32", "FP16"] = Field(default="FP32", description="Data type of pixel_values.")
    backend: Literal["python", "dali"] = Field(
        default="python",
        description="python: Pillow in Triton's Python backend; dali: a DALI pipeline (model.dali) for "
        "Triton's DALI backend, decoding on the GPU (needs nvidia.dali at build time).",
    )

    @field_validator("size")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        if any(v < 1 or v > _INT64_MAX for v in value):
            raise ValueError("height and width must be positive integers")
        return value

    @field_validator("dtype", mode="before")
    @classmethod
    def _dtype(cls, value: Any) -> Any:
        return value.upper().removeprefix("TYPE_") if isinstance(value, str) else value

    @field_validator("scale")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    @model_validator(mode="after")
    def _per_channel(self) -> ImageSettings:
        problems = []
        for name in ("mean", "std"):
            values = getattr(self, name)
            if values is not None and len(values) != self.channels:
                problems.append(f"{name} needs {self.channels} value(s), one per channel, got {len(values)}")
            elif values is not None and not all(math.isfinite(v) for v in values):
                problems.append(f"{name} values must be finite numbers")
        if self.std is not None and any(v == 0 for v in self.std):
            problems.append("std values must not be 0")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class PostprocessSettings(_Settings):
    """Settings of ``builtin:postprocess``: logits (FP32 [N]) to probabilities and the top k classes."""

    classes: int | None = Field(
        default=None,
        ge=1,
        le=_INT64_MAX,
        description="N, the number of classes; default: the number of labels.",
    )
    labels: str | None = Field(
        default=None,
        min_length=1,
        description="Path of a text file with one label per line, relative to the spec's directory: adds "
        "the labels output and, with softmax, Triton's classification extension on probabilities.",
    )
    softmax: bool = Field(
        default=True, description="Apply softmax: adds the probabilities output; scores are probabilities."
    )
    top_k: int | None = Field(
        default=None,
        ge=1,
        le=_INT64_MAX,
        description="How many classes scores, indices and labels hold; default min(5, N).",
    )


#: The built-in step kinds and their settings models.
STEP_KINDS: dict[str, type[BaseModel]] = {
    "tokenizer": TokenizerSettings,
    "image": ImageSettings,
    "postprocess": PostprocessSettings,
}


@dataclass(frozen=True)
class StepDefinition:
    """What a built-in step becomes in a model repository.

    Attributes:
        kind: The step kind (``tokenizer``, ``image``, ``postprocess``).
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


def _source_file(setting: str, value: str, spec_dir: Path) -> Path:
    """A file named by a setting, resolved against the spec's directory; SpecError if it is not a file."""
    path = Path(value).expanduser()
    path = path if path.is_absolute() else spec_dir / path
    if not path.is_file():
        what = "is a directory, not a file" if path.is_dir() else "does not exist"
        raise SpecError(f"step.{setting}: '{path}' {what}; give the path relative to the spec's directory")
    return path


def _tokenizer(settings: TokenizerSettings, spec_dir: Path) -> StepDefinition:
    path = _source_file("tokenizer", settings.tokenizer, spec_dir)
    pad_token = _pad_token(path, settings.pad_token)
    length = settings.max_length if settings.padding == "max_length" else -1
    return StepDefinition(
        kind="tokenizer",
        settings=settings,
        inputs=[{"name": "text", "dtype": "STRING", "dims": [1]}],
        outputs=[{"name": name, "dtype": settings.dtype, "dims": [length]} for name in settings.outputs],
        parameters={
            "max_length": str(settings.max_length),
            "padding": settings.padding,
            "truncation": _bool(settings.truncation),
            "add_special_tokens": _bool(settings.add_special_tokens),
            "dtype": settings.dtype,
            "outputs": ",".join(settings.outputs),
            "pad_token": pad_token,
        },
        model_file=_HERE / "tokenizer.py",
        version_files={"tokenizer.json": path},
    )


def _pad_token(path: Path, wanted: str | None) -> str:
    """The pad token of a tokenizer.json: ``wanted`` (checked against its vocabulary) or its own."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        reason = " ".join(str(error).split())
        raise SpecError(f"step.tokenizer: '{path}' is not a tokenizer.json file ({reason})") from None
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise SpecError(
            f"step.tokenizer: '{path}' is not a Hugging Face tokenizer.json (it has no 'model' section)"
        )
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
    height, width = settings.size
    mean = settings.mean or [0.0] * settings.channels
    std = settings.std or [1.0] * settings.channels
    dims = (
        [settings.channels, height, width]
        if settings.layout == "NCHW"
        else [height, width, settings.channels]
    )
    outputs = [{"name": "pixel_values", "dtype": settings.dtype, "dims": dims}]
    parameters = {
        "size": f"{height},{width}",
        "channels": str(settings.channels),
        "resize": settings.resize,
        "scale": repr(settings.scale),
        "mean": ",".join(repr(float(v)) for v in mean),
        "std": ",".join(repr(float(v)) for v in std),
        "layout": settings.layout,
        "dtype": settings.dtype,
    }
    if settings.backend == "dali":
        if not dali.dali_available():
            raise dali.missing_dali()
        writer = partial(
            dali.write_pipeline,
            size=[height, width],
            channels=settings.channels,
            resize=settings.resize,
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
        parameters=parameters,
        model_file=_HERE / "image.py",
    )


def _postprocess(settings: PostprocessSettings, spec_dir: Path) -> StepDefinition:
    labels_path = _source_file("labels", settings.labels, spec_dir) if settings.labels else None
    labels = _read_labels(labels_path) if labels_path else None
    classes, top_k = _classes_and_top_k(settings, labels_path, labels)
    outputs: list[dict[str, Any]] = []
    if settings.softmax:
        probabilities: dict[str, Any] = {"name": "probabilities", "dtype": "FP32", "dims": [classes]}
        if labels_path:
            probabilities["label_filename"] = LABELS_FILE
        outputs.append(probabilities)
    outputs += [
        {"name": "scores", "dtype": "FP32", "dims": [top_k]},
        {"name": "indices", "dtype": "INT64", "dims": [top_k]},
    ]
    parameters = {"classes": str(classes), "top_k": str(top_k), "softmax": _bool(settings.softmax)}
    version_files: dict[str, Path] = {}
    model_files: dict[str, Path] = {}
    if labels_path:
        outputs.append({"name": "labels", "dtype": "STRING", "dims": [top_k]})
        parameters["labels_file"] = LABELS_FILE
        version_files[LABELS_FILE] = labels_path
        if settings.softmax:
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


def _classes_and_top_k(
    settings: PostprocessSettings, labels_path: Path | None, labels: list[str] | None
) -> tuple[int, int]:
    """N (from classes or the labels) and k; SpecError when they are unknown or disagree."""
    problems = []
    if labels is not None and settings.classes is not None and settings.classes != len(labels):
        problems.append(
            f"step.classes: {settings.classes} classes but '{labels_path}' has {len(labels)} labels; "
            "make them agree or leave classes out"
        )
    classes = settings.classes if settings.classes is not None else (len(labels) if labels else 0)
    if not classes:
        problems.append("step.classes: the number of classes is unknown; set classes or labels")
    top_k = settings.top_k if settings.top_k is not None else min(5, classes or 5)
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


def _bool(value: bool) -> str:
    return "true" if value else "false"


_DEFINERS: dict[str, Callable[[Any, Path], StepDefinition]] = {
    "tokenizer": _tokenizer,
    "image": _image,
    "postprocess": _postprocess,
}
