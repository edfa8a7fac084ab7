"""Data types: Triton ``TYPE_*`` names, KServe datatypes, numpy, ONNX and torch dtypes.

Triton names a type ``TYPE_FP32`` in config.pbtxt and ``FP32`` on the wire (KServe protocol); this
module maps both to numpy and ONNX. Framework dtypes (torch) are resolved by name so this module
imports no framework.
"""

from __future__ import annotations

import json

import numpy as np

#: Triton data types (without the ``TYPE_`` prefix) in the order Triton documents them.
TRITON_DTYPES: tuple[str, ...] = (
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
    "STRING",
    "BF16",
)

_NUMPY: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "STRING": np.dtype(np.object_),
}

# onnx.TensorProto.DataType values, spelled out so this module does not import onnx.
_ONNX: dict[str, int] = {
    "FP32": 1,
    "UINT8": 2,
    "INT8": 3,
    "UINT16": 4,
    "INT16": 5,
    "INT32": 6,
    "INT64": 7,
    "STRING": 8,
    "BOOL": 9,
    "FP16": 10,
    "FP64": 11,
    "UINT32": 12,
    "UINT64": 13,
    "BF16": 16,
}
_ONNX_TO_TRITON = {code: name for name, code in _ONNX.items()}

_TORCH: dict[str, str] = {
    "bool": "BOOL",
    "uint8": "UINT8",
    "uint16": "UINT16",
    "uint32": "UINT32",
    "uint64": "UINT64",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "float16": "FP16",
    "float32": "FP32",
    "float64": "FP64",
    "bfloat16": "BF16",
}


#: Wire (KServe) datatype names that differ from the config's: text travels as BYTES, TYPE_STRING in configs.
_WIRE_ALIASES = {"BYTES": "STRING"}


def normalize(name: str) -> str:
    """Return the canonical Triton dtype (``FP32``) for ``FP32``, ``TYPE_FP32`` or ``fp32``.

    Text is ``STRING`` (config.pbtxt's ``TYPE_STRING``); its wire name ``BYTES`` is accepted too.

    Raises:
        ValueError: ``name`` is not a Triton data type; the message lists the valid ones.
    """
    key = str(name).strip().upper()
    key = key.removeprefix("TYPE_")
    key = _WIRE_ALIASES.get(key, key)
    if key not in TRITON_DTYPES:
        shown = f"'{name}'" if str(name).isprintable() else json.dumps(str(name))
        raise ValueError(
            f"{shown} is not a Triton data type; use one of {', '.join(TRITON_DTYPES)} (or BYTES for STRING)"
        )
    return key


def config_name(dtype: str) -> str:
    """``FP32`` -> ``TYPE_FP32``, as config.pbtxt spells it."""
    return f"TYPE_{normalize(dtype)}"


def to_numpy(dtype: str) -> np.dtype:
    """The numpy dtype for a Triton dtype (BF16 has none in numpy)."""
    key = normalize(dtype)
    if key not in _NUMPY:
        raise ValueError(f"Triton dtype {key} has no numpy equivalent")
    return _NUMPY[key]


def from_numpy(dtype: np.dtype | type) -> str:
    """The Triton dtype for a numpy dtype (object and unicode/bytes map to STRING)."""
    dt = np.dtype(dtype)
    if dt.kind in ("O", "U", "S"):
        return "STRING"
    for name, candidate in _NUMPY.items():
        if candidate == dt:
            return name
    raise ValueError(f"numpy dtype {dt} has no Triton equivalent")


def from_onnx(elem_type: int) -> str:
    """The Triton dtype for an ``onnx.TensorProto`` element type code."""
    if elem_type not in _ONNX_TO_TRITON:
        raise ValueError(f"ONNX element type {elem_type} has no Triton equivalent")
    return _ONNX_TO_TRITON[elem_type]


def to_onnx(dtype: str) -> int:
    """The ``onnx.TensorProto`` element type code for a Triton dtype."""
    return _ONNX[normalize(dtype)]


def from_torch(dtype: object) -> str:
    """The Triton dtype for a ``torch.dtype`` (resolved by name: ``torch.float32`` -> FP32)."""
    name = str(dtype).removeprefix("torch.")
    if name not in _TORCH:
        raise ValueError(f"torch dtype {dtype} has no Triton equivalent")
    return _TORCH[name]


def to_torch_name(dtype: str) -> str:
    """The torch dtype attribute name for a Triton dtype (``FP32`` -> ``float32``)."""
    key = normalize(dtype)
    for torch_name, triton in _TORCH.items():
        if triton == key:
            return torch_name
    raise ValueError(f"Triton dtype {key} has no torch equivalent")
