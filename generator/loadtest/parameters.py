"""Request parameters: ``--param NAME=VALUE``, Triton's sequence parameters, and their bytes on the wire.

``--param NAME=VALUE`` (repeatable) sets a value for every request of the test. Where a model declares an
input of that name (a generation setting such as ``max_tokens`` is often one), the value fills that
input; otherwise it travels as a request parameter (a decoupled Python model reads them with
``request.parameters()``). A value is a boolean (``true``/``false``), an integer, a number, or else text.
Triton's own parameters (``sequence_id``, ``priority``, ``triton_...``) are the harness's to set.

Parameters ride on requests that are prebuilt once (:mod:`~generator.loadtest.clients`): over HTTP as
members of the JSON header's ``parameters`` (:func:`http_members`), over gRPC as entries of
``ModelInferRequest.parameters`` serialized on their own (:func:`grpc_parameters`), which protobuf merges
when they follow the request's other fields. A sequence's parameters are made once per sequence and
flag combination (:func:`sequence_parameters`), so a request costs a concatenation.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from generator.core.errors import LoadTestError

__all__ = [
    "ENABLE_EMPTY_FINAL",
    "FINAL_RESPONSE",
    "ParamValue",
    "grpc_parameters",
    "http_members",
    "input_value",
    "parse_params",
    "sequence_parameters",
]

ParamValue = bool | int | float | str
"""A request parameter's value (Triton's bool, int64, double or string parameter)."""

ENABLE_EMPTY_FINAL = "triton_enable_empty_final_response"
"""The parameter that asks Triton to send a decoupled model's last, empty response (it carries the final flag)."""

FINAL_RESPONSE = "triton_final_response"
"""The parameter of each streamed response that says whether it is the request's last."""


def _value(text: str) -> ParamValue:
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            number = kind(text)
        except ValueError:
            continue
        if isinstance(number, float) and not math.isfinite(number):
            break
        return number
    return text


def parse_params(values: Iterable[str] | None) -> dict[str, ParamValue]:
    """Parse ``--param NAME=VALUE`` values.

    Raises:
        LoadTestError: A value without ``=`` or a name, a name given twice, or one of Triton's own parameters.
    """
    from tritonclient.utils import TRITON_RESERVED_REQUEST_PARAMS, TRITON_RESERVED_REQUEST_PARAMS_PREFIX

    params: dict[str, ParamValue] = {}
    for value in values or ():
        name, sep, text = str(value).partition("=")
        name = name.strip()
        if not sep or not name:
            raise LoadTestError(f"--param '{value}': write NAME=VALUE, e.g. --param max_tokens=16")
        if name in params:
            raise LoadTestError(f"--param gives '{name}' twice; give each parameter once")
        if name in TRITON_RESERVED_REQUEST_PARAMS or name.startswith(TRITON_RESERVED_REQUEST_PARAMS_PREFIX):
            raise LoadTestError(
                f"--param {name}: '{name}' is one of Triton's own request parameters, which the harness sets "
                "(sequence parameters come from --sequence-length and --sequence-id-range); pick another name"
            )
        params[name] = _value(text)
    return params


def input_value(
    name: str, value: ParamValue, datatype: str, dtype: Any, shape: tuple[int, ...]
) -> np.ndarray:
    """A ``--param`` value as the input of that name: ``shape`` filled with it, in the input's dtype.

    Raises:
        LoadTestError: The value does not convert to the input's datatype.
    """
    if datatype == "BYTES":
        array = np.empty(shape, dtype=np.object_)
        array[...] = (
            str(value).encode("utf-8") if not isinstance(value, bool) else str(value).lower().encode()
        )
        return array
    try:
        return np.full(shape, value, dtype=dtype)
    except (TypeError, ValueError, OverflowError) as error:
        raise LoadTestError(
            f"--param {name}={value}: the model's input '{name}' is {datatype}, which {value!r} is not ({error})"
        ) from None


def http_members(values: Mapping[str, ParamValue]) -> str:
    """Parameters as JSON object members without the braces (``"a":1,"b":true``), for an HTTP request header."""
    return ",".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in values.items())


def grpc_parameters(values: Mapping[str, ParamValue]) -> bytes:
    """Parameters as serialized ``ModelInferRequest.parameters`` entries (appended to a serialized request)."""
    from tritonclient.grpc import service_pb2

    request = service_pb2.ModelInferRequest()
    for key, value in values.items():
        entry = request.parameters[key]
        if isinstance(value, bool):
            entry.bool_param = value
        elif isinstance(value, int):
            entry.int64_param = value
        elif isinstance(value, float):
            entry.double_param = value
        else:
            entry.string_param = str(value)
    return request.SerializeToString()


def sequence_parameters(sequence_id: int | str, start: bool, end: bool) -> dict[str, ParamValue]:
    """Triton's sequence parameters of one request."""
    return {"sequence_id": sequence_id, "sequence_start": start, "sequence_end": end}
