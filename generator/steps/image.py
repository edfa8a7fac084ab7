"""Built-in step ``image``: encoded images to normalised pixel arrays with Pillow, as a Triton
Python-backend model.

Input ``image`` (TYPE_STRING, dims [1]: the bytes of one JPEG, PNG or other Pillow-readable image per batch
row). Output ``pixel_values`` (FP32 or FP16), dims [C, H, W] (``layout: NCHW``) or [H, W, C] (``NHWC``).
Each image is decoded and converted to RGB (``channels: 3``) or L (``channels: 1``) as Hugging Face
transformers' ``convert_rgb`` does (transparency composited onto white), with 16-bit grey (Pillow's modes
``I;16``, ``I;16B``, ``I``) scaled to 8 bits by its high byte (as TensorFlow's PNG decoder does) instead of
clipped; then resized, centre-cropped, and turned into ``(pixel * scale - mean) / std`` per channel.

The resize is Pillow's (``resize_method: pillow``, the filter ``resample``) or TensorFlow's
``tf.image.resize`` without antialiasing (``resize_method: tensorflow``: bilinear, nearest or bicubic
with half-pixel centres, computed here in numpy). Its target is ``size`` (height, width; the aspect ratio
is not kept), ``resize: {"shortest_edge": N}`` (the aspect ratio kept, with an optional
``"longest_edge"`` cap, sizes computed as transformers computes them), or ``resize: none``.
``center_crop`` (height, width) then crops around the centre as transformers' ``center_crop`` does,
padding with zeros where the image is smaller; the output's size is the crop's when there is one.

The settings arrive as the model config's ``parameters`` (strings): ``size`` and ``center_crop``
("H,W"), ``resize`` ("none" or a JSON object), ``resample``, ``resize_method``, ``channels``,
``scale``, ``mean`` and ``std`` (comma-separated, one per channel), ``layout`` and ``dtype``. An image that
cannot be decoded fails its own request, with an error naming its batch row; the other requests of the
execution succeed.

This file is copied into a model repository as ``model.py`` and runs in Triton's Python backend stub with
only numpy and Pillow installed: it imports nothing from the package it ships in. :class:`PreprocessImage`
does the work without Triton.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence

import numpy as np

OUTPUT = "pixel_values"
#: Resampling filters by Pillow's (and transformers') code: NEAREST=0, LANCZOS=1, ... HAMMING=5.
RESAMPLE = ("nearest", "lanczos", "bilinear", "bicubic", "box", "hamming")
#: The filters of ``resize_method: tensorflow`` (tf.image.resize's methods without antialiasing).
TF_RESAMPLE = ("bilinear", "nearest", "bicubic")
RESIZE_METHODS = ("pillow", "tensorflow")
DEFAULTS: dict[str, object] = {
    "channels": 3,
    "resize": None,  # to size
    "resample": "bilinear",
    "resize_method": "pillow",
    "alpha": "white",
    "exif_orientation": False,
    "center_crop": None,
    "scale": 1 / 255,
    "mean": None,  # 0 per channel
    "std": None,  # 1 per channel
    "layout": "NCHW",
    "dtype": "FP32",
}
_NUMPY = {"FP32": np.float32, "FP16": np.float16}
#: Pillow's modes of 16-bit grey (a 16-bit PNG opens as I;16, or I in older Pillow).
_WIDE_GREY = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_RESIZE_KEYS = ({"height", "width"}, {"shortest_edge"}, {"shortest_edge", "longest_edge"})


def _floats(value: object) -> list[float]:
    parts = value.split(",") if isinstance(value, str) else value
    if isinstance(parts, (int, float)):
        return [float(parts)]
    return [float(part) for part in parts]  # type: ignore[union-attr]


def _per_channel(name: str, value: object, channels: int, default: float) -> np.ndarray:
    values = [default] * channels if value is None else _floats(value)
    if len(values) == 1:
        values = values * channels
    if len(values) != channels:
        raise ValueError(f"{name} needs {channels} value(s), one per channel, got {len(values)}")
    return np.asarray(values, dtype=np.float32)


def _pair(name: str, value: object) -> tuple[int, int]:
    """``[height, width]``, "H,W", or one number for a square."""
    try:
        numbers = _floats(value)
    except (TypeError, ValueError):
        numbers = []
    if len(numbers) == 1:
        numbers = numbers * 2
    if len(numbers) != 2 or any(v < 1 or v != int(v) for v in numbers):
        raise ValueError(f"{name} must be [height, width] (or one number), positive integers, got {value}")
    return int(numbers[0]), int(numbers[1])


def resample_name(value: object) -> str:
    """A filter's name from its name or its Pillow / transformers code (0-5).

    Raises:
        ValueError: Neither.
    """
    text = str(value).strip().lower()
    if text.isdigit() and int(text) < len(RESAMPLE):
        return RESAMPLE[int(text)]
    if text not in RESAMPLE:
        raise ValueError(f"resample must be one of {', '.join(RESAMPLE)} (or a code 0-5), got '{value}'")
    return text


def resize_target(value: object) -> dict[str, int] | str:
    """``resize`` as ``"none"`` or a mapping with the keys ``height`` and ``width``, ``shortest_edge``, or
    ``shortest_edge`` and ``longest_edge`` (a JSON object in a config parameter).

    Raises:
        ValueError: Another form.
    """
    if isinstance(value, str) and value.strip().startswith("{"):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            value = value.strip()
    if isinstance(value, str) and value.strip().lower() == "none":
        return "none"
    if isinstance(value, Mapping) and set(value) in _RESIZE_KEYS:
        numbers = dict(value)
        if all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in numbers.values()):
            return {str(key): int(number) for key, number in numbers.items()}
    raise ValueError(
        "resize must be {shortest_edge: N} (with longest_edge: M or not), {height: H, width: W}, none, or "
        f"a filter name ({', '.join(RESAMPLE)}), got {value}"
    )


def shortest_edge_size(height: int, width: int, shortest: int, longest: int | None = None) -> tuple[int, int]:
    """(height, width) after resizing the shorter side to ``shortest``, the aspect ratio kept, as
    transformers computes it (``get_resize_output_image_size``; with ``longest``, the longer side at most
    ``longest``, ``get_size_with_aspect_ratio``)."""
    raw = None
    if longest is not None:
        small, large = float(min(height, width)), float(max(height, width))
        if large / small * shortest > longest:
            raw = longest * small / large
            shortest = round(raw)
    if (height <= width and height == shortest) or (width <= height and width == shortest):
        return height, width
    if width < height:
        return (int(raw * height / width) if raw is not None else int(shortest * height / width)), shortest
    return shortest, (int(raw * width / height) if raw is not None else int(shortest * width / height))


def center_crop(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pixels [H, W, C] cropped around the centre to [height, width] as transformers' ``center_crop``:
    where the image is smaller, it is placed in the middle of zeros (the extra row or column below and
    to the right)."""
    out = np.zeros((height, width, pixels.shape[2]), dtype=pixels.dtype)
    source, target = [], []
    for have, want in zip(pixels.shape[:2], (height, width), strict=True):
        if have >= want:
            start = (have - want) // 2
            source.append(slice(start, start + want))
            target.append(slice(0, want))
        else:
            start = (want - have + 1) // 2
            source.append(slice(0, have))
            target.append(slice(start, start + have))
    out[target[0], target[1]] = pixels[source[0], source[1]]
    return out


