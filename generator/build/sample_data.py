"""Sample inputs written beside a built model: perf_analyzer's ``--input-data`` file and warm-up files.

``<model>/perf_analyzer_data.json`` holds a few requests' worth of inputs that the model accepts, so
NVIDIA's perf_analyzer (whose default random data sends token ids far past any vocabulary) drives any
built model out of the box::

    perf_analyzer -m MODEL --input-data REPO/MODEL/perf_analyzer_data.json

It is perf_analyzer's JSON: ``{"data": [{INPUT: {"content": [...], "shape": [...]}, ...}, ...]}``, one
entry per sample without the batch axis (``-b N`` batches them). Integer inputs take values in their
range, -1 axes their ``opt`` length (both from :mod:`generator.build.input_values`), floats seeded normal
values, STRING inputs a few ASCII sentences; FP16 and BF16 travel as base64 of their bytes. An input that
takes encoded images (the built-in image step's, :func:`generator.core.sample_images.image_inputs`) holds
PNG and JPEG images around the size the step resizes to, as perf_analyzer takes binary strings:
``{"b64": <base64 of Triton's serialized BYTES>, "shape": [...]}``. The load test's ``--data`` reads the
same file, base64 values too. Optional inputs are left out. The same seed gives the same bytes. An ensemble's inputs take the samples of
the step models that read them (:func:`step_samples`), images too.

Warm-up files: an integer input whose ``values`` exclude 0 warms up from ``<model>/warmup/<file>`` (the
config names it in ``input_data_file``) holding its smallest value, since zeros would be out of range.
"""

from __future__ import annotations

import base64
import json
import math
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from generator.build.input_values import (
    InputTensor,
    Range,
    ShapePoint,
    artifact_index_ranges,
    config_inputs,
    point,
    sample,
    shape_points,
    value_ranges,
)
from generator.core import dtypes
from generator.core.errors import SpecError
from generator.core.repository import sha256_file
from generator.core.sample_images import image_inputs, sample_images, serialize_bytes
from generator.core.triton import DEFAULT_MODEL_FILENAMES
from generator.spec.models import ModelSettings

PERF_ANALYZER_DATA = "perf_analyzer_data.json"
WARMUP_DIR = "warmup"
#: Samples in the perf_analyzer file (fewer for large inputs, at least one).
SAMPLES = 8
#: Values per file at most, over all its samples: a few megabytes of JSON.
MAX_VALUES = 1 << 19
_BASE64 = ("FP16", "BF16")


def _json_values(dtype: str, values: np.ndarray) -> dict[str, Any]:
    """One tensor's values in perf_analyzer's JSON (``content``, or ``b64`` for 16-bit floats)."""
    if dtype == "STRING":
        return {"content": [v.decode("ascii") for v in values.reshape(-1)]}
    if dtype in _BASE64:
        return {"b64": base64.b64encode(np.ascontiguousarray(values).tobytes()).decode("ascii")}
    if values.dtype.kind == "f":
        return {"content": np.round(values.astype(np.float64), 4).reshape(-1).tolist()}
    return {"content": values.reshape(-1).tolist()}


def _values(
    rng: np.random.Generator, tensor: InputTensor, shape: list[int], value_range: Range | None
) -> np.ndarray:
    if tensor.dtype == "BF16":  # numpy has no bfloat16: the upper half of float32's bits
        floats = rng.standard_normal(shape).astype(np.float32)
        return (floats.view(np.uint32) >> 16).astype(np.uint16)
    return sample(rng, tensor.dtype, shape, value_range)


