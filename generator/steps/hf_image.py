"""Hugging Face image processors as the image step takes them: a model folder's ``preprocessor_config.json``.

:func:`image_settings_from_processor` reads the file as transformers' image processors read it (the
legacy forms too: ``feature_extractor_type``, an int or [h, w] ``size``, keys left to the class's
defaults) and returns the image step's settings that reproduce the processor: the resize (``size`` as
``{height, width}``, ``{shortest_edge}`` or ``{shortest_edge, longest_edge}``; ConvNeXT's ``crop_pct``
rule), ``resample``, the centre crop, the rescale and the normalisation. Only processors whose
preprocessing is exactly that are accepted (:data:`PROCESSORS`); anything else the step would not
reproduce (``do_pad``, another size form, another processor class) is a :class:`SpecError` naming the key
and the fix; :func:`override_image_settings` lays a spec's own settings over them. Nothing here imports
transformers.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from generator.core.errors import SpecError
from generator.core.jsonfile import read_json
from generator.steps.image_settings import RESAMPLE

PROCESSOR_FILE = "preprocessor_config.json"
_HALF = (0.5, 0.5, 0.5)  # transformers' IMAGENET_STANDARD_MEAN and _STD
_IMAGENET_MEAN = (0.485, 0.456, 0.406)  # IMAGENET_DEFAULT_MEAN
_IMAGENET_STD = (0.229, 0.224, 0.225)
_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OPENAI_CLIP_MEAN
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
#: ConvNeXT warps to a square from this shortest edge up, and resizes and crops below it.
_CONVNEXT_WARP = 384


@dataclass(frozen=True)
class ProcessorDefaults:
    """What an image processor class does for keys its file leaves out (transformers 5's class
    attributes), and how it reads an int ``size``.

    Attributes:
        resample: Pillow's filter code.
        mean: ``image_mean``.
        std: ``image_std``.
        square: An int ``size`` is {height, width} (True) or {shortest_edge} (False): ``default_to_square``.
        size: ``size``.
        center_crop: ``do_center_crop``.
        crop_size: ``crop_size`` as one side of a square, or None.
    """

    resample: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    square: bool
    size: dict[str, int]
    center_crop: bool = False
    crop_size: int | None = None


#: The processors whose preprocessing the image step reproduces: transformers' generic one (resize,
#: centre crop, rescale, normalise) and ConvNeXT's crop_pct resize. The names are the classes' names in
#: ``image_processor_type`` (``...FeatureExtractor`` and ``...Fast`` spellings are read as these).
def _square(side: int) -> dict[str, int]:
    return {"height": side, "width": side}


PROCESSORS: dict[str, ProcessorDefaults] = {
    "ViTImageProcessor": ProcessorDefaults(2, _HALF, _HALF, True, _square(224)),
    "DeiTImageProcessor": ProcessorDefaults(3, _HALF, _HALF, True, _square(256), True, 224),
    "BeitImageProcessor": ProcessorDefaults(3, _HALF, _HALF, True, _square(224), False, 224),
    "CLIPImageProcessor": ProcessorDefaults(
        3, _CLIP_MEAN, _CLIP_STD, False, {"shortest_edge": 224}, True, 224
    ),
    "ChineseCLIPImageProcessor": ProcessorDefaults(
        3, _CLIP_MEAN, _CLIP_STD, False, {"shortest_edge": 224}, True, 224
    ),
    "BitImageProcessor": ProcessorDefaults(
        3, _CLIP_MEAN, _CLIP_STD, False, {"shortest_edge": 224}, True, 224
    ),
    "MobileNetV1ImageProcessor": ProcessorDefaults(2, _HALF, _HALF, False, {"shortest_edge": 256}, True, 224),
    "MobileNetV2ImageProcessor": ProcessorDefaults(2, _HALF, _HALF, False, {"shortest_edge": 256}, True, 224),
    "SiglipImageProcessor": ProcessorDefaults(3, _HALF, _HALF, False, _square(224)),
    "BlipImageProcessor": ProcessorDefaults(3, _CLIP_MEAN, _CLIP_STD, True, _square(384)),
    "PvtImageProcessor": ProcessorDefaults(3, _IMAGENET_MEAN, _IMAGENET_STD, True, _square(224)),
    "ConvNextImageProcessor": ProcessorDefaults(3, _HALF, _HALF, False, {"shortest_edge": 384}),
}
#: Keys that change only what the step never sees (segmentation maps), or only the tensor type.
_IGNORED_SWITCHES = ("do_reduce_labels", "do_convert_rgb")


def image_settings_from_processor(path: Path) -> dict[str, Any]:
    """The image step's settings that reproduce a Hugging Face image processor.

    Args:
        path: A model folder holding ``preprocessor_config.json``, or that file.

    Returns:
        Plain values valid for :class:`generator.steps.ImageSettings`: ``resize`` ({"height", "width"},
        {"shortest_edge"} or {"shortest_edge", "longest_edge"}; "none" with ``do_resize: false``),
        ``resample``, ``center_crop`` ([h, w], with ``do_center_crop``), ``scale`` (``rescale_factor``,
        1.0 with ``do_rescale: false``), ``mean`` and ``std`` (with ``do_normalize``); ``alpha: drop`` and
        ``exif_orientation: true``, as transformers' pipelines load images.

    Raises:
        SpecError: No such file, not JSON, or something the step does not reproduce: one line per
            problem, naming the file, the key and the fix.
    """
    file = Path(path) / PROCESSOR_FILE if Path(path).is_dir() else Path(path)
    if not file.is_file():
        raise SpecError(
            f"'{path}' has no {PROCESSOR_FILE}; give a Hugging Face model folder that has one, or the file"
        )
    try:
        config = read_json(file)
    except ValueError as reason:
        raise SpecError(
            f"'{file}' is not a JSON file ({reason}); give the folder's {PROCESSOR_FILE}"
        ) from None
    if not isinstance(config, dict):
        raise SpecError(f"'{file}' is not an image processor's configuration (not a JSON object)")
    name, defaults = _processor_class(config, file)
    problems = [f"'{file}': {line}" for line in _unsupported(config)]
    settings: dict[str, Any] = {}
    for part in (_geometry, _values):
        try:
            settings.update(part(config, name, defaults))
        except ValueError as error:
            problems.append(f"'{file}': {error}")
    if problems:
        raise SpecError(*problems)
    # transformers' pipelines load an image upright by its EXIF orientation and drop any alpha channel
    # (load_image: exif_transpose, convert("RGB")) before the processor sees it.
    settings.update(alpha="drop", exif_orientation=True)
    return settings


def override_image_settings(derived: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A processor's settings with the ones a spec writes over them: each written setting replaces the
    derived one; ``size`` (a warp to that size) also replaces the derived ``resize``, ``resize`` the derived
    ``size``, and ``crop_pct`` the derived ``center_crop``.

    Args:
        derived: What :func:`image_settings_from_processor` returned.
        overrides: The settings the spec writes.

    Returns:
        The merged settings (copies; the arguments are left as they are).
    """
    merged = copy.deepcopy(dict(derived))
    replaced = {"size": ("resize",), "resize": ("size",), "crop_pct": ("center_crop",)}
    for name in overrides:
        for other in replaced.get(name, ()):
            merged.pop(other, None)
    merged.update(copy.deepcopy(dict(overrides)))
    return merged


