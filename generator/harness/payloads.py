"""Request tensors for a model: random ones shaped by the server's metadata and config, or real samples.

:func:`model_info` reads what a request needs from the model's metadata and config on the server (input
and output names, datatypes, dims without the batch axis, ``max_batch_size``, optional inputs).
:func:`make_batches` builds a small pool of distinct request batches from it: seeded random values, or
consecutive samples of a data file read by :func:`load_payload_samples` (``.npz``, or ``.json`` either as
``{"input": [sample, ...]}`` or perf_analyzer's ``{"data": [{"input": sample}, ...]}``). Keys of a data
file may be ``input`` or ``model/input`` (for a file shared by several models). Building them is the only
costly part, done once per process before the load starts.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from generator.errors import LoadTestError

__all__ = ["Batch", "ModelInfo", "PayloadTensor", "load_payload_samples", "make_batches", "model_info"]

Batch = dict[str, np.ndarray]
"""One request: input name -> array, batch axis first when the model batches."""

RANDOM_VARIANTS = 8
"""Distinct random requests per model, so a response cache does not answer every request."""

MAX_VARIANTS = 256
"""At most this many distinct requests are prebuilt from a data file (it is cycled through)."""

_FLOATS = ("FP16", "FP32", "FP64", "BF16")
_INTS = ("INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64")


@dataclass(frozen=True)
class PayloadTensor:
    """One input or output of a served model, as its metadata and config describe it.

    Attributes:
        name: Tensor name.
        datatype: KServe datatype (``FP32``, ``INT64``, ``BYTES``, ...).
        dims: Shape without the batch axis; -1 for a variable dimension.
        optional: Whether a request may leave the input out.
    """

    name: str
    datatype: str
    dims: tuple[int, ...]
    optional: bool = False

    @property
    def numpy_dtype(self) -> Any:
        """The numpy dtype tritonclient expects for this datatype (``ml_dtypes.bfloat16`` for BF16)."""
        from tritonclient.utils import triton_to_np_dtype

        dtype = triton_to_np_dtype(self.datatype)
        if dtype is None:
            raise LoadTestError(
                f"tensor '{self.name}' has datatype {self.datatype}, which the harness cannot fill"
            )
        return dtype


@dataclass(frozen=True)
class ModelInfo:
    """What a request to one model needs.

    Attributes:
        name: Model name.
        max_batch_size: 0 when the model does not batch (requests carry no batch axis).
        inputs: The model's inputs.
        outputs: The model's outputs.
    """

    name: str
    max_batch_size: int
    inputs: tuple[PayloadTensor, ...]
    outputs: tuple[PayloadTensor, ...]


def model_info(metadata: dict[str, Any], config: dict[str, Any]) -> ModelInfo:
    """Combine a model's metadata and config, as the server returns them, into a :class:`ModelInfo`."""
    name = str(metadata.get("name") or config.get("name"))
    max_batch = int(config.get("max_batch_size", 0) or 0)
    optional = {str(i["name"]) for i in config.get("input", []) if i.get("optional")}

    def specs(entries: list[dict[str, Any]]) -> tuple[PayloadTensor, ...]:
        result = []
        for entry in entries:
            shape = [int(d) for d in entry.get("shape", [])]
            dims = shape[1:] if max_batch > 0 and shape else shape
            result.append(
                PayloadTensor(
                    str(entry["name"]), str(entry["datatype"]), tuple(dims), entry["name"] in optional
                )
            )
        return tuple(result)

    return ModelInfo(name, max_batch, specs(metadata.get("inputs", [])), specs(metadata.get("outputs", [])))


