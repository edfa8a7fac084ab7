"""The image step's settings (``source: builtin:image``): :class:`ImageSettings`, validated as a spec is
loaded, and what they become in a model config: the output's dims and the ``parameters`` ``image.py``
reads back (:func:`image_parameters`), and what ``backend: dali`` cannot do (:func:`dali_problems`).

The settings speak transformers' vocabulary where it has one: ``resize: {shortest_edge: N}`` (with
``longest_edge``), ``{height: H, width: W}``, ``center_crop``, ``resample`` (a name or Pillow's code
0-5), ``crop_pct`` (ConvNeXT's rule); ``size``, ``mean`` and ``std`` take one number for all.
"""

from __future__ import annotations

import json
import math
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from generator.steps.base_settings import INT64_MAX, StepSettings, canonical_name, parameter_flag

#: Resampling filters by Pillow's (and transformers') code 0-5 (image.py has the same tuple).
RESAMPLE = ("nearest", "lanczos", "bilinear", "bicubic", "box", "hamming")
#: The filters of ``resize_method: tensorflow``.
TF_RESAMPLE = ("bilinear", "nearest", "bicubic")
#: The filters DALI's fn.resize has for the step's (its pipeline takes no others).
DALI_RESAMPLE = ("bilinear", "nearest", "bicubic")
_RESIZE_FORMS = (
    "{shortest_edge: N} (with longest_edge: M or not), {height: H, width: W}, none, or a filter name "
    f"({', '.join(RESAMPLE)})"
)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _pair(value: Any) -> Any:
    """One number (a square) or [height, width] as [height, width]; ValueError otherwise."""
    if value is None:
        return None
    numbers = [value] if _is_int(value) else value
    if not isinstance(numbers, (list, tuple)) or len(numbers) not in (1, 2):
        count = f", got {len(numbers)} values" if isinstance(numbers, (list, tuple)) else ""
        raise ValueError(f"must be [height, width] or one number (a square){count}")
    if not all(_is_int(v) and 1 <= v <= INT64_MAX for v in numbers):
        raise ValueError("height and width must be positive integers")
    return [int(numbers[0]), int(numbers[-1])]


