"""Request tensors for a model: generated ones shaped by the server's metadata and config, or real samples.

:func:`model_info` reads what a request needs from the model's metadata and config on the server (input
and output names, datatypes, dims without the batch axis, ``max_batch_size``, optional inputs, the
platform). :func:`make_batches` builds a small pool of distinct request batches from it:

* generated values, the same for the same ``--seed``: floats random (standard normal), integers zero (a
  random integer can index past an embedding table and crash the model), booleans random, text (STRING,
  ``BYTES`` on the wire) a few short ASCII words, or encoded PNG and JPEG images for an input that takes
  them (the built-in image step's, or an ensemble input feeding it: :attr:`PayloadTensor.image_size`). An
  input with variable (-1) dims takes the dims given with ``--shape NAME:DIMS`` (:func:`parse_input_shapes`);
* or consecutive samples of a data file read by :func:`~generator.loadtest.datafiles.load_payload_samples`
  (``.npz``, ``.json``, ``.txt``), cast to the input's datatype; flat samples are reshaped to the input's
  dims (or its ``--shape``) when the sizes agree.

Text tensors are numpy object arrays of ``bytes``, as tritonclient serializes them. Building the pool is
the only costly part, done once per process before the load starts.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from generator.core.errors import LoadTestError
from generator.core.sample_images import sample_images
from generator.loadtest.datafiles import UNNAMED, Base64Sample, Column, Samples, load_payload_samples
from generator.loadtest.parameters import ParamValue, input_value
from generator.loadtest.sequences import SequenceModel, sequence_model

__all__ = [
    "Batch",
    "ModelInfo",
    "PayloadTensor",
    "check_input_shapes",
    "load_payload_samples",
    "make_batches",
    "model_info",
    "parse_input_shapes",
]

Batch = dict[str, np.ndarray]
"""One request: input name -> array, batch axis first when the model batches."""

InputShapes = dict[str, tuple[int, ...]]
"""``--shape`` values: input name (``input`` or ``model/input``) -> dims without the batch axis."""

RANDOM_VARIANTS = 8
"""Distinct generated requests per model, so a response cache does not answer every request."""

MAX_VARIANTS = 256
"""At most this many distinct requests are prebuilt from a data file (it is cycled through)."""

IMAGE_POOL = 16
"""Distinct generated images per image input; requests draw from them."""

_FLOATS = ("FP16", "FP32", "FP64", "BF16")
_INTS = ("INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64")
_WORDS = (
    "the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "small", "model", "reads",
    "short", "text", "in", "batches", "every", "request", "carries", "plain", "words", "from", "one",
    "seed", "so", "runs", "repeat", "and", "load", "tests", "stay", "fair",
)  # fmt: skip
"""Generated text: 2 to 6 of these words, space-separated."""


@dataclass(frozen=True)
class PayloadTensor:
    """One input or output of a served model, as its metadata and config describe it.

    Attributes:
        name: Tensor name.
        datatype: KServe datatype (``FP32``, ``INT64``, ``BYTES``, ...).
        dims: Shape without the batch axis; -1 for a variable dimension.
        optional: Whether a request may leave the input out.
        image_size: For a STRING input that takes encoded images, the (height, width) the model resizes
            them to (generated values are images around that size); else None.
    """

    name: str
    datatype: str
    dims: tuple[int, ...]
    optional: bool = False
    image_size: tuple[int, int] | None = None

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

    @property
    def is_text(self) -> bool:
        """Whether this is a text tensor (Triton's TYPE_STRING, ``BYTES`` on the wire)."""
        return self.datatype == "BYTES"


@dataclass(frozen=True)
class ModelInfo:
    """What a request to one model needs.

    Attributes:
        name: Model name.
        max_batch_size: 0 when the model does not batch (requests carry no batch axis).
        inputs: The model's inputs.
        outputs: The model's outputs.
        platform: The config's platform (``"ensemble"`` for an ensemble), or ``""``.
        sequence: The sequence batching of a stateful model (or of an ensemble's stateful step), else None.
        decoupled: Whether the model is decoupled (it streams its responses, over gRPC only).
    """

    name: str
    max_batch_size: int
    inputs: tuple[PayloadTensor, ...]
    outputs: tuple[PayloadTensor, ...]
    platform: str = ""
    sequence: SequenceModel | None = None
    decoupled: bool = False

    @property
    def is_ensemble(self) -> bool:
        """Whether the model is an ensemble (its steps are other models)."""
        return self.platform == "ensemble"


def model_info(
    metadata: dict[str, Any],
    config: dict[str, Any],
    images: dict[str, tuple[int, int]] | None = None,
    sequence: SequenceModel | None = None,
) -> ModelInfo:
    """Combine a model's metadata and config, as the server returns them, into a :class:`ModelInfo`.

    Args:
        metadata: The model's metadata.
        config: Its config.
        images: Input -> (height, width) for the inputs that take encoded images
            (:func:`~generator.loadtest.images.image_inputs`).
        sequence: The sequence batching of an ensemble's stateful step (a model's own is read from
            ``config``).
    """
    images = images or {}
    name = str(metadata.get("name") or config.get("name"))
    max_batch = int(config.get("max_batch_size", 0) or 0)
    optional = {str(i["name"]) for i in config.get("input", []) if i.get("optional")}
    sequence = sequence_model(config) or sequence
    # Triton fills the controls and carries implicit state itself: a client never sends them.
    filled = set(sequence.controls + sequence.states) if sequence else set()
    policy = config.get("model_transaction_policy")

    def specs(entries: list[dict[str, Any]]) -> tuple[PayloadTensor, ...]:
        result = []
        for entry in entries:
            shape = [int(d) for d in entry.get("shape", [])]
            dims = shape[1:] if max_batch > 0 and shape else shape
            size = images.get(str(entry["name"])) if entry["datatype"] == "BYTES" else None
            result.append(
                PayloadTensor(
                    str(entry["name"]), str(entry["datatype"]), tuple(dims), entry["name"] in optional, size
                )
            )
        return tuple(result)

    return ModelInfo(
        name,
        max_batch,
        specs([i for i in metadata.get("inputs", []) if i.get("name") not in filled]),
        specs(metadata.get("outputs", [])),
        str(config.get("platform") or metadata.get("platform") or ""),
        sequence,
        bool(policy.get("decoupled")) if isinstance(policy, dict) else False,
    )


def parse_input_shapes(values: Iterable[str] | None) -> InputShapes:
    """Parse ``--shape NAME:DIMS`` values (``input_ids:16``, ``image:3,224,224``, ``model/input:8``).

    Raises:
        LoadTestError: A value is malformed, a dim is not a whole number above 0, or a name is given twice.
    """
    shapes: InputShapes = {}
    for value in values or ():
        name, sep, text = str(value).strip().rpartition(":")
        try:
            dims = tuple(int(d) for d in text.split(","))
        except ValueError:
            dims = ()
        if not sep or not name or not dims or any(d < 1 for d in dims):
            raise LoadTestError(
                f"--shape '{value}': write NAME:DIMS, the dims of one sample without the batch axis, "
                "each a whole number above 0, e.g. --shape input_ids:16 or --shape image:3,224,224"
            )
        if name in shapes:
            raise LoadTestError(f"--shape gives '{name}' twice; give each input once")
        shapes[name] = dims
    return shapes


def check_input_shapes(shapes: InputShapes, models: Iterable[ModelInfo]) -> None:
    """Refuse ``--shape`` names that are no input of the test's models.

    Raises:
        LoadTestError: A name matches no input (the message lists the inputs).
    """
    known = {spec.name for m in models for spec in m.inputs} | {
        f"{m.name}/{spec.name}" for m in models for spec in m.inputs
    }
    for name in shapes:
        if name not in known:
            listing = ", ".join(sorted(k for k in known if "/" in k)) or "none"
            raise LoadTestError(
                f"--shape {name}:...: no model of this test has an input '{name}' (inputs: {listing})"
            )


def make_batches(
    info: ModelInfo,
    batch_size: int,
    *,
    seed: int = 0,
    samples: Samples | None = None,
    variants: int = RANDOM_VARIANTS,
    shapes: InputShapes | None = None,
    values: Mapping[str, ParamValue] | None = None,
) -> list[Batch]:
    """Build the pool of distinct requests that users cycle through.

    Args:
        info: The model.
        batch_size: Samples per request; must be 1 when the model does not batch.
        seed: Seed of the generated values (the same seed gives the same requests).
        samples: Real samples from :func:`load_payload_samples`, or None for generated values.
        variants: Number of generated requests to build.
        shapes: ``--shape`` dims per input (``input`` or ``model/input``): the dims of generated values for
            inputs with -1 axes, and what flat samples are reshaped to.
        values: ``--param`` values of the inputs of those names, the same in every request. For a decoupled
            model, an optional input without a value, samples or a --shape is left out, so a generation setting
            takes the model's default, and a BOOL input ``stream`` is true.

    Raises:
        LoadTestError: The batch size does not fit the model, an input has variable dims and neither a
            shape nor samples, a shape contradicts the model, or the samples do not fit its inputs.
    """
    values = {s.name: values[s.name] for s in info.inputs if values and s.name in values}
    if info.decoupled:
        values = {
            **{s.name: True for s in info.inputs if s.name == "stream" and s.datatype == "BOOL"},
            **values,
        }
    batches = _batches(info, batch_size, seed, samples, variants, shapes, set(values))
    for spec in info.inputs:
        if spec.name in values:
            dims = _given_shape(info, spec, shapes or {}) or tuple(max(1, d) for d in spec.dims)
            shape = (batch_size, *dims) if info.max_batch_size > 0 else dims
            value = input_value(spec.name, values[spec.name], spec.datatype, spec.numpy_dtype, shape)
            for batch in batches:
                batch[spec.name] = value
        elif (
            info.decoupled
            and spec.optional
            and samples is None
            and not _given_shape(info, spec, shapes or {})
        ):
            for batch in batches:
                batch.pop(spec.name, None)
    return batches


def _batches(
    info: ModelInfo,
    batch_size: int,
    seed: int,
    samples: Samples | None,
    variants: int,
    shapes: InputShapes | None,
    given_values: set[str],
) -> list[Batch]:
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
    given = {spec.name: _given_shape(info, spec, shapes or {}) for spec in info.inputs}
    if samples is not None:
        return _sample_batches(info, batch_size, samples, given, given_values)
    # A decoupled model's optional inputs without a --shape are left out of its requests (make_batches),
    # so their dims are not asked for.
    skipped = {s.name for s in info.inputs if info.decoupled and s.optional and not given[s.name]}
    skipped |= given_values
    dims = {
        spec.name: given[spec.name] or _fixed_dims(info, spec)
        for spec in info.inputs
        if spec.name not in skipped
    }
    rng = np.random.default_rng([seed, zlib.crc32(info.name.encode())])
    words = np.random.default_rng([seed, zlib.crc32(info.name.encode()), 1])
    pools = {
        spec.name: sample_images(
            np.random.default_rng([seed, zlib.crc32(info.name.encode()), zlib.crc32(spec.name.encode())]),
            spec.image_size,
            IMAGE_POOL,
        )
        for spec in info.inputs
        if spec.is_text and spec.image_size is not None
    }
    batches = []
    for _ in range(max(1, variants)):
        batch = {}
        for spec in info.inputs:
            if spec.name in skipped:
                continue
            shape = (batch_size, *dims[spec.name]) if info.max_batch_size > 0 else dims[spec.name]
            if spec.name in pools:
                batch[spec.name] = _drawn(words, pools[spec.name], shape)
            else:
                batch[spec.name] = _generated(rng, words, spec, shape)
        batches.append(batch)
    return batches


def _given_shape(info: ModelInfo, spec: PayloadTensor, shapes: InputShapes) -> tuple[int, ...] | None:
    """The ``--shape`` of an input (``model/input`` before ``input``), checked against its dims."""
    key = next((k for k in (f"{info.name}/{spec.name}", spec.name) if k in shapes), None)
    if key is None:
        return None
    dims = shapes[key]
    if not _matches(dims, spec.dims):
        fix = (
            f"give one dim per axis ({len(spec.dims)})"
            if len(dims) != len(spec.dims)
            else "only its -1 axes take another size"
        )
        raise LoadTestError(
            f"--shape {key}:{','.join(map(str, dims))} does not fit input '{spec.name}' of model "
            f"'{info.name}', whose dims are {list(spec.dims)} without the batch axis; {fix}"
        )
    return dims


def _fixed_dims(info: ModelInfo, spec: PayloadTensor) -> tuple[int, ...]:
    if any(d < 0 for d in spec.dims):
        example = ",".join("16" if d < 0 else str(d) for d in spec.dims)
        raise LoadTestError(
            f"input '{spec.name}' of model '{info.name}' has variable dims {list(spec.dims)}; pass "
            f"--shape {spec.name}:DIMS (e.g. --shape {spec.name}:{example}) or real samples with --data FILE"
        )
    return spec.dims


def _generated(
    rng: np.random.Generator, words: np.random.Generator, spec: PayloadTensor, shape: tuple[int, ...]
) -> np.ndarray:
    """Generated values: floats random, integers zero, booleans random, text a few words."""
    if spec.is_text:
        return _text(words, shape)
    dtype = spec.numpy_dtype
    if spec.datatype in _FLOATS:
        return rng.standard_normal(shape).astype(dtype)
    if spec.datatype in _INTS:
        return np.zeros(shape, dtype=dtype)
    if spec.datatype == "BOOL":
        return rng.random(shape) < 0.5
    raise LoadTestError(f"input '{spec.name}' has datatype {spec.datatype}, which the harness cannot fill")


def _drawn(rng: np.random.Generator, pool: list[bytes], shape: tuple[int, ...]) -> np.ndarray:
    """Encoded images drawn from ``pool``, as a text tensor of ``shape``."""
    picks = rng.integers(0, len(pool), size=int(np.prod(shape, dtype=np.int64)))
    array = np.empty(len(picks), dtype=np.object_)
    array[:] = [pool[i] for i in picks]
    return array.reshape(shape)


def _text(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    count = int(np.prod(shape, dtype=np.int64))
    lengths = rng.integers(2, 7, size=count)
    picks = rng.integers(0, len(_WORDS), size=int(lengths.sum()))
    texts = []
    start = 0
    for length in lengths:
        texts.append(" ".join(_WORDS[i] for i in picks[start : start + length]).encode("ascii"))
        start += length
    array = np.empty(count, dtype=np.object_)
    array[:] = texts
    return array.reshape(shape)


def _sample_batches(
    info: ModelInfo,
    batch_size: int,
    samples: Samples,
    given: dict[str, tuple[int, ...] | None],
    given_values: set[str],
) -> list[Batch]:
    columns: dict[str, Column] = {}
    for spec in info.inputs:
        if spec.name in given_values:
            continue
        key = _sample_key(info, spec, samples, given_values)
        if key is None:
            if spec.optional:
                continue
            raise LoadTestError(
                f"the data file has no samples for input '{spec.name}' of model '{info.name}' "
                f"(it has: {', '.join(sorted(samples))}); add them under '{spec.name}' or "
                f"'{info.name}/{spec.name}'"
            )
        columns[spec.name] = _fit(info, spec, samples[key], given[spec.name] or spec.dims)
    counts = {len(column) for column in columns.values()}
    if len(counts) > 1:
        raise LoadTestError(
            f"the data file's inputs for model '{info.name}' have different sample counts "
            f"({', '.join(f'{n}: {len(c)}' for n, c in columns.items())}); give the same number for each"
        )
    total = counts.pop() if counts else 1
    per_request = batch_size if info.max_batch_size > 0 else 1
    count = min(MAX_VARIANTS, max(1, -(-total // per_request)))
    batches = []
    for index in range(count):
        rows = [(index * per_request + j) % total for j in range(per_request)]
        batch = {name: _rows(info, name, column, rows) for name, column in columns.items()}
        if info.max_batch_size == 0:
            batch = {name: array[0] for name, array in batch.items()}
        batches.append(batch)
    return batches


def _sample_key(
    info: ModelInfo, spec: PayloadTensor, samples: Samples, given_values: set[str] | None = None
) -> str | None:
    """Where the data file keeps this input's samples: ``model/input``, ``input``, or unnamed samples."""
    key = next((k for k in (f"{info.name}/{spec.name}", spec.name) if k in samples), None)
    if key is not None or UNNAMED not in samples:
        return key
    required = [s for s in info.inputs if not s.optional and s.name not in (given_values or ())]
    if required == [spec]:
        return UNNAMED
    if len(required) == 1 and spec.optional:
        return None
    names = ", ".join(f"{s.name} ({'STRING' if s.is_text else s.datatype})" for s in info.inputs)
    raise LoadTestError(
        f"the data file's samples name no input (a .txt file or a JSON list), so they feed a model with "
        f"one input; model '{info.name}' has inputs {names}: give a .json object or .npz keyed by input name"
    )


def _rows(info: ModelInfo, name: str, column: Column, rows: list[int]) -> np.ndarray:
    if isinstance(column, np.ndarray):
        return column[rows]
    picked = [column[r] for r in rows]
    shapes = {p.shape for p in picked}
    if len(shapes) > 1:
        raise LoadTestError(
            f"the data file's samples {rows[0]}-{rows[-1]} of input '{name}' of model '{info.name}' differ "
            f"in shape ({', '.join(str(list(s)) for s in sorted(shapes))}); one request stacks "
            f"--batch-size {len(rows)} consecutive samples: order the samples so that each run of "
            f"{len(rows)} shares a shape, or use --batch-size 1"
        )
    return np.stack(picked)


def _fit(info: ModelInfo, spec: PayloadTensor, values: Column, dims: tuple[int, ...]) -> Column:
    """Cast samples to the input's dtype and fit them to ``dims`` (flat samples reshaped when sizes agree)."""
    where = f"the data file's samples for input '{spec.name}' of model '{info.name}'"
    if isinstance(values, list):
        arrays = [_read(spec, value) for value in values]
        if len({(a.shape, a.dtype) for a in arrays}) > 1:
            return [_fit(info, spec, array[None], dims)[0] for array in arrays]
        values = np.stack(arrays)
    if values.ndim == 0 or len(values) == 0:
        raise LoadTestError(f"{where} are empty; give a list of samples")
    converted = _converted(where, spec, values)
    sample_shape = converted.shape[1:]
    if _matches(sample_shape, dims):
        return converted
    size = int(np.prod(sample_shape, dtype=np.int64))
    if all(d >= 0 for d in dims) and size == int(np.prod(dims, dtype=np.int64)):
        return converted.reshape((len(converted), *dims))
    if size == 1 and all(d in (-1, 1) for d in dims):  # one value per sample, e.g. a line of a .txt file
        return converted.reshape((len(converted), *(1 for _ in dims)))
    raise LoadTestError(
        f"{where} have shape {list(sample_shape)} each, but the input takes {list(dims)} "
        "(without the batch axis); fix the data file"
    )


def _read(spec: PayloadTensor, sample: np.ndarray | Base64Sample) -> np.ndarray:
    """A sample as an array: base64 samples read as the input's datatype (strings for STRING)."""
    if isinstance(sample, Base64Sample):
        return sample.values(spec.datatype, np.object_ if spec.is_text else spec.numpy_dtype)
    return sample


def _converted(where: str, spec: PayloadTensor, values: np.ndarray) -> np.ndarray:
    text = _holds_text(values)
    if spec.is_text:
        if not text:
            raise LoadTestError(
                f"{where} are numbers ({values.dtype}), but the input is STRING (text); give strings"
            )
        flat = [v if isinstance(v, bytes) else str(v).encode("utf-8") for v in values.reshape(-1).tolist()]
        converted = np.empty(len(flat), dtype=np.object_)
        converted[:] = flat
        return converted.reshape(values.shape)
    if text:
        raise LoadTestError(f"{where} are text, but the input is {spec.datatype}; give numbers")
    try:
        return values.astype(spec.numpy_dtype)
    except (TypeError, ValueError) as error:
        raise LoadTestError(f"{where} do not convert to {spec.datatype} ({error})") from error


def _holds_text(values: np.ndarray) -> bool:
    if values.dtype.kind in "SU":
        return True
    return values.dtype == object and values.size > 0 and isinstance(values.flat[0], (bytes, str))


def _matches(shape: tuple[int, ...], dims: tuple[int, ...]) -> bool:
    return len(shape) == len(dims) and all(d < 0 or d == s for s, d in zip(shape, dims, strict=True))
