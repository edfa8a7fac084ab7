"""Real samples from a ``--data`` file, read into columns of samples keyed by input name.

Accepted files (keys are ``input`` or ``model/input``, for a file shared by several models):

* ``.npz``: one array per key, its first axis the samples: numbers, or text as numpy ``S`` (bytes) or ``U``
  (str) arrays. It is read without pickles, so arrays of Python objects are refused.
* ``.json``: ``{"input": [sample, ...]}``; perf_analyzer's ``--input-data`` format
  ``{"data": [{"input": sample}, ...]}``, where a sample is its values, ``{"content": [...], "shape":
  [...]}`` or ``{"b64": "<base64 of the raw little-endian bytes>", "shape": [...]}`` (how perf_analyzer
  and ``build`` write FP16/BF16); or a plain list of samples (usually strings), for a model with one input.
* ``.txt``: one string per line (its bytes as they are, without the line end; empty lines are skipped),
  for a model with one STRING input.

Samples of one input may differ in shape (a variable-length input): such a column is a list of arrays,
one per sample, instead of one array. Which dtype and shape the model wants is checked later, by
:func:`~generator.loadtest.payloads.make_batches`, which knows the model.
"""

from __future__ import annotations

import base64
import binascii
import json
from pathlib import Path
from typing import Any

import numpy as np

from generator.core.errors import LoadTestError

__all__ = ["UNNAMED", "Column", "Samples", "load_payload_samples"]

Column = np.ndarray | list[np.ndarray]
"""The samples of one input: one array (first axis the samples), or a list of arrays of different shapes."""

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
    columns: dict[str, list[Any]] = {}
    if isinstance(document, list):
        columns[UNNAMED] = document
    elif isinstance(document, dict) and isinstance(document.get("data"), list):
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
            f'data file {path} must be {{"input": [sample, ...]}}, {{"data": [{{"input": sample}}, ...]}} '
            "or a list of samples"
        )
    return {key: _column(path, key, values) for key, values in columns.items()}


def _with_shape(value: dict[str, Any], where: str) -> np.ndarray:
    """perf_analyzer's ``{"content": [...], "shape": [...]}`` (or ``{"b64": ...}``) as an array of that shape."""
    if "content" not in value and "b64" in value:
        return _raw_bytes(value, where)
    if "content" not in value:
        raise LoadTestError(f"{where}: an object value needs 'content' or 'b64' (and optionally 'shape')")
    content = _array(value["content"], where)
    if "shape" not in value:
        return content
    try:
        return content.reshape([int(d) for d in value["shape"]])
    except (TypeError, ValueError) as error:
        raise LoadTestError(
            f"{where}: 'content' of {content.size} values does not fill 'shape' {value['shape']}"
        ) from error


def _raw_bytes(value: dict[str, Any], where: str) -> np.ndarray:
    """perf_analyzer's ``{"b64": ..., "shape": [...]}``: the tensor's raw little-endian bytes, as opaque
    elements (numpy void) of the size the shape implies; the input's dtype gives them their meaning later.
    Without a shape, each byte is an element until then."""
    try:
        raw = base64.b64decode(str(value["b64"]), validate=True)
    except (binascii.Error, ValueError) as error:
        raise LoadTestError(f"{where}: 'b64' is not base64 ({error})") from error
    shape = value.get("shape")
    if shape is None:
        return np.frombuffer(raw, dtype="V1")
    try:
        dims = [int(d) for d in shape]
    except (TypeError, ValueError) as error:
        raise LoadTestError(f"{where}: 'shape' {shape} is not a list of sizes") from error
    count = int(np.prod(dims, dtype=np.int64))
    if count <= 0 or not raw or len(raw) % count:
        raise LoadTestError(f"{where}: 'b64' holds {len(raw)} bytes, which 'shape' {shape} does not divide")
    return np.frombuffer(raw, dtype=f"V{len(raw) // count}").reshape(dims)


def _array(values: Any, where: str) -> np.ndarray:
    try:
        array = np.asarray(values)
    except ValueError as error:
        raise LoadTestError(f"{where}: the values are not rectangular ({error})") from error
    if array.dtype == object:
        raise LoadTestError(
            f"{where}: the values are not rectangular or mix text, numbers and nulls; give equal-sized "
            "lists of numbers or of strings"
        )
    return array


def _column(path: Path, key: str, values: list[Any]) -> Column:
    """One input's samples: one array when they share a shape and type, else one array per sample."""
    where = f"{path}: the samples of '{key}'" if key != UNNAMED else f"{path}: the samples"
    if not values:
        raise LoadTestError(f"{where} are an empty list; give at least one sample")
    samples = [_array(value, where) for value in values]
    if len({s.dtype.kind in "SU" for s in samples}) > 1:
        raise LoadTestError(f"{where} mix text and numbers; give one kind")
    if len({s.shape for s in samples}) == 1:
        return np.stack(samples)
    return samples