def perf_analyzer_data(
    name: str,
    tensors: Sequence[InputTensor],
    shapes: ShapePoint,
    ranges: Mapping[str, Range],
    seed: int = 0,
    borrowed: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    images: Mapping[str, tuple[int, int]] | None = None,
) -> dict[str, Any] | None:
    """perf_analyzer's ``--input-data`` document for one model (None when one sample is too large).

    Args:
        name: The model name (it seeds the values together with ``seed``).
        tensors: The model's inputs as its config declares them.
        shapes: Their shapes without the batch axis (every axis a size).
        ranges: Integer input -> its values (from :func:`generator.build.input_values.value_ranges`).
        seed: Seed of the values.
        borrowed: Input -> samples to take as they are (perf_analyzer JSON values with their shapes),
            used in turn instead of generated values (an ensemble's inputs, from the steps reading them).
        images: STRING input -> (height, width): inputs that take encoded images
            (:func:`generator.core.sample_images.image_inputs`), given images around that size.
    """
    borrowed = borrowed or {}
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    per_sample = sum(math.prod(shapes.shapes[t.name]) for t in tensors) or 1
    if per_sample > MAX_VALUES:  # one sample would not fit in a file: perf_analyzer makes its own data
        return None
    count = max(1, min(SAMPLES, MAX_VALUES // per_sample))
    pictures = _pictures(name, tensors, shapes, images or {}, count, seed)
    data = []
    for number in range(count):
        entry = {}
        for tensor in tensors:
            shape = shapes.shapes[tensor.name]
            if borrowed.get(tensor.name):
                samples = borrowed[tensor.name]
                entry[tensor.name] = dict(samples[number % len(samples)])
            elif tensor.name in pictures:
                per = math.prod(shape)
                raw = serialize_bytes(pictures[tensor.name][number * per : (number + 1) * per])
                entry[tensor.name] = {"b64": base64.b64encode(raw).decode("ascii"), "shape": list(shape)}
            else:
                values = _values(rng, tensor, shape, ranges.get(tensor.name))
                entry[tensor.name] = {**_json_values(tensor.dtype, values), "shape": list(shape)}
        data.append(entry)
    return {"data": data}


def _pictures(
    name: str,
    tensors: Sequence[InputTensor],
    shapes: ShapePoint,
    images: Mapping[str, tuple[int, int]],
    count: int,
    seed: int,
) -> dict[str, list[bytes]]:
    """Encoded images for the image inputs among ``tensors``: ``count`` samples' worth each, seeded by the
    model and the input."""
    found = {}
    for tensor in tensors:
        if tensor.dtype == "STRING" and tensor.name in images:
            rng = np.random.default_rng([seed, zlib.crc32(name.encode()), zlib.crc32(tensor.name.encode())])
            total = count * math.prod(shapes.shapes[tensor.name])
            found[tensor.name] = sample_images(rng, images[tensor.name], total)
    return found


def _served_file(model_dir: Path, config: Mapping[str, Any]) -> Path | None:
    """The model file of the newest version directory, as the config names it."""
    filename = config.get("default_model_filename") or DEFAULT_MODEL_FILENAMES.get(
        str(config.get("platform"))
    )
    versions = sorted(
        (int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()), reverse=True
    )
    if not filename or not versions:
        return None
    return model_dir / str(versions[0]) / filename


def step_samples(config: Mapping[str, Any], step_dirs: Mapping[str, Path]) -> dict[str, list[dict[str, Any]]]:
    """An ensemble's inputs' samples, each from the perf_analyzer file of the first step model reading it.

    The step's own file knows the values it accepts (token ids below its vocabulary, its lengths), where the
    ensemble's config alone knows only dtypes and dims; all inputs one step reads keep their lengths
    aligned. An input whose step has no such file, or whose sample shape its dims refuse, is left out
    (generated as for any model).

    Args:
        config: The ensemble's config data (proto field names).
        step_dirs: Step model name -> its directory (already written).
    """
    dims = {str(t["name"]): [int(d) for d in t.get("dims") or []] for t in config.get("input") or []}
    found: dict[str, list[dict[str, Any]]] = {}
    for step in (config.get("ensemble_scheduling") or {}).get("step") or []:
        directory = step_dirs.get(str(step.get("model_name")))
        data = _read_samples(directory / PERF_ANALYZER_DATA) if directory is not None else []
        for key, tensor in (step.get("input_map") or {}).items():
            if tensor not in dims or tensor in found:
                continue
            samples = [entry[key] for entry in data if isinstance(entry.get(key), dict)]
            if samples and all(_fits(dims[tensor], sample.get("shape")) for sample in samples):
                found[tensor] = samples
    return found


def _read_samples(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8")).get("data")
    except (OSError, ValueError, AttributeError):
        return []
    return [entry for entry in data if isinstance(entry, dict)] if isinstance(data, list) else []


def _fits(dims: Sequence[int], shape: Any) -> bool:
    """Whether a sample's shape is one the declared dims (-1: any size) accept."""
    if not isinstance(shape, list) or len(shape) != len(dims):
        return False
    return all(
        isinstance(size, int) and (dim == -1 or dim == size) for dim, size in zip(dims, shape, strict=True)
    )


def write_sample_data(
    model_dir: Path,
    config: Mapping[str, Any],
    model: ModelSettings | None = None,
    details: Mapping[str, Any] | None = None,
    borrowed: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
) -> list[Path]:
    """Write a built model's perf_analyzer data file and the warm-up files its config names.

    Args:
        model_dir: The model's directory (its version directories already in place).
        config: The model's config data (:func:`generator.build.config.build_config`, proto field names).
        model: Its spec settings (``shapes``, ``values``); ``None`` for defaults.
        details: The exporter's details (integer ranges a TensorRT plan no longer shows).
        borrowed: Inputs whose samples are taken as they are (an ensemble's, from :func:`step_samples`).

    Returns:
        The files written.

    Raises:
        SpecError: a ``shapes`` or ``values`` entry does not fit the model's inputs.
    """
    name = str(config["name"])
    # Optional inputs are left out, as a request may leave them: random values would fall outside what
    # they accept (a generation setting such as max_new_tokens or temperature).
    tensors = config_inputs(t for t in config.get("input") or [] if not t.get("optional"))
    inferred = artifact_index_ranges(_served_file(model_dir, config), details)
    ranges = value_ranges(name, model, tensors, inferred)
    points = shape_points(name, model, tensors)
    document = perf_analyzer_data(
        name, tensors, point(points, "opt"), ranges, borrowed=borrowed, images=image_inputs(config)
    )
    written = []
    if document is not None:
        target = model_dir / PERF_ANALYZER_DATA
        target.write_text(json.dumps(document, separators=(",", ":")) + "\n", encoding="utf-8")
        written.append(target)
    for warmup in config.get("model_warmup") or []:
        for input_name, entry in (warmup.get("inputs") or {}).items():
            file_name = entry.get("input_data_file")
            if not file_name or input_name not in ranges:
                continue
            dtype = str(entry["data_type"]).removeprefix("TYPE_")
            low = ranges[input_name][0]
            if math.prod(entry["dims"]) > MAX_VALUES:
                raise SpecError(
                    f"model '{name}': warm-up input '{input_name}' would need a data file of "
                    f"{math.prod(entry['dims'])} values; let `values` include 0 (zero_data) or set warmup: false"
                )
            values = np.full(math.prod(entry["dims"]), low, dtype=dtypes.to_numpy(dtype))
            path = model_dir / WARMUP_DIR / file_name
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(values.astype(values.dtype.newbyteorder("<")).tobytes())
            written.append(path)
    return written


def sample_file_hashes(model_dir: Path) -> dict[str, str]:
    """Relative path -> sha256 of the sample files in a model directory (for the build manifest)."""
    files = [model_dir / PERF_ANALYZER_DATA, *sorted((model_dir / WARMUP_DIR).glob("*"))]
    return {str(p.relative_to(model_dir)): sha256_file(p) for p in files if p.is_file()}
