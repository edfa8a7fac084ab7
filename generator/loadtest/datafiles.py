"""Real samples from a ``--data`` file, read into columns of samples keyed by input name.

Accepted files (keys are ``input`` or ``model/input``, for a file shared by several models):

* ``.npz``: one array per key, its first axis the samples: numbers, or text as numpy ``S`` (bytes) or ``U``
  (str) arrays. It is read without pickles, so arrays of Python objects are refused.
* ``.json``: ``{"input": [sample, ...]}``; perf_analyzer's ``--input-data`` format
  ``{"data": [{"input": sample}, ...]}`` (its streams, ``{"data": [[{"input": sample}, ...], ...]}``, are
  read one after the other); or a plain list of samples (usually strings), for a model with one input.
  A sample is its values (nested lists of numbers, booleans or strings), ``{"content": [...], "shape":
  [...]}``, or ``{"b64": "...", "shape": [...]}``: base64 of the bytes perf_analyzer sends, the raw
  little-endian values of a numeric input (how perf_analyzer and ``build`` write FP16/BF16) or, for a
  STRING input, Triton's serialized BYTES (each element a 4-byte little-endian length, then its bytes: how
  binary strings such as encoded images travel). Base64 samples may differ in length; they are read
  (:class:`Base64Sample`) once the input's datatype is known.
* ``.txt``: one string per line (its bytes as they are, without the line end; empty lines are skipped),
  for a model with one STRING input.

Samples of one input may differ in shape (a variable-length input): such a column is a list of samples,
one per sample, instead of one array. Which dtype and shape the model wants is checked later, by
:func:`~generator.loadtest.payloads.make_batches`, which knows the model. A malformed file fails with one
line naming the file, the sample (``data[3].image``) and the problem.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from generator.core.errors import LoadTestError
from generator.core.sample_images import deserialize_bytes

__all__ = ["UNNAMED", "Base64Sample", "Column", "Samples", "load_payload_samples"]


@dataclass(frozen=True)
class Base64Sample:
    """One sample given as perf_analyzer's ``{"b64": ..., "shape": [...]}``, read once its input is known.

    Attributes:
        raw: The decoded bytes: raw little-endian values, or serialized BYTES for a STRING input.
        shape: The sample's ``shape``, or None (a flat run of values, or of strings).
        where: The file and the sample, for errors (``data.json: data[3].image``).
    """

    raw: bytes
    shape: tuple[int, ...] | None
    where: str

    def values(self, datatype: str, dtype: Any) -> np.ndarray:
        """The sample as an array of ``dtype``: the strings of a ``BYTES`` input, numbers of another.

        Args:
            datatype: The input's KServe datatype (``BYTES``, ``FP16``, ...).
            dtype: Its numpy dtype (``object`` for ``BYTES``).

        Raises:
            LoadTestError: The bytes do not hold values of that datatype, or not as many as ``shape`` takes.
        """
        if datatype == "BYTES":
            try:
                items = deserialize_bytes(self.raw)
            except ValueError as error:
                raise LoadTestError(
                    f"{self.where}: 'b64' of a STRING input must be Triton's serialized BYTES (each element "
                    f"a 4-byte little-endian length, then its bytes), but {error}"
                ) from None
            array = np.empty(len(items), dtype=np.object_)
            array[:] = items
            return self._shaped(array, f"{len(items)} strings")
        size = np.dtype(dtype).itemsize
        if len(self.raw) % size:
            raise LoadTestError(
                f"{self.where}: 'b64' holds {len(self.raw)} bytes, not a whole number of {datatype} values "
                f"({size} bytes each); fix the data file's 'b64'"
            )
        array = np.frombuffer(self.raw, dtype=np.dtype(dtype).newbyteorder("<")).astype(dtype)
        return self._shaped(array, f"{len(array)} {datatype} values ({len(self.raw)} bytes)")

    def _shaped(self, flat: np.ndarray, holds: str) -> np.ndarray:
        if self.shape is None:
            return flat
        if math.prod(self.shape) != flat.size:
            raise LoadTestError(
                f"{self.where}: 'b64' holds {holds}, but 'shape' {list(self.shape)} takes "
                f"{math.prod(self.shape)}; fix the data file's 'shape' or 'b64'"
            )
        return flat.reshape(self.shape)


Column = np.ndarray | list[np.ndarray | Base64Sample]
"""The samples of one input: one array (first axis the samples), or a list of samples (arrays of different
shapes, or base64 samples still to be read as the input's datatype)."""

Samples = dict[str, Column]
"""A data file's columns: key (``input``, ``model/input`` or :data:`UNNAMED`) -> samples."""

UNNAMED = ""
"""The key of samples that name no input (a ``.txt`` file, a JSON list): for a model with one input."""

_SUFFIXES = (".npz", ".json", ".txt")


def load_payload_samples(path: str | Path) -> Samples:
    """Read the samples of a data file (see the module docstring for the formats).

    Raises:
        LoadTestError: The file is missing, of another kind, malformed, or holds no samples.
    """
    path = Path(path)
    if not path.is_file():
        raise LoadTestError(f"data file {path} does not exist; give an .npz, .json or .txt file of samples")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        samples = _npz_samples(path)
    elif suffix == ".json":
        samples = _json_samples(path)
    elif suffix == ".txt":
        samples = _text_samples(path)
    else:
        raise LoadTestError(
            f"data file {path} must be {', '.join(_SUFFIXES[:-1])} or {_SUFFIXES[-1]}, "
            f"not '{suffix or 'no extension'}'"
        )
    if not samples:
        raise LoadTestError(f"data file {path} holds no samples")
    return samples


def _npz_samples(path: Path) -> Samples:
    samples: Samples = {}
    try:
        with np.load(path, allow_pickle=False) as archive:
            for key in archive.files:
                try:
                    samples[key] = np.asarray(archive[key])
                except ValueError as error:
                    if "allow_pickle" not in str(error):
                        raise
                    raise LoadTestError(
                        f"data file {path}: array '{key}' holds Python objects, which are not read (no "
                        "pickles); save text as a numpy string array, e.g. np.array(texts, dtype=str)"
                    ) from None
    except (OSError, ValueError) as error:
        raise LoadTestError(f"data file {path} is not a readable .npz archive ({error})") from error
    for key, array in samples.items():
        if array.ndim == 0 or len(array) == 0:
            raise LoadTestError(f"data file {path}: array '{key}' holds no samples; give one row per sample")
    return samples


def _text_samples(path: Path) -> Samples:
    try:
        content = path.read_bytes()
    except OSError as error:
        raise LoadTestError(f"data file {path} cannot be read ({error})") from error
    lines = [line.removesuffix(b"\r") for line in content.split(b"\n")]
    texts = [line for line in lines if line]
    if not texts:
        raise LoadTestError(f"data file {path} has no lines of text; write one sample per line")
    column = np.empty(len(texts), dtype=np.object_)
    column[:] = texts
    return {UNNAMED: column}


def _json_samples(path: Path) -> Samples:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise LoadTestError(f"data file {path} is not valid JSON ({error})") from error
    columns: dict[str, list[tuple[str, Any]]] = {}
    if isinstance(document, list):
        columns[UNNAMED] = [(f"{path}: [{i}]", value) for i, value in enumerate(document)]
    elif isinstance(document, dict) and isinstance(document.get("data"), list):
        for where, entry in _perf_analyzer_steps(path, document["data"]):
            for key, value in entry.items():
                columns.setdefault(key, []).append((f"{where}.{key}", value))
    elif isinstance(document, dict) and document and all(isinstance(v, list) for v in document.values()):
        columns = {
            str(key): [(f"{path}: {key}[{i}]", value) for i, value in enumerate(values)]
            for key, values in document.items()
        }
    else:
        raise LoadTestError(
            f'data file {path} must be {{"input": [sample, ...]}}, {{"data": [{{"input": sample}}, ...]}} '
            "or a list of samples"
        )
    return {key: _column(path, key, values) for key, values in columns.items()}


def _perf_analyzer_steps(path: Path, data: list[Any]) -> list[tuple[str, dict[str, Any]]]:
    """The entries of perf_analyzer's ``data``, with where each is: a list of steps, or a list of streams
    (lists of steps), read one stream after the other."""
    steps = []
    for index, entry in enumerate(data):
        if isinstance(entry, list):
            nested = [(f"{path}: data[{index}][{j}]", step) for j, step in enumerate(entry)]
        else:
            nested = [(f"{path}: data[{index}]", entry)]
        for where, step in nested:
            if not isinstance(step, dict):
                raise LoadTestError(f"{where} must be an object of input name -> values")
            steps.append((where, step))
    return steps


def _sample(value: Any, where: str) -> np.ndarray | Base64Sample:
    """One sample: its values, perf_analyzer's ``{"content": [...], "shape": [...]}`` as an array of that
    shape, or ``{"b64": ..., "shape": [...]}`` as a :class:`Base64Sample`."""
    if not isinstance(value, dict):
        return _array(value, where)
    shape = _shape(value["shape"], where) if "shape" in value else None
    if "content" not in value and "b64" in value:
        return Base64Sample(_base64(value["b64"], where), shape, where)
    if "content" not in value:
        raise LoadTestError(f"{where}: an object value needs 'content' or 'b64' (and optionally 'shape')")
    content = _array(value["content"], where)
    if shape is None:
        return content
    if math.prod(shape) != content.size:
        raise LoadTestError(
            f"{where}: 'content' of {content.size} values does not fill 'shape' {list(shape)}"
        )
    return content.reshape(shape)


def _shape(value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value
    ):
        raise LoadTestError(
            f"{where}: 'shape' {json.dumps(value)} is not a list of sizes (whole numbers >= 0)"
        )
    return tuple(value)


def _base64(value: Any, where: str) -> bytes:
    if not isinstance(value, str):
        raise LoadTestError(f"{where}: 'b64' must be a string of base64, not {type(value).__name__}")
    try:
        return base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError) as error:
        raise LoadTestError(f"{where}: 'b64' is not base64 ({error})") from error


def _array(values: Any, where: str) -> np.ndarray:
    try:
        array = np.asarray(values)
    except (ValueError, OverflowError) as error:
        raise LoadTestError(f"{where}: the values are not rectangular ({error})") from error
    if array.dtype == object:
        raise LoadTestError(
            f"{where}: the values are not rectangular or mix text, numbers and nulls; give equal-sized "
            "lists of numbers or of strings"
        )
    return array


def _column(path: Path, key: str, values: list[tuple[str, Any]]) -> Column:
    """One input's samples: one array when they share a shape and type, else a list of samples."""
    where = f"{path}: the samples of '{key}'" if key != UNNAMED else f"{path}: the samples"
    if not values:
        raise LoadTestError(f"{where} are an empty list; give at least one sample")
    samples = [_sample(value, at) for at, value in values]
    arrays = [s for s in samples if isinstance(s, np.ndarray)]
    if len({a.dtype.kind in "SU" for a in arrays}) > 1:
        raise LoadTestError(f"{where} mix text and numbers; give one kind")
    if len(arrays) == len(samples) and len({a.shape for a in arrays}) == 1:
        return np.stack(arrays)
    return samples