def load_payload_samples(path: str | Path) -> dict[str, np.ndarray]:
    """Read real samples from ``.npz`` or ``.json``: key (``input`` or ``model/input``) -> samples.

    Returns:
        Arrays whose first axis indexes samples. JSON values stay nested lists until
        :func:`make_batches` knows each input's dtype and dims; here they become object-free arrays.

    Raises:
        LoadTestError: The file is missing, of another kind, or malformed.
    """
    path = Path(path)
    if not path.is_file():
        raise LoadTestError(f"data file {path} does not exist; give an .npz or .json file of samples")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as archive:
                samples = {key: np.asarray(archive[key]) for key in archive.files}
        except (OSError, ValueError) as error:
            raise LoadTestError(f"data file {path} is not a readable .npz archive ({error})") from error
    elif suffix == ".json":
        samples = _json_samples(path)
    else:
        raise LoadTestError(f"data file {path} must be .npz or .json, not '{suffix or 'no extension'}'")
    if not samples:
        raise LoadTestError(f"data file {path} holds no samples")
    return samples


def _json_samples(path: Path) -> dict[str, np.ndarray]:
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise LoadTestError(f"data file {path} is not valid JSON ({error})") from error
    if isinstance(document, dict) and isinstance(document.get("data"), list):
        columns: dict[str, list[Any]] = {}
        for index, entry in enumerate(document["data"]):
            if not isinstance(entry, dict):
                raise LoadTestError(f"{path}: data[{index}] must be an object of input name -> values")
            for key, value in entry.items():
                if isinstance(value, dict):
                    value = _with_shape(value, f"{path}: data[{index}].{key}")
                columns.setdefault(key, []).append(value)
    elif isinstance(document, dict) and all(isinstance(v, list) for v in document.values()):
        columns = dict(document)
    else:
        raise LoadTestError(
            f'data file {path} must be {{"input": [sample, ...]}} or {{"data": [{{"input": sample}}, ...]}}'
        )
    result = {}
    for key, values in columns.items():
        try:
            result[key] = np.asarray(values)
        except ValueError as error:
            raise LoadTestError(f"{path}: the samples of '{key}' differ in shape ({error})") from error
        if result[key].dtype == object:
            raise LoadTestError(f"{path}: the samples of '{key}' differ in shape; give equal-sized samples")
    return result


def _with_shape(value: dict[str, Any], where: str) -> Any:
    if "content" not in value:
        raise LoadTestError(f"{where}: an object value needs 'content' (and optionally 'shape')")
    content = np.asarray(value["content"])
    return content.reshape(value["shape"]).tolist() if "shape" in value else value["content"]


def make_batches(
    info: ModelInfo,
    batch_size: int,
    *,
    seed: int = 0,
    samples: dict[str, np.ndarray] | None = None,
    variants: int = RANDOM_VARIANTS,
) -> list[Batch]:
    """Build the pool of distinct requests that users cycle through.

    Args:
        info: The model.
        batch_size: Samples per request; must be 1 when the model does not batch.
        seed: Seed of the random values (the same seed gives the same requests).
        samples: Real samples from :func:`load_payload_samples`, or None for random values.
        variants: Number of random requests to build.

    Raises:
        LoadTestError: The batch size does not fit the model, an input has variable dims and no samples,
            or the samples do not fit the model's inputs.
    """
    if batch_size < 1:
        raise LoadTestError(f"--batch-size must be at least 1, not {batch_size}")
    if info.max_batch_size == 0 and batch_size != 1:
        raise LoadTestError(
            f"model '{info.name}' does not batch (max_batch_size 0), so --batch-size must be 1, not {batch_size}"
        )
    if info.max_batch_size > 0 and batch_size > info.max_batch_size:
        raise LoadTestError(
            f"--batch-size {batch_size} exceeds model '{info.name}'s max_batch_size {info.max_batch_size}; "
            f"use at most {info.max_batch_size}"
        )
    if samples is not None:
        return _sample_batches(info, batch_size, samples)
    rng = np.random.default_rng([seed, zlib.crc32(info.name.encode())])
    batches = []
    for _ in range(max(1, variants)):
        batch = {}
        for spec in info.inputs:
            if any(d < 0 for d in spec.dims):
                raise LoadTestError(
                    f"input '{spec.name}' of model '{info.name}' has variable dims {list(spec.dims)}; "
                    "give real samples with --data FILE"
                )
            shape = (batch_size, *spec.dims) if info.max_batch_size > 0 else spec.dims
            batch[spec.name] = _random(rng, spec, shape)
        batches.append(batch)
    return batches