def _processor_class(config: dict[str, Any], file: Path) -> tuple[str, ProcessorDefaults]:
    """The processor class's name (``image_processor_type``, else the legacy ``feature_extractor_type``)
    and its defaults; SpecError for a class the step does not reproduce."""
    raw = config.get("image_processor_type") or config.get("feature_extractor_type")
    name = (
        str(raw or "").replace("FeatureExtractor", "ImageProcessor").removesuffix("Pil").removesuffix("Fast")
    )
    if name in PROCESSORS:
        return name, PROCESSORS[name]
    known = ", ".join(sorted(PROCESSORS))
    what = f"image_processor_type '{raw}'" if raw else "no image_processor_type"
    raise SpecError(
        f"'{file}': {what}: the image step reproduces only {known}; set the step's resize, center_crop, "
        "resample, scale, mean and std in the spec instead of processor"
    )


def _unsupported(config: dict[str, Any]) -> list[str]:
    """Switches on in the file that the step does not do: one line each, naming the key and the fix."""
    lines = []
    for key, value in sorted(config.items()):
        if key.startswith("do_") and value is True and key not in _IGNORED_SWITCHES:
            if key in ("do_resize", "do_center_crop", "do_rescale", "do_normalize"):
                continue
            lines.append(
                f"{key}: true is a step the image step does not do; set it to false in the file if the "
                "model does not need it, or preprocess with a Python model of your own"
            )
    return lines


