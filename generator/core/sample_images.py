"""Encoded sample images for inputs that take them, and Triton's serialized form of a BYTES tensor.

The built-in image step (``source: builtin:image``) is a Python model whose STRING input carries one encoded
image per element and whose ``pixel_values`` output has the size it resizes to. Text sent there fails every
request, so the sample data ``build`` writes (perf_analyzer's data file) and the requests ``loadtest``
generates carry real images: :func:`image_inputs` finds such inputs in a model's config and
:func:`sample_images` makes seeded PNG and JPEG images with Pillow, of varied sizes around that size, in
RGB, grey and RGBA.

:func:`serialize_bytes` and :func:`deserialize_bytes` are Triton's wire form of a BYTES (STRING) tensor:
each element a 4-byte little-endian length, then its bytes. perf_analyzer's ``{"b64": ...}`` value holds
that form for a STRING input.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

__all__ = ["PIXEL_VALUES", "deserialize_bytes", "image_inputs", "sample_images", "serialize_bytes"]

PIXEL_VALUES = "pixel_values"
"""The output of the built-in image step (``generator/steps/image.py``), dims [C, H, W] or [H, W, C]."""

#: (format, mode) of the sample images, in turn: the first is the common case.
_KINDS = (("JPEG", "RGB"), ("PNG", "RGB"), ("JPEG", "L"), ("PNG", "RGBA"), ("PNG", "L"))
_CHANNELS = (1, 3)
_LENGTH = struct.Struct("<I")


def _parameter(config: Mapping[str, Any], key: str) -> str | None:
    """A config parameter as a string: plain (the build's config data) or ``{"string_value": ...}``
    (Triton's JSON)."""
    value = (config.get("parameters") or {}).get(key)
    if isinstance(value, Mapping):
        value = value.get("string_value")
    return None if value is None else str(value)


def _height_width(dims: list[int], layout: str | None) -> tuple[int, int]:
    """(H, W) of ``pixel_values`` dims, from the step's ``layout`` or, without one, where the channels are."""
    if layout is not None:
        channels_last = layout.upper() == "NHWC"
    else:
        channels_last = dims[2] in _CHANNELS and dims[0] not in _CHANNELS
    return (dims[0], dims[1]) if channels_last else (dims[1], dims[2])


def image_inputs(config: Mapping[str, Any]) -> dict[str, tuple[int, int]]:
    """The inputs of a model that take encoded images -> the (height, width) the model resizes them to.

    Such a model is a Python-backend model (the built-in image step) with STRING inputs and an output
    named ``pixel_values`` of three fixed dims. Any other model (an ensemble too: see its steps) has none.

    Args:
        config: The model's config with proto field names: the build's config data or Triton's JSON.
    """
    if str(config.get("backend") or "") != "python":
        return {}
    outputs = [o for o in config.get("output") or [] if str(o.get("name")) == PIXEL_VALUES]
    if len(outputs) != 1:
        return {}
    try:
        dims = [int(d) for d in outputs[0].get("dims") or []]
    except (TypeError, ValueError):
        return {}
    if len(dims) != 3 or min(dims) < 1:
        return {}
    size = _height_width(dims, _parameter(config, "layout"))
    return {
        str(tensor["name"]): size
        for tensor in config.get("input") or []
        if str(tensor.get("data_type", "")).removeprefix("TYPE_") in ("STRING", "BYTES")
    }


def _picture(rng: np.random.Generator, height: int, width: int) -> Any:
    """A smooth RGB picture: a gradient between two colours, with a few filled shapes on it."""
    from PIL import Image, ImageDraw

    rows, columns = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0.0, 2.0 * np.pi)
    ramp = columns * np.cos(angle) + rows * np.sin(angle)
    ramp = (ramp - ramp.min()) / max(float(ramp.max() - ramp.min()), 1.0)
    start, end = rng.integers(0, 256, (2, 3)).astype(np.float32)
    pixels = np.clip(start + ramp[..., None] * (end - start), 0, 255).astype(np.uint8)
    picture = Image.fromarray(pixels, "RGB")
    draw = ImageDraw.Draw(picture)
    for _ in range(int(rng.integers(2, 6))):
        xs = sorted(int(v) for v in rng.integers(0, width, 2))
        ys = sorted(int(v) for v in rng.integers(0, height, 2))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape([xs[0], ys[0], xs[1], ys[1]], fill=colour)
    return picture


def sample_images(rng: np.random.Generator, size: tuple[int, int], count: int) -> list[bytes]:
    """``count`` encoded images, the same for the same generator state.

    The first has exactly ``size``; each other one is 0.5 to 1.5 times as large (in height and width)
    with an aspect ratio 0.8 to 1.25 times ``size``'s. Formats and modes take turns: JPEG RGB, PNG RGB, JPEG grey (L), PNG RGBA
    and PNG grey.

    Args:
        rng: The generator the sizes and pictures come from.
        size: (height, width) the images are made around (the size a model resizes them to).
        count: How many.
    """
    height, width = size
    images = []
    for index in range(count):
        if index == 0:
            shape = (height, width)
        else:
            scale, aspect = rng.uniform(0.5, 1.5), rng.uniform(0.8, 1.25)
            shape = (
                max(1, round(height * scale * aspect**0.5)),
                max(1, round(width * scale / aspect**0.5)),
            )
        image_format, mode = _KINDS[index % len(_KINDS)]
        picture = _picture(rng, *shape)
        if mode == "RGBA":
            picture.putalpha(int(rng.integers(128, 256)))
        elif mode != picture.mode:
            picture = picture.convert(mode)
        buffer = io.BytesIO()
        options = {"quality": 90} if image_format == "JPEG" else {}
        picture.save(buffer, format=image_format, **options)
        images.append(buffer.getvalue())
    return images


def serialize_bytes(values: Iterable[bytes]) -> bytes:
    """Triton's serialized BYTES tensor: each element a 4-byte little-endian length, then its bytes."""
    return b"".join(_LENGTH.pack(len(value)) + bytes(value) for value in values)


def deserialize_bytes(raw: bytes) -> list[bytes]:
    """The elements of a serialized BYTES tensor (see :func:`serialize_bytes`).

    Raises:
        ValueError: ``raw`` is not that form; the message says where it breaks.
    """
    values = []
    offset = 0
    while offset < len(raw):
        if len(raw) - offset < _LENGTH.size:
            raise ValueError(
                f"element {len(values)} starts {len(raw) - offset} byte(s) before the end, too few for its "
                "4-byte length"
            )
        (length,) = _LENGTH.unpack_from(raw, offset)
        offset += _LENGTH.size
        if length > len(raw) - offset:
            raise ValueError(f"element {len(values)} claims {length} bytes, but {len(raw) - offset} remain")
        values.append(bytes(raw[offset : offset + length]))
        offset += length
    return values
