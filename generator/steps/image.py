"""Built-in step ``image``: encoded images to normalised pixel arrays with Pillow, as a Triton
Python-backend model.

Input ``image`` (TYPE_STRING, dims [1]: the bytes of one JPEG, PNG or other Pillow-readable image per batch
row). Output ``pixel_values`` (FP32 or FP16), dims [C, H, W] (``layout: NCHW``) or [H, W, C] (``NHWC``):
each image decoded, converted to RGB (``channels: 3``) or L (``channels: 1``), resized to ``size``, then
``(pixel * scale - mean) / std`` per channel.

The settings arrive as the model config's ``parameters`` (strings): ``size`` ("H,W"), ``channels``,
``resize``, ``scale``, ``mean`` and ``std`` (comma-separated, one per channel), ``layout`` and ``dtype``.
An image that cannot be decoded fails its own request, with an error naming its batch row; the other
requests of the execution succeed.

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
RESIZE = ("bilinear", "nearest", "bicubic")
DEFAULTS: dict[str, object] = {
    "channels": 3,
    "resize": "bilinear",
    "scale": 1 / 255,
    "mean": None,  # 0 per channel
    "std": None,  # 1 per channel
    "layout": "NCHW",
    "dtype": "FP32",
}
_NUMPY = {"FP32": np.float32, "FP16": np.float16}


def _floats(value: object) -> list[float]:
    parts = value.split(",") if isinstance(value, str) else value
    if isinstance(parts, (int, float)):
        return [float(parts)]
    return [float(part) for part in parts]  # type: ignore[union-attr]


def _per_channel(name: str, value: object, channels: int, default: float) -> np.ndarray:
    values = [default] * channels if value is None else _floats(value)
    if len(values) != channels:
        raise ValueError(f"{name} needs {channels} value(s), one per channel, got {len(values)}")
    return np.asarray(values, dtype=np.float32)


class PreprocessImage:
    """Decode, convert, resize, scale and normalise encoded images with Pillow and numpy.

    Args:
        settings: The step's settings, as strings (the config parameters) or plain values: ``size``
            ([H, W] or "H,W") is required, the others take the defaults in :data:`DEFAULTS`.

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
        if "size" not in merged:
            raise ValueError("size is required: [height, width] of the output")
        size = [int(v) for v in _floats(merged["size"])]
        if len(size) != 2 or min(size) < 1:
            raise ValueError(f"size must be [height, width], two positive integers, got {merged['size']}")
        self.height, self.width = size
        self.channels = int(merged["channels"])  # type: ignore[call-overload]
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        self.resize = str(merged["resize"]).lower()
        if self.resize not in RESIZE:
            raise ValueError(f"resize must be one of {', '.join(RESIZE)}, got '{self.resize}'")
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
        self._filter = {
            "bilinear": Image.Resampling.BILINEAR,
            "nearest": Image.Resampling.NEAREST,
            "bicubic": Image.Resampling.BICUBIC,
        }[self.resize]

    @property
    def dims(self) -> list[int]:
        """The output's dims without the batch axis."""
        hw = [self.height, self.width]
        return [self.channels, *hw] if self.layout == "NCHW" else [*hw, self.channels]

    def decode(self, data: bytes) -> np.ndarray:
        """One encoded image as uint8 pixels [H, W, C], converted and resized.

        Raises:
            ValueError: The bytes are not an image Pillow can decode.
        """
        try:
            with self._image.open(io.BytesIO(data)) as image:
                image.load()
                converted = image.convert(self._mode)
            resized = converted.resize((self.width, self.height), self._filter)
        except self._image.UnidentifiedImageError:
            raise ValueError("cannot decode the image: not an image format Pillow can read") from None
        except Exception as error:  # Pillow raises OSError, SyntaxError, ValueError, ... for bad bytes
            reason = " ".join(str(error).split()) or type(error).__name__
            raise ValueError(f"cannot decode the image: {reason}") from None
        return np.asarray(resized, dtype=np.uint8).reshape(self.height, self.width, self.channels)

    def normalize(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 pixels [N, H, W, C] -> ``(pixels * scale - mean) / std`` in the output's layout and dtype."""
        values = (pixels.astype(np.float32) * np.float32(self.scale) - self.mean) / self.std
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
        self._preprocess = PreprocessImage(_parameters(json.loads(args["model_config"])))

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
                tensor = pb_utils.Tensor(OUTPUT, values[start : start + rows])
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