class ImageSettings(StepSettings):
    """Settings of ``builtin:image``: encoded images (TYPE_STRING [1]) to normalised ``pixel_values``."""

    size: int | list[int] | None = Field(
        default=None,
        description="[height, width] (or one number, a square) to resize to, the aspect ratio not kept; "
        "the output's size unless center_crop is set.",
    )
    channels: Literal[1, 3] = Field(default=3, description="3: RGB; 1: grey (Pillow's mode L).")
    resize: str | dict[str, int] | None = Field(
        default=None,
        description="{shortest_edge: N}: the shorter side becomes N, the aspect ratio kept (longest_edge: M "
        "caps the longer side), sizes as transformers computes them; {height: H, width: W}: as size; none: "
        "no resize. A filter name is the older spelling of resample. Default: to size.",
    )
    resample: str | int = Field(
        default="bilinear",
        description=f"The resize's filter: {', '.join(RESAMPLE)}, or its Pillow / transformers code 0-5.",
    )
    resize_method: Literal["pillow", "tensorflow"] = Field(
        default="pillow",
        description="pillow: Pillow's resize (as transformers' image processors); tensorflow: "
        "tf.image.resize without antialiasing (bilinear, nearest, bicubic; values not rounded to 8 bits), "
        "as Keras-trained models expect.",
    )
    alpha: Literal["white", "drop"] = Field(
        default="white",
        description="How a transparent image becomes RGB or grey: white: composited onto white (as "
        "transformers' convert_rgb); drop: the alpha channel dropped (as transformers' pipelines load an "
        "image, and Pillow's convert).",
    )
    exif_orientation: bool = Field(
        default=False,
        description="Turn an image upright by its EXIF orientation before anything else (as transformers' "
        "pipelines load an image).",
    )
    center_crop: int | list[int] | None = Field(
        default=None,
        description="[height, width] (or one number) cropped around the centre after the resize, as "
        "transformers' center_crop (zeros where the image is smaller); the output's size.",
    )
    crop_pct: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="With resize {shortest_edge: N}: the shorter side becomes int(N / crop_pct), then a "
        "centre crop of N x N (ConvNeXT's rule below 384).",
    )
    scale: float = Field(
        default=1 / 255, gt=0, description="Factor applied to the 0-255 pixel values before mean and std."
    )
    mean: float | list[float] | None = Field(
        default=None,
        description="Per channel (or one number for all), subtracted after scaling; default 0. Output: "
        "(pixel * scale - mean) / std.",
    )
    std: float | list[float] | None = Field(
        default=None,
        description="Per channel (or one number for all), nonzero, divides after the mean; default 1.",
    )
    layout: Literal["NCHW", "NHWC"] = Field(
        default="NCHW", description="NCHW (or nchw): pixel_values dims [C, H, W]; NHWC: [H, W, C]."
    )
    dtype: Literal["FP32", "FP16"] = Field(default="FP32", description="Data type of pixel_values.")
    backend: Literal["python", "dali"] = Field(
        default="python",
        description="python: Pillow in Triton's Python backend; dali: a DALI pipeline (model.dali) for "
        "Triton's DALI backend, decoding on the GPU (needs nvidia.dali at build time; resizes to size only).",
    )
    processor: str | None = Field(
        default=None,
        min_length=1,
        description="A Hugging Face model folder or its preprocessor_config.json, relative to the spec's "
        "directory: resize, center_crop, resample, scale, mean and std as its image processor does them; "
        "settings written here override them.",
    )

    @model_validator(mode="before")
    @classmethod
    def _filter_spelling(cls, data: Any) -> Any:
        """``resize: bicubic`` (the older spelling) is ``resample: bicubic``."""
        if not isinstance(data, dict) or not isinstance(data.get("resize"), str):
            return data
        name = data["resize"].strip().lower()
        if name not in RESAMPLE:
            return data
        settings = {key: value for key, value in data.items() if key != "resize"}
        if "resample" in settings and _resample_name(settings["resample"]) not in (None, name):
            raise ValueError(
                f"resize: {data['resize']} (a filter) and resample: {settings['resample']} disagree; "
                "set only resample"
            )
        settings["resample"] = name
        return settings

    @field_validator("size", "center_crop", mode="before")
    @classmethod
    def _pairs(cls, value: Any) -> Any:
        return _pair(value)

    @field_validator("resize", mode="before")
    @classmethod
    def _resize(cls, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, str) and value.strip().lower() == "none":
            return "none"
        forms = ({"shortest_edge"}, {"shortest_edge", "longest_edge"}, {"height", "width"})
        if (
            isinstance(value, dict)
            and set(value) in forms
            and all(_is_int(v) and v >= 1 for v in value.values())
        ):
            order = ("height", "width", "shortest_edge", "longest_edge")
            return {key: int(value[key]) for key in order if key in value}
        raise ValueError(f"must be {_RESIZE_FORMS}")

    @field_validator("resample", mode="before")
    @classmethod
    def _resample(cls, value: Any) -> Any:
        name = _resample_name(value)
        if name is None:
            raise ValueError(f"must be one of {', '.join(RESAMPLE)}, or Pillow's code 0-5")
        return name

    @field_validator("mean", "std", mode="before")
    @classmethod
    def _broadcast(cls, value: Any, info: ValidationInfo) -> Any:
        def number(item: Any) -> bool:
            return isinstance(item, (int, float)) and not isinstance(item, bool)

        if value is None:
            return None
        if number(value):
            return [float(value)] * int(info.data.get("channels", 3))
        if not isinstance(value, (list, tuple)) or not all(number(v) for v in value):
            raise ValueError("must be a number (for every channel) or a list of numbers, one per channel")
        return [float(v) for v in value]

    @field_validator("layout", "dtype", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return canonical_name(value)

    @field_validator("scale")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ImageSettings:
        problems = [*self._channel_problems(), *self._geometry_problems()]
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _channel_problems(self) -> list[str]:
        problems = []
        for name in ("mean", "std"):
            values = getattr(self, name)
            if values is not None and len(values) != self.channels:
                problems.append(f"{name} needs {self.channels} value(s), one per channel, got {len(values)}")
            elif values is not None and not all(math.isfinite(v) for v in values):
                problems.append(f"{name} values must be finite numbers")
        if self.std is not None and any(v == 0 for v in self.std):
            problems.append("std values must not be 0")
        return problems

    def _geometry_problems(self) -> list[str]:
        problems = []
        resize = self.resize if isinstance(self.resize, dict) else {}
        if self.size is not None and self.resize is not None:
            problems.append(
                f"size and resize: {_shown(self.resize)} both set the resize; keep one (the output's size "
                "after resize {shortest_edge: N} is center_crop's)"
            )
        if self.crop_pct is not None and (set(resize) != {"shortest_edge"} or self.center_crop is not None):
            problems.append(
                "crop_pct needs resize: {shortest_edge: N} and no center_crop (the shorter side becomes "
                "int(N / crop_pct), then a centre crop of N x N)"
            )
        if self.resize_method == "tensorflow" and self.resample not in TF_RESAMPLE:
            problems.append(
                f"resize_method: tensorflow does {', '.join(TF_RESAMPLE)}, not resample: {self.resample}"
            )
        unresized = self.size is None and self.resize is None
        if self.processor is None and not problems and (output_size(self) is None or unresized):
            problems.append(_unknown_size(self))
        return problems


def _resample_name(value: Any) -> str | None:
    if _is_int(value) and 0 <= value < len(RESAMPLE):
        return RESAMPLE[value]
    if isinstance(value, str):
        text = value.strip().lower()
        if text.isdigit() and int(text) < len(RESAMPLE):
            return RESAMPLE[int(text)]
        if text in RESAMPLE:
            return text
    return None


def _shown(value: Any) -> str:
    return json.dumps(value).replace('"', "") if isinstance(value, dict) else str(value)


def _unknown_size(settings: ImageSettings) -> str:
    if settings.resize is None and settings.size is None:
        if settings.center_crop is not None:
            return (
                "center_crop without a resize: set size or resize (resize: none crops the images as they are)"
            )
        return (
            "size is required: [height, width] of the output (or resize: {height: H, width: W}, or "
            "processor: a Hugging Face model folder)"
        )
    return (
        f"resize: {_shown(settings.resize)} keeps each image's own size, and a batch needs one; add "
        "center_crop: [height, width] (the output's size)"
    )


def resize_size(settings: ImageSettings) -> list[int] | None:
    """The [height, width] every image is resized to, when the resize has one (``size`` or
    ``resize: {height, width}``)."""
    if settings.size is not None:
        return list(settings.size)  # type: ignore[arg-type]
    if isinstance(settings.resize, dict) and "height" in settings.resize:
        return [settings.resize["height"], settings.resize["width"]]
    return None


def crop_size(settings: ImageSettings) -> list[int] | None:
    """The centre crop's [height, width]: ``center_crop``, or N x N with ``crop_pct``."""
    if settings.center_crop is not None:
        return list(settings.center_crop)  # type: ignore[arg-type]
    if settings.crop_pct is not None and isinstance(settings.resize, dict):
        edge = settings.resize["shortest_edge"]
        return [edge, edge]
    return None


def output_size(settings: ImageSettings) -> list[int] | None:
    """The output's [height, width]: the crop's, else the resize's; None when images keep their own."""
    return crop_size(settings) or resize_size(settings)


def image_parameters(settings: ImageSettings) -> dict[str, str]:
    """The config ``parameters`` image.py reads back: the resize resolved (``crop_pct`` applied)."""
    mean = settings.mean or [0.0] * settings.channels
    std = settings.std or [1.0] * settings.channels
    parameters = {"channels": str(settings.channels)}
    fixed = resize_size(settings)
    if fixed is not None:
        parameters["size"] = f"{fixed[0]},{fixed[1]}"
    elif settings.crop_pct is not None and isinstance(settings.resize, dict):
        edge = int(settings.resize["shortest_edge"] / settings.crop_pct)  # as ConvNeXT's processor
        parameters["resize"] = json.dumps({"shortest_edge": edge})
    elif settings.resize is not None:
        parameters["resize"] = json.dumps(settings.resize) if isinstance(settings.resize, dict) else "none"
    crop = crop_size(settings)
    if crop is not None:
        parameters["center_crop"] = f"{crop[0]},{crop[1]}"
    parameters.update(
        resample=str(settings.resample),
        resize_method=settings.resize_method,
        alpha=settings.alpha,
        exif_orientation=parameter_flag(settings.exif_orientation),
        scale=repr(settings.scale),
        mean=",".join(repr(float(v)) for v in mean),  # type: ignore[union-attr]
        std=",".join(repr(float(v)) for v in std),  # type: ignore[union-attr]
        layout=settings.layout,
        dtype=settings.dtype,
    )
    return parameters


def dali_problems(settings: ImageSettings) -> list[str]:
    """What ``backend: dali``'s pipeline (decode, resize to size, normalise) cannot do yet: one line per
    setting, naming it and the fix."""
    fix = "use backend: python"
    problems = []
    if resize_size(settings) is None:
        problems.append(
            f"step.resize: backend: dali resizes to a fixed size only, not {_shown(settings.resize)}; set "
            f"size, or {fix}"
        )
    if crop_size(settings) is not None:
        setting = "center_crop" if settings.center_crop is not None else "crop_pct"
        problems.append(f"step.{setting}: backend: dali does not crop yet; {fix}")
    if settings.resize_method != "pillow":
        problems.append(
            f"step.resize_method: backend: dali resizes with DALI, not {settings.resize_method}; {fix}"
        )
    if settings.resample not in DALI_RESAMPLE:
        problems.append(
            f"step.resample: backend: dali does {', '.join(DALI_RESAMPLE)}, not {settings.resample}; {fix}"
        )
    return problems