def _random(rng: np.random.Generator, spec: PayloadTensor, shape: tuple[int, ...]) -> np.ndarray:
    dtype = spec.numpy_dtype
    if spec.datatype in _FLOATS:
        return rng.standard_normal(shape).astype(dtype)
    if spec.datatype in _INTS:
        return rng.integers(0, 100, size=shape).astype(dtype)
    if spec.datatype == "BOOL":
        return rng.random(shape) < 0.5
    letters = rng.integers(97, 123, size=(*shape, 8), dtype=np.uint8)
    flat = [bytes(row) for row in letters.reshape(-1, 8)]
    return np.array(flat, dtype=np.object_).reshape(shape)


def _sample_batches(info: ModelInfo, batch_size: int, samples: dict[str, np.ndarray]) -> list[Batch]:
    columns: dict[str, np.ndarray] = {}
    for spec in info.inputs:
        key = next((k for k in (f"{info.name}/{spec.name}", spec.name) if k in samples), None)
        if key is None:
            if spec.optional:
                continue
            raise LoadTestError(
                f"the data file has no samples for input '{spec.name}' of model '{info.name}' "
                f"(it has: {', '.join(sorted(samples))}); add them under '{spec.name}' or "
                f"'{info.name}/{spec.name}'"
            )
        columns[spec.name] = _fit(info, spec, samples[key])
    counts = {len(column) for column in columns.values()}
    if len(counts) > 1:
        raise LoadTestError(
            f"the data file's inputs for model '{info.name}' have different sample counts "
            f"({', '.join(f'{n}: {len(c)}' for n, c in columns.items())}); give the same number for each"
        )
    total = counts.pop()
    per_request = batch_size if info.max_batch_size > 0 else 1
    count = min(MAX_VARIANTS, max(1, -(-total // per_request)))
    batches = []
    for index in range(count):
        rows = [(index * per_request + j) % total for j in range(per_request)]
        if info.max_batch_size > 0:
            batches.append({name: column[rows] for name, column in columns.items()})
        else:
            batches.append({name: column[rows[0]] for name, column in columns.items()})
    return batches


def _fit(info: ModelInfo, spec: PayloadTensor, values: np.ndarray) -> np.ndarray:
    """Cast samples to the input's dtype and shape (flat samples are reshaped when sizes agree)."""
    where = f"the data file's samples for input '{spec.name}' of model '{info.name}'"
    if values.ndim == 0 or len(values) == 0:
        raise LoadTestError(f"{where} are empty; give a list of samples")
    if spec.datatype == "BYTES":
        converted = np.array(
            [v if isinstance(v, bytes) else str(v).encode() for v in values.reshape(-1)], dtype=np.object_
        ).reshape(values.shape)
    else:
        try:
            converted = values.astype(spec.numpy_dtype)
        except (TypeError, ValueError) as error:
            raise LoadTestError(f"{where} do not convert to {spec.datatype} ({error})") from error
    sample_shape = converted.shape[1:]
    if _matches(sample_shape, spec.dims):
        return converted
    if all(d >= 0 for d in spec.dims) and int(np.prod(sample_shape)) == int(np.prod(spec.dims)):
        return converted.reshape((len(converted), *spec.dims))
    raise LoadTestError(
        f"{where} have shape {list(sample_shape)} each, but the input takes {list(spec.dims)} "
        "(without the batch axis); fix the data file"
    )


def _matches(shape: tuple[int, ...], dims: tuple[int, ...]) -> bool:
    return len(shape) == len(dims) and all(d < 0 or d == s for s, d in zip(shape, dims, strict=True))