# -- tf.image.resize (antialias=False, half-pixel centres) in numpy -------------------------------------------


def _tf_centres(in_size: int, out_size: int, offset: float) -> np.ndarray:
    scale = np.float32(in_size) / np.float32(out_size)
    return (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(offset)


def _tf_nearest(values: np.ndarray, out_size: int, axis: int) -> np.ndarray:
    index = np.floor(_tf_centres(values.shape[axis], out_size, 0.0)).astype(np.int64)
    return np.take(values, np.clip(index, 0, values.shape[axis] - 1), axis=axis)


def _tf_linear(values: np.ndarray, out_size: int, axis: int) -> np.ndarray:
    centres = _tf_centres(values.shape[axis], out_size, 0.5)
    floor = np.floor(centres)
    lower = np.maximum(floor, 0).astype(np.int64)
    upper = np.minimum(np.ceil(centres), values.shape[axis] - 1).astype(np.int64)
    shape = [1] * values.ndim
    shape[axis] = out_size
    lerp = (centres - floor).astype(np.float32).reshape(shape)
    low = np.take(values, lower, axis=axis)
    return low + (np.take(values, upper, axis=axis) - low) * lerp


def _keys_cubic_table(size: int = 1024, a: float = -0.5) -> tuple[np.ndarray, np.ndarray]:
    """TensorFlow's table of Keys cubic weights at 1/size steps: for distances x and x + 1."""
    x = np.arange(size + 1, dtype=np.float64) / size
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    x = x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return near.astype(np.float32), far.astype(np.float32)


_TABLE_SIZE = 1024
_NEAR, _FAR = _keys_cubic_table(_TABLE_SIZE)


def _tf_cubic(values: np.ndarray, out_size: int, axis: int) -> np.ndarray:
    in_size = values.shape[axis]
    centres = _tf_centres(in_size, out_size, 0.5)
    floor = np.floor(centres)
    offset = np.rint((centres - floor) * np.float32(_TABLE_SIZE)).astype(np.int64)
    index = floor.astype(np.int64)[:, None] + np.arange(-1, 3)
    weights = np.stack(
        [_FAR[offset], _NEAR[offset], _NEAR[_TABLE_SIZE - offset], _FAR[_TABLE_SIZE - offset]], axis=1
    )
    weights = np.where((index >= 0) & (index < in_size), weights, np.float32(0))  # outside: no weight
    total = ((weights[:, 0] + weights[:, 1]) + weights[:, 2]) + weights[:, 3]
    usable = np.abs(total) >= np.float32(1000) * np.finfo(np.float32).tiny
    weights = np.where(
        usable[:, None], weights * (np.float32(1) / np.where(usable, total, 1))[:, None], weights
    )
    index = np.clip(index, 0, in_size - 1)
    shape = [1] * values.ndim
    shape[axis] = out_size
    result = np.take(values, index[:, 0], axis=axis) * weights[:, 0].reshape(shape)
    for k in range(1, 4):
        result = result + np.take(values, index[:, k], axis=axis) * weights[:, k].reshape(shape)
    return result


def tf_resize(pixels: np.ndarray, height: int, width: int, method: str) -> np.ndarray:
    """Pixels [H, W, C] resized as ``tf.image.resize(pixels, (height, width), method, antialias=False)``:
    float32 (nearest keeps the input's dtype, as TensorFlow does)."""
    if method == "nearest":
        return _tf_nearest(_tf_nearest(pixels, height, 0), width, 1)
    values = pixels.astype(np.float32)
    if method == "bilinear":  # TensorFlow interpolates along the width first, then the height
        return _tf_linear(_tf_linear(values, width, 1), height, 0)
    if method == "bicubic":  # along the height first, then the width
        return _tf_cubic(_tf_cubic(values, height, 0), width, 1)
    raise ValueError(f"resize_method: tensorflow does {', '.join(TF_RESAMPLE)}, not {method}")


# -- the step -------------------------------------------------------------------------------------------------


class PreprocessImage:
    """Decode, convert, resize, crop, scale and normalise encoded images with Pillow and numpy.

    Args:
        settings: The step's settings, as strings (the config parameters) or plain values: ``size``
            ([H, W], "H,W" or one number), ``resize`` ({"shortest_edge": N}, {"height": H, "width": W},
            "none", or a filter name: the older spelling of ``resample``), ``center_crop``, ``resample``,
            ``resize_method``; the output's size must follow from them. The others take the defaults in
            :data:`DEFAULTS`; ``mean`` and ``std`` may be one number for every channel.

    Calling it with a sequence of encoded images returns ``{"pixel_values": array [rows, ...]}``.

    Raises:
        ValueError: A setting is invalid.
    """

    def __init__(self, settings: Mapping[str, object]) -> None:
        try:
            from PIL import Image
        except ImportError:
            raise ImportError(
                "the image step needs the Python package 'pillow' where it runs (in Triton's Python "
                "backend environment too): pip install pillow"
            ) from None

        merged = {**DEFAULTS, **{k: v for k, v in settings.items() if v is not None and v != ""}}
        self.channels = int(merged["channels"])  # type: ignore[call-overload]
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        self._geometry(merged, explicit_resample="resample" in settings)
        self.scale = float(merged["scale"])  # type: ignore[arg-type]
        self.mean = _per_channel("mean", merged["mean"], self.channels, 0.0)
        self.std = _per_channel("std", merged["std"], self.channels, 1.0)
        if not np.all(self.std != 0):
            raise ValueError("std must not be 0")
        self.layout = str(merged["layout"]).upper()
        if self.layout not in ("NCHW", "NHWC"):
            raise ValueError(f"layout must be NCHW or NHWC, got '{self.layout}'")
        dtype = str(merged["dtype"]).upper().removeprefix("TYPE_")
        if dtype not in _NUMPY:
            raise ValueError(f"dtype must be FP32 or FP16, got '{merged['dtype']}'")
        self.dtype = np.dtype(_NUMPY[dtype])
        self._image = Image
        self._mode = "RGB" if self.channels == 3 else "L"
        self._filter = getattr(Image.Resampling, self.resample.upper())

    def _geometry(self, merged: dict[str, object], explicit_resample: bool) -> None:
        """The resize target, its filter and method, the crop, and the output's height and width."""
        resize = merged["resize"]
        resample = merged["resample"]
        if isinstance(resize, str) and resize.strip().lower() in RESAMPLE:  # the older spelling
            if explicit_resample and resample_name(resample) != resize.strip().lower():
                raise ValueError(f"resize: {resize} and resample: {resample} disagree; set only resample")
            resample, resize = resize, None
        self.resample = resample_name(resample)
        self.alpha = str(merged["alpha"]).strip().lower()
        if self.alpha not in ("white", "drop"):
            raise ValueError(f"alpha must be white or drop, got '{merged['alpha']}'")
        self.exif_orientation = str(merged["exif_orientation"]).strip().lower() in ("true", "1", "yes", "on")
        self.resize_method = str(merged["resize_method"]).strip().lower()
        if self.resize_method not in RESIZE_METHODS:
            raise ValueError(f"resize_method must be pillow or tensorflow, got '{merged['resize_method']}'")
        if self.resize_method == "tensorflow" and self.resample not in TF_RESAMPLE:
            raise ValueError(f"resize_method: tensorflow does {', '.join(TF_RESAMPLE)}, not {self.resample}")
        target = resize_target(resize) if resize is not None else None
        size = _pair("size", merged["size"]) if merged.get("size") is not None else None
        if target is not None and size is not None:
            raise ValueError("size and resize both set the resize; keep one")
        if isinstance(target, dict) and "height" in target:
            size, target = (target["height"], target["width"]), None
        self.resize: dict[str, int] | str | tuple[int, int] | None = size or target
        crop = merged.get("center_crop")
        self.crop = _pair("center_crop", crop) if crop is not None else None
        output = self.crop or size
        if output is None:
            raise ValueError(
                "size is required: [height, width] of the output (or resize {height, width}, or center_crop "
                "after resize {shortest_edge} or none)"
            )
        self.height, self.width = output

    @property
    def dims(self) -> list[int]:
        """The output's dims without the batch axis."""
        hw = [self.height, self.width]
        return [self.channels, *hw] if self.layout == "NCHW" else [*hw, self.channels]

    def convert(self, image: object) -> object:
        """A decoded Pillow image in RGB or L: 16-bit grey scaled to 8 bits by its high byte, transparency
        composited onto white (``alpha: white``, as transformers' ``convert_rgb``) or dropped (``alpha:
        drop``, as transformers' pipelines load images), the rest by Pillow's ``convert``."""
        Image = self._image
        if image.mode in _WIDE_GREY:  # type: ignore[attr-defined]
            values = np.asarray(image)
            grey = Image.fromarray((np.clip(values, 0, 65535).astype(np.uint32) >> 8).astype(np.uint8))
            transparent = image.info.get("transparency")  # type: ignore[attr-defined]
            if isinstance(transparent, int):
                alpha = Image.fromarray(np.where(values == transparent, 0, 255).astype(np.uint8))
                grey = Image.merge("LA", (grey, alpha))
            image = grey
        transparent = "A" in image.getbands() or image.info.get("transparency") is not None  # type: ignore[attr-defined]
        if transparent and self.alpha == "white":
            rgba = image.convert("RGBA")  # type: ignore[attr-defined]
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            image = Image.alpha_composite(white, rgba).convert("RGB")
        return image if image.mode == self._mode else image.convert(self._mode)  # type: ignore[attr-defined]

    def _resized(self, image: object) -> np.ndarray:
        """A converted image resized: [H, W, C] uint8 (float32 for TensorFlow's bilinear and bicubic)."""
        target = self.resize
        width, height = image.size  # type: ignore[attr-defined]
        if isinstance(target, dict):
            target = shortest_edge_size(height, width, target["shortest_edge"], target.get("longest_edge"))
        if not isinstance(target, tuple) or (target == (height, width) and self.resize_method == "pillow"):
            return np.asarray(image, dtype=np.uint8).reshape(height, width, self.channels)
        if self.resize_method == "tensorflow":
            pixels = np.asarray(image, dtype=np.uint8).reshape(height, width, self.channels)
            return tf_resize(pixels, target[0], target[1], self.resample)
        resized = image.resize((target[1], target[0]), self._filter)  # type: ignore[attr-defined]
        return np.asarray(resized, dtype=np.uint8).reshape(target[0], target[1], self.channels)

    def decode(self, data: bytes) -> np.ndarray:
        """One encoded image as pixels [H, W, C], converted, resized and cropped: uint8, or float32 after
        TensorFlow's bilinear or bicubic resize.

        Raises:
            ValueError: The bytes are not an image Pillow can decode.
        """
        try:
            with self._image.open(io.BytesIO(data)) as image:
                image.load()
                if self.exif_orientation:
                    from PIL import ImageOps

                    image = ImageOps.exif_transpose(image)
                converted = self.convert(image)
            pixels = self._resized(converted)
        except self._image.UnidentifiedImageError:
            raise ValueError("cannot decode the image: not an image format Pillow can read") from None
        except Exception as error:  # Pillow raises OSError, SyntaxError, ValueError, ... for bad bytes
            reason = " ".join(str(error).split()) or type(error).__name__
            raise ValueError(f"cannot decode the image: {reason}") from None
        if self.crop is not None:
            pixels = center_crop(pixels, *self.crop)
        return pixels

    def normalize(self, pixels: np.ndarray) -> np.ndarray:
        """Pixels [N, H, W, C] -> ``(pixels * scale - mean) / std`` in the output's layout and dtype (the
        scaling in float64, then float32, as transformers' ``rescale`` does)."""
        scaled = (pixels.astype(np.float64) * self.scale).astype(np.float32)
        values = (scaled - self.mean) / self.std
        if self.layout == "NCHW":
            values = values.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(values, dtype=self.dtype)

    def __call__(self, images: Sequence[bytes]) -> dict[str, np.ndarray]:
        """Preprocess ``images``; raise ValueError naming the batch row of one that cannot be decoded."""
        decoded = []
        for row, data in enumerate(images):
            try:
                decoded.append(self.decode(data))
            except ValueError as error:
                raise ValueError(f"batch row {row}: {error}") from None
        pixels = (
            np.stack(decoded) if decoded else np.zeros((0, self.height, self.width, self.channels), np.uint8)
        )
        return {OUTPUT: self.normalize(pixels)}


def _parameters(config: dict) -> dict[str, str]:
    return {
        key: entry["string_value"]
        for key, entry in (config.get("parameters") or {}).items()
        if isinstance(entry, dict) and "string_value" in entry
    }


class TritonPythonModel:
    """Serves :class:`PreprocessImage`: each image decoded alone, the execution's images normalised
    together; a request with an image that cannot be decoded fails alone."""

    def initialize(self, args: dict) -> None:
        """Read the settings from the config's parameters."""
        self._name = args["model_name"]
        config = json.loads(args["model_config"])
        # Without batching (max_batch_size 0) a request is one image and its output has no row axis.
        self._batched = int(config.get("max_batch_size") or 0) > 0
        self._preprocess = PreprocessImage(_parameters(config))

    def execute(self, requests: list) -> list:
        """Preprocess the images of every request."""
        import triton_python_backend_utils as pb_utils

        responses: list = [None] * len(requests)
        members: list[tuple[int, int]] = []  # (request index, rows)
        decoded: list[np.ndarray] = []
        for index, request in enumerate(requests):
            rows = pb_utils.get_input_tensor_by_name(request, "image").as_numpy().reshape(-1)
            try:
                pixels = [self._decode(row, data) for row, data in enumerate(rows)]
            except ValueError as error:
                responses[index] = pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(f"model '{self._name}': {error}")
                )
                continue
            members.append((index, len(pixels)))
            decoded.extend(pixels)
        if decoded:
            values = self._preprocess.normalize(np.stack(decoded))
            start = 0
            for index, rows in members:
                tensor = pb_utils.Tensor(
                    OUTPUT, values[start : start + rows] if self._batched else values[start]
                )
                responses[index] = pb_utils.InferenceResponse(output_tensors=[tensor])
                start += rows
        return responses

    def _decode(self, row: int, data: object) -> np.ndarray:
        if not isinstance(data, bytes):
            raise ValueError(f"batch row {row}: expected the bytes of an encoded image")
        try:
            return self._preprocess.decode(data)
        except ValueError as error:
            raise ValueError(f"batch row {row}: {error}") from None