def _geometry(config: dict[str, Any], name: str, defaults: ProcessorDefaults) -> dict[str, Any]:
    """``resize`` and ``center_crop``; ValueError naming the key for what the step cannot do."""
    resize: dict[str, int] | str = "none"
    if config.get("do_resize", True):
        resize = _size(config.get("size", defaults.size), defaults.square)
    crop = None
    if config.get("do_center_crop", defaults.center_crop):
        crop = _crop(config.get("crop_size", defaults.crop_size))
    if name == "ConvNextImageProcessor" and isinstance(resize, dict):
        return _convnext(config, resize, crop)
    return {"resize": resize} if crop is None else {"resize": resize, "center_crop": crop}


def _convnext(config: dict[str, Any], resize: dict[str, int], crop: list[int] | None) -> dict[str, Any]:
    """ConvNeXT's resize: below 384, the shortest edge to int(N / crop_pct) then an N x N centre crop;
    from 384 up, a warp to N x N."""
    if set(resize) != {"shortest_edge"}:
        raise ValueError(f"size {resize}: ConvNeXT's processor takes only {{shortest_edge: N}}; fix size")
    if crop is not None:
        raise ValueError(
            "do_center_crop: true after ConvNeXT's crop_pct crop is not reproduced; set it to false, or set "
            "the step's resize and center_crop in the spec"
        )
    edge = resize["shortest_edge"]
    if edge >= _CONVNEXT_WARP:
        return {"resize": {"height": edge, "width": edge}}
    crop_pct = config.get("crop_pct", 224 / 256)
    if isinstance(crop_pct, bool) or not isinstance(crop_pct, (int, float)) or not 0 < crop_pct <= 1:
        raise ValueError(f"crop_pct {json.dumps(crop_pct)}: must be a number in (0, 1]; fix crop_pct")
    return {"resize": {"shortest_edge": int(edge / crop_pct)}, "center_crop": [edge, edge]}


def _positive(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _size(size: Any, square: bool) -> dict[str, int]:
    """A processor's ``size`` as the step's resize mapping (transformers' ``get_size_dict``)."""
    if isinstance(size, list) and len(size) == 1:
        size = size[0]
    if _positive(size):
        return {"height": size, "width": size} if square else {"shortest_edge": size}
    if isinstance(size, list) and len(size) == 2 and all(_positive(v) for v in size):
        return {"height": size[0], "width": size[1]}
    forms = ({"height", "width"}, {"shortest_edge"}, {"shortest_edge", "longest_edge"})
    if isinstance(size, dict) and set(size) in forms and all(_positive(v) for v in size.values()):
        return dict(size)
    raise ValueError(
        f"size {json.dumps(size)}: the image step resizes to {{height, width}}, {{shortest_edge}} or "
        "{shortest_edge, longest_edge}; set the step's resize (or size) in the spec"
    )


def _crop(crop: Any) -> list[int]:
    """A processor's ``crop_size`` as [height, width]."""
    if _positive(crop):
        return [crop, crop]
    if isinstance(crop, list) and len(crop) == 2 and all(_positive(v) for v in crop):
        return list(crop)
    if isinstance(crop, dict) and set(crop) == {"height", "width"} and all(map(_positive, crop.values())):
        return [crop["height"], crop["width"]]
    raise ValueError(
        f"crop_size {json.dumps(crop)}: must be {{height: H, width: W}}; set the step's center_crop in the spec"
    )


def _resample(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(RESAMPLE):
        return RESAMPLE[value]
    if isinstance(value, str) and value.lower() in RESAMPLE:
        return value.lower()
    raise ValueError(
        f"resample {json.dumps(value)}: not one of Pillow's filters 0-5 ({', '.join(RESAMPLE)}); fix resample"
    )


def _values(config: dict[str, Any], name: str, defaults: ProcessorDefaults) -> dict[str, Any]:
    """``resample``, ``scale``, ``mean`` and ``std``; ValueError naming the key for a malformed one."""
    values: dict[str, Any] = {"resample": _resample(config.get("resample", defaults.resample))}
    factor = config.get("rescale_factor", 1 / 255)
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not factor > 0:
        raise ValueError(
            f"rescale_factor {json.dumps(factor)}: must be a positive number; fix rescale_factor"
        )
    values["scale"] = float(factor) if config.get("do_rescale", True) else 1.0
    if config.get("do_normalize", True):
        for key, setting, default in (
            ("image_mean", "mean", defaults.mean),
            ("image_std", "std", defaults.std),
        ):
            value = config.get(key, list(default))
            numbers = value if isinstance(value, list) else [value]
            if not numbers or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers
            ):
                raise ValueError(f"{key} {json.dumps(value)}: must be a number or one per channel; fix {key}")
            values[setting] = float(value) if not isinstance(value, list) else [float(v) for v in value]
    return values
