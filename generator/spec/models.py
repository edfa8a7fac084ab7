"""The YAML spec as typed objects.

A spec names the repository to write, repository-wide ``defaults``, and the ``models``. Each model's
settings are the defaults deep-merged with its own (a model's value replaces a default; mappings merge
key by key; ``false`` switches a feature off). Every validation problem is reported with its field path
(``models[1].inputs[0].dtype``) and what to do about it.

Paths: a model's ``source`` is resolved relative to the spec file's directory (then the working
directory); ``repository`` is relative to the working directory, like any output path.
"""

from __future__ import annotations

import copy
import difflib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic import ValidationError as PydanticValidationError

from generator.core import dtypes
from generator.core.errors import SpecError
from generator.spec import backend_parameters
from generator.spec.huggingface import HF_TASKS, expand, normalized_task
from generator.spec.names import model_problems, shown, spec_problems
from generator.steps import STEP_KINDS

DEFAULT_SPEC = Path("generator.yaml")

# Bounds of the protobuf fields the values end up in (model_config.proto), so that a number the spec
# accepts always renders into a config Triton parses.
INT32_MAX = 2**31 - 1
UINT32_MAX = 2**32 - 1
INT64_MAX = 2**63 - 1
UINT64_MAX = 2**64 - 1
#: The ONNX opsets a spec may ask for: ONNX Runtime reads opset 7 and later; the ONNX Runtime of Triton
#: 2.51 (1.19, in its container) reads up to 21. Whether an exporter can write one is its own check.
MIN_OPSET = 7
MAX_OPSET = 21
#: Longest model name: a directory name with room for the staging suffixes beside it (NAME_MAX is 255).
MAX_NAME_LENGTH = 200
#: Names a model may not take: the repository's own bookkeeping files.
RESERVED_NAMES = frozenset({"tritongen-manifest.json"})


def _no_nul(value: str) -> str:
    if "\0" in value:
        raise ValueError("a path cannot hold a NUL character (\\0), which no file system takes; remove it")
    return value


#: A string naming a file or directory.
PathText = Annotated[str, AfterValidator(_no_nul)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _checked_dims(value: list[int] | None) -> list[int] | None:
    for d in value or []:
        if d == 0 or d < -1 or d > INT64_MAX:
            raise ValueError(f"dimension {d} is invalid; use a positive size or -1 for variable")
    return value


class TensorSpec(_Strict):
    """One input or output as config.pbtxt declares it (dims without the batch axis)."""

    name: str = Field(min_length=1, description="Tensor name, as Triton serves it.")
    source_name: str | None = Field(
        default=None,
        min_length=1,
        description="The tensor's name inside the model when it differs from `name` (an ONNX file, a "
        "SavedModel signature key); the served model file is renamed so Triton sees `name`.",
    )
    dtype: str = Field(description="Triton data type: FP32, INT64, ... (TYPE_FP32 is accepted too).")
    dims: list[int] = Field(description="Shape without the batch axis; -1 for a variable-size dimension.")
    reshape: list[int] | None = Field(
        default=None,
        description="Shape the model itself uses, when it differs from dims (e.g. [] for scalars).",
    )
    optional: bool = Field(default=False, description="Requests may omit this input.")
    label_filename: PathText | None = Field(
        default=None,
        min_length=1,
        description="Outputs: a text file of class labels, one per line (relative to the spec), copied "
        "into the model directory for Triton's classification extension.",
    )

    @field_validator("dtype")
    @classmethod
    def _dtype(cls, value: str) -> str:
        return dtypes.normalize(value)

    @field_validator("dims", "reshape")
    @classmethod
    def _dims(cls, value: list[int] | None) -> list[int] | None:
        return _checked_dims(value)


class QueuePolicy(_Strict):
    """Triton's ``default_queue_policy``: what happens to requests that wait too long."""

    timeout_action: Literal["REJECT", "DELAY"] = "REJECT"
    default_timeout_microseconds: int = Field(default=0, ge=0, le=UINT64_MAX)
    allow_timeout_override: bool = False
    max_queue_size: int = Field(default=0, ge=0, le=INT32_MAX, description="0 means unbounded.")


class DynamicBatching(_Strict):
    """Triton's dynamic batcher: groups requests into batches on the server."""

    preferred_batch_size: list[int] = Field(default_factory=list)
    max_queue_delay_microseconds: int = Field(default=0, ge=0, le=UINT64_MAX)
    preserve_ordering: bool = False
    priority_levels: int = Field(default=0, ge=0, le=UINT64_MAX)
    default_priority_level: int = Field(default=0, ge=0, le=UINT64_MAX)
    default_queue_policy: QueuePolicy | None = None

    @field_validator("preferred_batch_size")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        if any(not 1 <= v <= INT32_MAX for v in value):
            raise ValueError(f"preferred batch sizes must be between 1 and {INT32_MAX}")
        return sorted(set(value))

    @model_validator(mode="after")
    def _priority(self) -> DynamicBatching:
        if self.priority_levels and not 1 <= self.default_priority_level <= self.priority_levels:
            raise ValueError(
                f"default_priority_level must be between 1 and priority_levels ({self.priority_levels})"
            )
        return self


#: The data types Triton takes for a START, END or READY control (``*_false_true``), and for CORRID.
BOOLEAN_CONTROL_TYPES = ("BOOL", "INT32", "FP32")
CORRID_TYPES = ("UINT64", "INT64", "UINT32", "INT32", "STRING")


def _control_dtype(value: Any, allowed: tuple[str, ...], kind: str) -> str:
    dtype = dtypes.normalize(value)
    if dtype not in allowed:
        raise ValueError(f"a {kind} control cannot be {dtype}; use one of {', '.join(allowed)}")
    return dtype


class BooleanControl(_Strict):
    """A START, END or READY control: a tensor the sequence batcher fills with false/true per request."""

    name: str = Field(min_length=1, description="The model input the control is fed to.")
    dtype: str = Field(
        default="INT32",
        description="BOOL, INT32 or FP32 (the values are false/true, 0/1 or 0.0/1.0).",
    )

    @field_validator("dtype", mode="before")
    @classmethod
    def _dtype(cls, value: Any) -> str:
        return _control_dtype(value, BOOLEAN_CONTROL_TYPES, "START, END or READY")


class CorrelationControl(_Strict):
    """The CORRID control: a tensor the sequence batcher fills with each request's correlation ID."""

    name: str = Field(min_length=1, description="The model input the correlation ID is fed to.")
    dtype: str = Field(default="UINT64", description="UINT64, INT64, UINT32, INT32 or STRING.")

    @field_validator("dtype", mode="before")
    @classmethod
    def _dtype(cls, value: Any) -> str:
        return _control_dtype(value, CORRID_TYPES, "CORRID")


def _named(value: Any) -> Any:
    return {"name": value} if isinstance(value, str) else value


class SequenceControls(_Strict):
    """The control tensors the sequence batcher feeds the model (each unset one is not fed).

    A control given as a bare string is a tensor name with the default data type.
    """

    start: BooleanControl | None = Field(default=None, description="True on a sequence's first request.")
    end: BooleanControl | None = Field(default=None, description="True on a sequence's last request.")
    ready: BooleanControl | None = Field(
        default=None, description="True where a batch slot holds a request (false in padding slots)."
    )
    corrid: CorrelationControl | None = Field(default=None, description="The request's correlation ID.")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        return {str(k).lower() if isinstance(k, str) else k: _named(v) for k, v in value.items()}

    @model_validator(mode="after")
    def _distinct(self) -> SequenceControls:
        seen: dict[str, str] = {}
        for kind, control in self.items():
            if control.name in seen:
                raise ValueError(
                    f"{seen[control.name]} and {kind} both name tensor {shown(control.name)}; Triton needs one "
                    "tensor per control: rename one"
                )
            seen[control.name] = kind
        return self

    def items(self) -> list[tuple[str, BooleanControl | CorrelationControl]]:
        """The controls set, as (kind, control) in Triton's order: start, end, ready, corrid."""
        found = [(k, getattr(self, k)) for k in ("start", "end", "ready", "corrid")]
        return [(k, c) for k, c in found if c is not None]


class InitialState(_Strict):
    """Where a state starts: zeros, or a file of its values (``data_file``)."""

    data_file: PathText | None = Field(
        default=None,
        min_length=1,
        description="Relative to the spec: a .npy array, or raw little-endian values of the state's dtype; "
        "copied into the model's initial_state/ directory. Unset: zeros.",
    )
    dims: list[int] | None = Field(
        default=None,
        description="The initial state's shape (needed where the state's dims hold -1); unset: the "
        "state's dims.",
    )

    @field_validator("data_file")
    @classmethod
    def _a_file(cls, value: str | None) -> str | None:
        if value is not None and Path(value).name in ("", ".", ".."):
            raise ValueError(
                f"{shown(value)} names a directory, not a file; give the path of a .npy array or a file of raw "
                "values (relative to the spec)"
            )
        return value

    @field_validator("dims")
    @classmethod
    def _sizes(cls, value: list[int] | None) -> list[int] | None:
        for d in value or []:
            if not 1 <= d <= INT64_MAX:
                raise ValueError(
                    f"dimension {d} is invalid; an initial state has a positive size on every axis"
                )
        return value

    @property
    def file_name(self) -> str | None:
        """The file the values are written to in the model's ``initial_state/`` directory (a .npy array as
        raw values, under the same stem and ``.bin``), or None for zeros."""
        if self.data_file is None:
            return None
        name = Path(self.data_file).name
        return f"{name[:-4]}.bin" if name.endswith(".npy") else name


class SequenceState(_Strict):
    """One implicit state: a model input Triton fills from the model's output of the previous step."""

    input_name: str = Field(min_length=1, description="The model input that receives the state.")
    output_name: str = Field(min_length=1, description="The model output that holds the next state.")
    dtype: str = Field(description="Triton data type of the state (FP32, INT64, ...).")
    dims: list[int] = Field(description="Shape without the batch axis; -1 for a size that may change.")
    initial_state: InitialState = Field(
        default_factory=InitialState,
        description="`zeros` (default), or a mapping with data_file (and dims where dims hold -1).",
    )
    use_same_buffer_for_input_output: bool = False
    use_growable_memory: bool = Field(
        default=False, description="GPU instances only; needs use_same_buffer_for_input_output."
    )

    @field_validator("dtype")
    @classmethod
    def _dtype(cls, value: str) -> str:
        dtype = dtypes.normalize(value)
        if dtype == "STRING":
            raise ValueError("a state cannot be STRING (Triton sizes states in bytes); use a numeric type")
        return dtype

    @field_validator("dims")
    @classmethod
    def _dims(cls, value: list[int]) -> list[int]:
        return _checked_dims(value) or []

    @field_validator("initial_state", mode="before")
    @classmethod
    def _zeros(cls, value: Any) -> Any:
        if value in ("zeros", None):
            return {}
        return value

    @model_validator(mode="after")
    def _consistent(self) -> SequenceState:
        if self.input_name == self.output_name:
            raise ValueError(
                f"input_name and output_name are both {shown(self.input_name)}; the model reads the state from "
                "one tensor and writes the next state to another: name them apart"
            )
        if self.use_growable_memory and not self.use_same_buffer_for_input_output:
            raise ValueError(
                "use_growable_memory needs use_same_buffer_for_input_output: true (Triton refuses every "
                "sequence otherwise); set it"
            )
        given = self.initial_state.dims
        if given is None:
            if -1 in self.dims:
                raise ValueError(
                    f"dims {self.dims} hold -1, so the initial state needs its own size: add initial_state: "
                    "{dims: [...]} with a size on every axis"
                )
            return self
        if len(given) != len(self.dims) or any(
            d not in (-1, g) for d, g in zip(self.dims, given, strict=False)
        ):
            raise ValueError(
                f"initial_state dims {given} do not match the state's dims {self.dims}; fix them"
            )
        return self

    @property
    def initial_dims(self) -> list[int]:
        """The initial state's shape (without the batch axis)."""
        return list(self.initial_state.dims or self.dims)


class SequenceBatching(_Strict):
    """Triton's sequence batcher: requests of one sequence (a correlation ID) go to one model instance in
    order, with START/END/READY/CORRID controls and implicit state kept between them."""

    strategy: Literal["direct", "oldest"] = Field(
        default="direct",
        description="direct: each sequence holds a batch slot until it ends; oldest: the oldest requests "
        "of up to max_candidate_sequences sequences are batched, dynamic-batcher style.",
    )
    max_sequence_idle_microseconds: int = Field(
        default=0,
        ge=0,
        le=UINT64_MAX,
        description="A sequence idle this long loses its slot (its next request needs START again); "
        "0: Triton's 1 second.",
    )
    max_queue_delay_microseconds: int = Field(
        default=0, ge=0, le=UINT64_MAX, description="How long a batch may wait for more requests."
    )
    minimum_slot_utilization: float | None = Field(
        default=None,
        ge=0,
        le=1,
        allow_inf_nan=False,
        description="direct: the share of slots that must hold a request before the delay expires.",
    )
    max_candidate_sequences: int | None = Field(
        default=None, ge=1, le=INT32_MAX, description="oldest: sequences batched from; unset: max_batch_size."
    )
    preferred_batch_size: list[Annotated[int, Field(ge=1, le=INT32_MAX)]] | None = Field(
        default=None, description="oldest: batch sizes to aim for; unset: max_batch_size."
    )
    preserve_ordering: bool | None = Field(
        default=None, description="oldest: responses leave in the order requests came."
    )
    controls: SequenceControls = Field(default_factory=SequenceControls)
    state: list[SequenceState] = Field(
        default_factory=list, description="Implicit states, kept by Triton between a sequence's requests."
    )

    @field_validator("preferred_batch_size")
    @classmethod
    def _sorted(cls, value: list[int] | None) -> list[int] | None:
        return None if value is None else sorted(set(value))

    @model_validator(mode="after")
    def _strategy_fields(self) -> SequenceBatching:
        other = "oldest" if self.strategy == "direct" else "direct"
        only = {
            "direct": ("minimum_slot_utilization",),
            "oldest": ("max_candidate_sequences", "preferred_batch_size", "preserve_ordering"),
        }
        wrong = [f for f in only[other] if getattr(self, f) is not None]
        if wrong:
            raise ValueError(
                f"{', '.join(wrong)} apply to strategy {other}, not {self.strategy}; remove them or set "
                f"strategy: {other}"
            )
        names: dict[str, str] = {c.name: f"controls.{k}" for k, c in self.controls.items()}
        for i, state in enumerate(self.state):
            for field, name in (("input_name", state.input_name), ("output_name", state.output_name)):
                if name in names:
                    raise ValueError(
                        f"state[{i}].{field} {shown(name)} is also {names[name]}; each tensor has one role: rename it"
                    )
                names[name] = f"state[{i}].{field}"
        return self

    @model_validator(mode="after")
    def _initial_files_apart(self) -> SequenceBatching:
        written: dict[str, int] = {}
        for i, state in enumerate(self.state):
            name = state.initial_state.file_name
            if name is None:
                continue
            if name in written:
                first = written[name]
                raise ValueError(
                    f"state[{i}].initial_state.data_file {shown(str(state.initial_state.data_file))} and "
                    f"state[{first}]'s {shown(str(self.state[first].initial_state.data_file))} both become "
                    f"{shown(f'initial_state/{name}')} in the model directory; give the files different names"
                )
            written[name] = i
        return self


class InstanceGroup(_Strict):
    """How many copies of the model run, and where."""

    count: int = Field(
        default=1, ge=1, le=INT32_MAX, description="Instances per GPU (KIND_GPU) or in all (KIND_CPU)."
    )
    kind: Literal["auto", "cpu", "gpu"] | None = Field(
        default=None, description="Leave unset to follow `build --device`; 'auto' lets Triton choose."
    )
    gpus: list[Annotated[int, Field(ge=0, le=INT32_MAX)]] | None = Field(
        default=None, description="GPU ids; overrides `build --gpus`."
    )


class VersionPolicy(_Strict):
    """Which versions Triton serves: the latest N, all, or a list."""

    latest: int | None = Field(default=None, ge=1, le=UINT32_MAX)
    all: bool = False
    specific: list[Annotated[int, Field(ge=1, le=INT64_MAX)]] | None = Field(
        default=None, min_length=1, description="Version numbers (positive)."
    )

    @model_validator(mode="after")
    def _one(self) -> VersionPolicy:
        chosen = sum([self.latest is not None, self.all, self.specific is not None])
        if chosen != 1:
            raise ValueError("give exactly one of latest: N, all: true, specific: [versions]")
        return self


class Warmup(_Strict):
    """A warm-up request Triton sends each instance before it is marked ready."""

    batch_size: int = Field(default=1, ge=1, le=UINT32_MAX)
    data: Literal["random", "zero"] = "random"
    count: int = Field(default=1, ge=1, le=UINT32_MAX)


class Verify(_Strict):
    """Parity check of the exported model against the source framework."""

    enabled: bool = True
    atol: float = Field(default=1e-4, ge=0, allow_inf_nan=False)
    rtol: float = Field(default=1e-3, ge=0, allow_inf_nan=False)
    seed: int = Field(default=0, ge=0, le=UINT32_MAX)
    batch_sizes: list[Annotated[int, Field(ge=1, le=INT32_MAX)]] | None = Field(
        default=None, min_length=1, description="Batch sizes to compare at; default 1 and max_batch_size."
    )
    sequence_steps: int = Field(
        default=8,
        ge=1,
        le=4096,
        description="A stateful model (sequence_batching with state): the steps of the whole-sequence check, "
        "each step's state outputs fed back as the next step's state inputs.",
    )


ParameterValue = str | int | float | bool


class Accelerator(_Strict):
    """An execution accelerator for Triton's ONNX Runtime backend (``optimization.execution_accelerators``)."""

    name: Literal["tensorrt", "cuda", "openvino"] = Field(
        description="tensorrt or cuda (GPU instances), openvino (CPU instances)."
    )
    parameters: dict[str, ParameterValue] = Field(
        default_factory=dict,
        description="e.g. precision_mode: FP16, max_workspace_size_bytes, trt_engine_cache_enable.",
    )

    @model_validator(mode="after")
    def _known(self) -> Accelerator:
        from generator.core.accelerators import problems

        found = problems(self.name, self.parameters)
        if found:
            raise ValueError("; ".join(found))
        return self


class ShapeRange(_Strict):
    """A TensorRT optimization-profile range for one input, without the batch axis."""

    min: list[Annotated[int, Field(le=INT64_MAX)]]
    opt: list[Annotated[int, Field(le=INT64_MAX)]]
    max: list[Annotated[int, Field(le=INT64_MAX)]]

    @model_validator(mode="after")
    def _ordered(self) -> ShapeRange:
        if not len(self.min) == len(self.opt) == len(self.max):
            raise ValueError("min, opt and max must have the same rank")
        if any(not 1 <= a <= b <= c for a, b, c in zip(self.min, self.opt, self.max, strict=True)):
            raise ValueError("need 1 <= min <= opt <= max on every axis")
        return self


class ValueRange(_Strict):
    """The values an integer input may carry, both ends included (token ids: 0 to vocabulary size - 1)."""

    min: int = Field(ge=-(2**63), le=INT64_MAX)
    max: int = Field(ge=-(2**63), le=UINT64_MAX)

    @model_validator(mode="after")
    def _ordered(self) -> ValueRange:
        if self.min > self.max:
            raise ValueError(f"min {self.min} is greater than max {self.max}; swap them")
        return self


class TensorRT(_Strict):
    """How to build a TensorRT plan (``format: tensorrt``)."""

    precision: Literal["fp32", "fp16", "int8"] = "fp32"
    workspace_bytes: int = Field(
        default=1 << 30, ge=1 << 20, le=INT64_MAX, description="Builder workspace limit."
    )
    calibration_data: PathText | None = Field(
        default=None,
        description="INT8: an .npz of real input samples keyed by input name (relative to the spec).",
    )
    calibration_batch_size: int = Field(default=8, ge=1, le=INT32_MAX)
    shapes: dict[str, ShapeRange] | None = Field(
        default=None,
        description="Ranges for inputs with -1 dims (batch axis excluded; it comes from max_batch_size); "
        "the model-level `shapes` entry of an input wins over this one.",
    )

    @model_validator(mode="after")
    def _calibration(self) -> TensorRT:
        if self.precision == "int8" and not self.calibration_data:
            raise ValueError("precision int8 needs calibration_data: an .npz of real input samples")
        return self


class Budget(_Strict):
    """How far an optimized model may drift from the reference (the source framework, else the unoptimized ONNX)."""

    atol: float = Field(
        default=1e-2, ge=0, allow_inf_nan=False, description="Absolute tolerance per output value."
    )
    rtol: float = Field(
        default=1e-2,
        ge=0,
        allow_inf_nan=False,
        description="Relative tolerance: a value passes within atol + rtol * |reference|.",
    )
    min_top1_agreement: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Also require this share of rows whose argmax (last axis) matches the reference's, "
        "for outputs with a class axis; unset: not checked.",
    )


class Optimize(_Strict):
    """Optimization passes on the exported ONNX model, each kept only within the accuracy ``budget``."""

    simplify: bool = Field(default=True, description="Graph simplification with onnxslim (runs first).")
    quantize: Literal["none", "dynamic", "static"] = Field(
        default="none",
        description="INT8 post-training quantization: dynamic (weights; activations at run time) or "
        "static (QDQ, activations calibrated on calibration_data).",
    )
    fp16: bool = Field(
        default=False, description="Convert weights and compute to FP16; the served inputs/outputs stay FP32."
    )
    calibration_data: PathText | None = Field(
        default=None,
        description="An .npz of real input samples keyed by input name, first axis the samples (relative to "
        "the spec file); needed by quantize: static; the gate uses it too when eval_data is unset.",
    )
    eval_data: PathText | None = Field(
        default=None,
        description="An .npz of held-out input samples (as calibration_data) the gate compares on; "
        "unset: calibration_data, else seeded random inputs at the verify batch sizes.",
    )
    per_channel: bool = Field(default=False, description="Quantize weights per output channel.")
    op_types: list[str] | None = Field(
        default=None,
        description="ONNX op types to quantize (e.g. [MatMul, Gemm]); unset: all that ONNX Runtime can.",
    )
    budget: Budget = Field(default_factory=Budget, description="The accuracy gate every pass must pass.")

    @field_validator("quantize", mode="before")
    @classmethod
    def _none(cls, value: Any) -> Any:
        return "none" if value is None or value is False else value

    @model_validator(mode="after")
    def _consistent(self) -> Optimize:
        if self.quantize == "static" and not self.calibration_data:
            raise ValueError(
                "quantize static needs calibration_data: an .npz of real input samples keyed by input name"
            )
        if self.quantize != "none" and self.fp16:
            raise ValueError(f"quantize {self.quantize} and fp16 are alternatives; keep one of them")
        return self

    @property
    def passes(self) -> list[str]:
        """The passes asked for, in the order they run (``simplify``, ``quantize dynamic``, ``fp16``...)."""
        chosen = ["simplify"] if self.simplify else []
        if self.quantize != "none":
            chosen.append(f"quantize {self.quantize}")
        if self.fp16:
            chosen.append("fp16")
        return chosen


class ModelSettings(_Strict):
    """Settings a repository's ``defaults`` may set and each model may override (unset: inherited)."""

    max_batch_size: int | None = Field(
        default=None,
        ge=0,
        le=INT32_MAX,
        description="0 disables batching; unset: 8 if the model has a batch axis, else 0.",
    )
    dynamic_batching: DynamicBatching | Literal[False] | None = Field(
        default=None,
        description="false disables it; unset: on (with Triton's defaults) when batching and no "
        "sequence_batching is set.",
    )
    sequence_batching: SequenceBatching | Literal[False] | None = Field(
        default=None,
        description="Triton's sequence batcher for stateful models (replaces the dynamic batcher, also one "
        "inherited from defaults); false switches off one set in defaults.",
    )
    decoupled: bool | None = Field(
        default=None,
        description="A decoupled model (model_transaction_policy): it may send any number of responses per "
        "request (streaming); a Python model only.",
    )
    instance_group: InstanceGroup | None = None
    version_policy: VersionPolicy | None = None
    parameters: dict[str, ParameterValue] | None = None
    warmup: Warmup | Literal[False] | None = None
    response_cache: bool | None = None
    verify: Verify | None = None
    opset: int | None = Field(
        default=None,
        description=f"ONNX opset for exports ({MIN_OPSET} to {MAX_OPSET}; torch writes 18 and later, tf2onnx up "
        "to 18); unset: the exporter's.",
        json_schema_extra={"minimum": MIN_OPSET, "maximum": MAX_OPSET},
    )
    format: Literal["onnx", "torchscript", "tensorrt"] | None = Field(
        default=None,
        description="What Triton serves: onnx (default), torchscript (torch only), tensorrt (a plan).",
    )
    accelerators: list[Accelerator] | None = Field(
        default=None, description="ONNX Runtime backend execution accelerators (format onnx only)."
    )
    tensorrt: TensorRT | None = None
    optimize: Optimize | Literal[False] | None = Field(
        default=None,
        description="Optimization passes for ONNX models (format onnx), each behind an accuracy budget; "
        "true: simplify only; false or unset: none.",
    )
    shapes: dict[str, ShapeRange] | None = Field(
        default=None,
        description="Per input name: sizes of its -1 axes (one per -1 axis, or one per axis with the fixed "
        "ones as declared; batch axis excluded) at min, opt and max. Parity runs at each, a TensorRT "
        "profile spans them, warm-up uses min and perf_analyzer's data opt. Unset: 1, 16 and 64.",
    )
    values: dict[str, ValueRange] | None = Field(
        default=None,
        description="Per integer input name: the values requests may carry (min and max, inclusive). "
        "Unset: inferred from the model where an input indexes an embedding table, else 0 and 1.",
    )

    @field_validator("opset")
    @classmethod
    def _opset(cls, value: int | None) -> int | None:
        if value is not None and not MIN_OPSET <= value <= MAX_OPSET:
            raise ValueError(
                f"opset {value} is outside {MIN_OPSET} to {MAX_OPSET}: ONNX Runtime reads opset {MIN_OPSET} and "
                f"later, and the ONNX Runtime of Triton 2.51 (1.19) up to {MAX_OPSET}; pick one in that range, "
                "or leave opset unset"
            )
        return value

    @field_validator("dynamic_batching", "sequence_batching", "warmup", "optimize", mode="before")
    @classmethod
    def _switch(cls, value: Any) -> Any:
        return {} if value is True else value


_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")


def _checked_name(value: str) -> str:
    """``value`` if it can name a model directory, else a ValueError saying what a name may hold."""
    if not _SAFE_NAME.fullmatch(value) or value in RESERVED_NAMES:
        raise ValueError(
            f"'{value}' cannot be a model name: it must be one directory name of letters, digits, "
            "'_', '-' and '.', not starting with '.' or '-' (and not tritongen-manifest.json); rename it"
        )
    return value


class HuggingFacePipeline(_Strict):
    """Overrides of the steps a ``framework: huggingface`` entry expands into."""

    preprocess: dict[str, Any] | None = Field(
        default=None,
        description="Settings of the tokenizer or image step, merged over those read from the folder "
        "(max_length, padding, truncation; size, resize, center_crop, mean, std, ...).",
    )
    postprocess: dict[str, Any] | None = Field(
        default=None,
        description="Settings of the post-processing step, merged over those the task and config.json "
        "imply (top_k, activation, labels).",
    )


class ModelSpec(ModelSettings):
    """One model: where it comes from and how Triton serves it."""

    name: str = Field(
        max_length=MAX_NAME_LENGTH,
        description="Model name: the directory in the repository (letters, digits, '_', '-', '.'; "
        "not starting with '.' or '-').",
    )
    framework: Literal["torch", "tensorflow", "onnx", "python", "huggingface"]
    source: PathText = Field(
        min_length=1,
        description="`path/file.py:function` factory, or a model file path; for framework python, a file "
        "defining Triton's TritonPythonModel, or `builtin:tokenizer|image|postprocess|token_labels`; for "
        "framework huggingface, a local model folder (config.json, weights, tokenizer or image processor "
        "files) or a factory returning a transformers PreTrainedModel.",
    )
    task: str | None = Field(
        default=None,
        description="framework huggingface: what the model does, which decides its export, the steps around "
        f"it and what the pipeline returns: {', '.join(HF_TASKS)} (transformers' own aliases too).",
    )
    pipeline: HuggingFacePipeline | Literal[False] | None = Field(
        default=None,
        description="framework huggingface: the entry expands into a pre-processing step read from the "
        "folder, the model and the task's post-processing, served as one ensemble under the entry's name; "
        "false: the model alone. A model named NAME_preprocess / NAME_postprocess in the spec replaces the "
        "derived step.",
    )
    pooling: Literal["mean", "cls", "max", "mean_sqrt_len", "none"] | None = Field(
        default=None,
        description="framework huggingface, feature-extraction: how token embeddings become one sentence "
        "embedding inside the exported graph; unset: sentence-transformers' modules.json where the folder "
        "has one, else none (the model's last_hidden_state).",
    )
    normalize: bool | None = Field(
        default=None,
        description="framework huggingface, feature-extraction: L2-normalise the pooled embedding; unset: as "
        "modules.json says (a Normalize module), else false.",
    )
    step: dict[str, Any] | None = Field(
        default=None,
        description="Settings of a built-in step (source `builtin:KIND`): for tokenizer, `tokenizer` (a "
        "tokenizer.json, or a `file.py:function` returning a tokenizers.Tokenizer), max_length, padding, "
        "truncation, outputs; for image, size, channels, mean, std, layout, backend; for postprocess, "
        "labels or classes, softmax, top_k. The schema's $defs hold every setting.",
    )
    files: list[Annotated[PathText, Field(min_length=1)]] | None = Field(
        default=None,
        description="framework python: more files or directories (relative to the spec) copied beside "
        "model.py in the version directory.",
    )
    version: int = Field(default=1, ge=1, le=INT64_MAX)
    inputs: list[TensorSpec] | None = Field(default=None, description="Unset: read from the exported model.")
    outputs: list[TensorSpec] | None = Field(default=None, description="Unset: read from the exported model.")

    @field_validator("outputs")
    @classmethod
    def _outputs_required(cls, value: list[TensorSpec] | None) -> list[TensorSpec] | None:
        for tensor in value or []:
            if tensor.optional:
                raise ValueError(f"output '{tensor.name}' is marked optional; only inputs can be; remove it")
        return value

    @field_validator("inputs")
    @classmethod
    def _no_input_labels(cls, value: list[TensorSpec] | None) -> list[TensorSpec] | None:
        for tensor in value or []:
            if tensor.label_filename:
                raise ValueError(f"input '{tensor.name}' has a label_filename; only outputs can; remove it")
        return value

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        return _checked_name(value)

    @field_validator("task", mode="before")
    @classmethod
    def _task(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        task = normalized_task(value)
        if task not in HF_TASKS:
            raise ValueError(f"unknown task '{value}'; use one of {', '.join(HF_TASKS)}")
        return task

    @model_validator(mode="after")
    def _huggingface(self) -> ModelSpec:
        hf_only = [f for f in ("task", "pipeline", "pooling", "normalize") if getattr(self, f) is not None]
        if self.framework != "huggingface":
            if hf_only:
                raise ValueError(f"{', '.join(hf_only)} apply to framework huggingface only; remove them")
            return self
        if self.task is None:
            raise ValueError(f"framework huggingface needs a task: {', '.join(HF_TASKS)}")
        if (self.pooling is not None or self.normalize is not None) and self.task != "feature-extraction":
            raise ValueError(f"pooling and normalize apply to task feature-extraction, not {self.task}")
        if self.format == "torchscript":
            raise ValueError(
                "format torchscript needs framework torch; a huggingface model is served as onnx"
            )
        return self

    @model_validator(mode="after")
    def _python(self) -> ModelSpec:
        kind = builtin_step(self.source)
        if self.framework != "python":
            if self.step is not None or self.files is not None:
                raise ValueError("step and files apply to framework python only; remove them")
            return self
        if self.format not in (None, "onnx") or self.accelerators or self.tensorrt:
            raise ValueError("a Python model is served as it is: drop format, accelerators and tensorrt")
        if kind is None:
            if self.step is not None:
                raise ValueError("step settings need a built-in source (builtin:KIND); remove step")
            if not self.source.endswith(".py"):
                raise ValueError(
                    f"source '{self.source}' must be a .py file defining TritonPythonModel, or builtin:KIND"
                )
            if not self.inputs or not self.outputs:
                raise ValueError(
                    "a Python model needs its inputs and outputs declared; add inputs and outputs"
                )
            return self
        if kind not in STEP_KINDS:
            raise ValueError(
                f"'{self.source}' is no built-in step; use builtin:{' or builtin:'.join(STEP_KINDS)}"
            )
        if self.inputs or self.outputs or self.files:
            raise ValueError("a built-in step declares its own inputs, outputs and files; remove them")
        return self

    @model_validator(mode="after")
    def _scheduling(self) -> ModelSpec:
        if self.decoupled and self.target != "python":
            raise ValueError(
                f"decoupled applies to Python models (framework python), which send their responses "
                f"through a response sender; a {self.target} model answers each request once: remove it"
            )
        batcher = self.sequence_batching
        if batcher and batcher.state and self.target == "python":
            raise ValueError(
                "sequence_batching.state: Triton's Python backend cannot write implicit state; keep the state "
                "in model.py (keyed by request.correlation_id()) and remove state"
            )
        if batcher:
            self._check_sequence_names(batcher)
        if batcher and batcher.state and self.target != "onnx":
            raise ValueError(
                f"sequence_batching.state: implicit state is exported and verified for format onnx, not "
                f"{self.target}; serve the model as onnx (unset format)"
            )
        return self

    def _check_sequence_names(self, batcher: SequenceBatching) -> None:
        """The tensors the sequence batcher feeds and keeps are no inputs or outputs of the config."""
        fed = {c.name: f"controls.{k}" for k, c in batcher.controls.items()}
        fed.update({s.input_name: f"state[{i}].input_name" for i, s in enumerate(batcher.state)})
        kept = {s.output_name: f"state[{i}].output_name" for i, s in enumerate(batcher.state)}
        for kind, tensors, names in (("input", self.inputs, fed), ("output", self.outputs, kept)):
            for tensor in tensors or []:
                if tensor.name in names:
                    raise ValueError(
                        f"{kind} {shown(tensor.name)} is also sequence_batching.{names[tensor.name]}: Triton feeds "
                        f"(or keeps) that tensor itself, so it is no {kind} of the config; remove it from {kind}s"
                    )

    @model_validator(mode="after")
    def _format(self) -> ModelSpec:
        if self.format == "torchscript" and self.framework != "torch":
            raise ValueError(f"format torchscript needs framework torch, not {self.framework}")
        if self.accelerators and self.format not in (None, "onnx"):
            raise ValueError("accelerators apply to ONNX Runtime models only; drop them or use format: onnx")
        if self.optimize and self.optimize.passes and self.target != "onnx":
            raise ValueError(
                f"optimize applies to format onnx only, not {self.target}; set optimize: false for this model"
                + (" (tensorrt.precision sets a plan's precision)" if self.target == "tensorrt" else "")
            )
        return self

    @property
    def target(self) -> str:
        """The served format: ``onnx``, ``torchscript``, ``tensorrt`` or ``python``."""
        return "python" if self.framework == "python" else self.format or "onnx"

    @property
    def builtin(self) -> str | None:
        """The built-in step kind (``tokenizer``) of a ``builtin:KIND`` source, else ``None``."""
        return builtin_step(self.source) if self.framework == "python" else None


class EnsembleStep(_Strict):
    """One step of an ensemble: a model and how its tensors wire to the ensemble's."""

    model: str = Field(min_length=1, description="A model of this spec, or one already in the repository.")
    version: int = Field(default=-1, ge=-1, le=INT64_MAX, description="-1: the latest version served.")
    input_map: dict[str, str] = Field(
        min_length=1, description="The step model's input name -> the ensemble tensor it reads."
    )
    output_map: dict[str, str] = Field(
        min_length=1, description="The step model's output name -> the ensemble tensor it writes."
    )

    @field_validator("version")
    @classmethod
    def _not_zero(cls, value: int) -> int:
        if value == 0:
            raise ValueError("version 0 does not exist; use -1 (latest) or a version number")
        return value

    @field_validator("input_map", "output_map")
    @classmethod
    def _names(cls, value: dict[str, str]) -> dict[str, str]:
        for key, tensor in value.items():
            if not key or not tensor:
                raise ValueError("tensor names cannot be empty")
        return value


class EnsembleSpec(_Strict):
    """A pipeline of models Triton runs as one (``platform: "ensemble"``)."""

    name: str = Field(max_length=MAX_NAME_LENGTH, description="Ensemble name (as a model name).")
    version: int = Field(default=1, ge=1, le=INT64_MAX)
    max_batch_size: int | None = Field(
        default=None, ge=0, le=INT32_MAX, description="Unset: the smallest of its steps' max_batch_size."
    )
    inputs: list[TensorSpec] | None = Field(
        default=None, description="Unset: the tensors steps read that no step writes, typed by the steps."
    )
    outputs: list[TensorSpec] | None = Field(
        default=None, description="Unset: the tensors steps write that no step reads."
    )
    steps: list[EnsembleStep] = Field(min_length=1)

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        return _checked_name(value)


class Spec(_Strict):
    """A whole spec file."""

    repository: PathText = Field(
        default="model_repository", min_length=1, description="Output directory (relative to cwd)."
    )
    defaults: ModelSettings = Field(default_factory=ModelSettings)
    models: list[ModelSpec] = Field(min_length=1)
    ensembles: list[EnsembleSpec] = Field(
        default_factory=list, description="Pipelines of the models, served as Triton ensembles."
    )
    #: Directory the spec file lives in; sources resolve against it. Not part of the YAML.
    base_dir: Path = Field(default=Path("."), exclude=True)
    #: What each ``framework: huggingface`` entry expanded into (name -> record). Not part of the YAML.
    huggingface: dict[str, dict[str, Any]] = Field(default_factory=dict, exclude=True)
    #: The field path of a model that came from an expanded entry (``models[1] (minilm_preprocess)``), by
    #: its index in ``models``. Not part of the YAML.
    places: dict[int, str] = Field(default_factory=dict, exclude=True)

    def where(self, index: int) -> str:
        """The field path problems of ``models[index]`` are reported at."""
        return self.places.get(index, f"models[{index}]")

    def resolve_source(self, source: str) -> Path:
        """The file a model's ``source`` names (the part before ``:function``), made absolute.

        A built-in step (``builtin:tokenizer``) is its shipped step file.
        """
        kind = builtin_step(source)
        if kind is not None:
            from generator.core.resources import steps_dir

            return steps_dir() / f"{kind}.py"
        file_part = source.split(":", 1)[0] if _is_factory(source) else source
        candidates = [self.base_dir / file_part, Path.cwd() / file_part]
        for path in candidates:
            try:
                found = path.exists()
            except OSError:  # a name too long for the file system, say
                continue
            if found:
                resolved = path.resolve()
                if not (resolved.is_file() or resolved.is_dir()):
                    raise SpecError(
                        f"source '{source}': {resolved} is not a regular file or directory; "
                        "point source at a model file, a SavedModel directory or a .py factory"
                    )
                return resolved
        tried = " or ".join(str(p) for p in dict.fromkeys(candidates))
        raise SpecError(f"source '{source}': no file at {tried}; fix the path in the spec")


BUILTIN_PREFIX = "builtin:"


def builtin_step(source: str) -> str | None:
    """``tokenizer`` for ``builtin:tokenizer``; ``None`` for any other source."""
    return source.removeprefix(BUILTIN_PREFIX) if source.startswith(BUILTIN_PREFIX) else None


def _is_factory(source: str) -> bool:
    if builtin_step(source) is not None:
        return False
    head, sep, tail = source.rpartition(":")
    return bool(sep) and bool(tail) and tail.isidentifier() and len(head) > 1


def factory_parts(source: str) -> tuple[str, str] | None:
    """``('examples/digits.py', 'build')`` for a factory source, ``None`` for a model file."""
    if not _is_factory(source):
        return None
    head, _, tail = source.rpartition(":")
    return head, tail


def _deep_merge(base: Any, override: Any) -> Any:
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            merged[key] = _deep_merge(base[key], value) if key in base else copy.deepcopy(value)
        return merged
    return copy.deepcopy(override)


class _Located(NamedTuple):
    """A pydantic error with its location split into the user's keys and pydantic's own tags."""

    error: dict[str, Any]
    path: tuple[Any, ...]
    tags: tuple[str, ...]


def _locate(error: dict[str, Any], data: Any) -> _Located:
    """Split an error's location into the keys and indexes of the user's data, and the rest.

    Pydantic also puts union members and validator tags (``literal[False]``, ``Warmup``, ``str``) into
    locations. Walking the data itself tells them apart from keys, whatever the keys look like
    (``Max_batch_size``, ``''``, ``[x]``). A missing field is the one part that is not in the data.
    """
    loc = tuple(error["loc"])
    path: list[Any] = []
    tags: list[str] = []
    current = data
    for position, part in enumerate(loc):
        in_dict = isinstance(current, dict) and part in current
        in_list = isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current)
        if in_dict or in_list:
            path.append(part)
            current = current[part]
        elif error["type"] == "missing" and position == len(loc) - 1:
            path.append(part)
        else:
            tags.append(str(part))
    return _Located(error, tuple(path), tuple(tags))


_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")


def field_path(loc: tuple[Any, ...], prefix: str = "") -> str:
    """A location as the user reads it: ``models[1].inputs[0].dtype``, ``models["a.b"].settings``.

    Args:
        loc: Keys and list indexes, outermost first.
        prefix: A path the location continues (already written this way).
    """
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif not _PLAIN_KEY.fullmatch(str(part)):
            path += f"[{json.dumps(str(part))}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "(top level)"


def _allowed_fields(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The field names valid at ``loc`` (the parent of an unknown key), for 'did you mean'."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int) or current is None:
            continue
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        current = _model_in(field.annotation)
    return list(getattr(current, "model_fields", {})) if current is not None else []


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _shown(value: Any) -> str:
    if isinstance(value, (str, int, float, bool)) and len(str(value)) <= 80:
        return f" (got {json.dumps(value, default=str)})"
    return ""


def _describe(error: dict[str, Any], loc: tuple[Any, ...], root: type[BaseModel], prefix: str) -> str:
    path = field_path(loc, prefix)
    kind = error["type"]
    if kind == "extra_forbidden":
        key = str(loc[-1]) if loc else ""
        allowed = [f for f in _allowed_fields(root, loc) if f != "base_dir"]
        close = difflib.get_close_matches(key, allowed, n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"allowed: {', '.join(allowed)}"
        return f"{path}: unknown field; {hint}"
    if kind == "missing":
        return f"{path}: required field is missing; add it"
    message = str(error["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    for pydantic_words, ours in _BOUNDS.items():
        message = message.replace(pydantic_words, ours)
    return f"{path}: {message}{_shown(error.get('input'))}"


_BOUNDS = {
    "Input should be less than or equal to": "must be at most",
    "Input should be greater than or equal to": "must be at least",
    "Input should be greater than": "must be greater than",
}


_ALTERNATIVES = {"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false"}


def _alternatives(errors: list[_Located]) -> str:
    """What the members of a union accept, from the tags pydantic put into the error locations."""
    names: list[str] = []
    for located in errors:
        member = located.tags[-1] if located.tags else ""
        if member.startswith("literal["):
            name = member.removeprefix("literal[").removesuffix("]").replace("False", "false")
        elif member in _ALTERNATIVES:
            name = _ALTERNATIVES[member]
        elif re.search(r"\b[A-Z]\w*\]?$", member):  # a model class, maybe inside a validator tag
            name = "a mapping of settings"
        else:
            name = member or "another value"
        if name not in names:
            names.append(name)
    if set(names) == {"a mapping of settings", "false"}:  # a section `true`/`false` switches on or off
        return "a mapping of settings, or true/false to switch it on/off"
    return ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else "".join(names)


def _is_kind_mismatch(kind: str) -> bool:
    """Errors that say only "this union member takes another kind of value"."""
    return kind.endswith(("_type", "_parsing")) or kind in ("literal_error", "is_instance_of")


def validation_problems(
    exc: PydanticValidationError, root: type[BaseModel], data: Any, prefix: str = ""
) -> list[str]:
    """One line per problem of a failed validation of ``data`` as ``root``: its field path and the fix.

    Args:
        exc: The validation error.
        root: The model ``data`` was validated as.
        data: The plain data validated.
        prefix: The path of ``data`` itself (``models[1]``), for the lines' paths.
    """
    grouped: dict[tuple[Any, ...], list[_Located]] = {}
    for error in exc.errors():
        located = _locate(error, data)
        grouped.setdefault(located.path, []).append(located)
    # A mapping member of a union failed deeper down: the other members' "not this kind" errors at
    # the union itself (``should be False``) are noise beside the real problem.
    for path in list(grouped):
        deeper = any(len(other) > len(path) and other[: len(path)] == path for other in grouped)
        if deeper:
            kept = [located for located in grouped[path] if not located.tags]
            if kept:
                grouped[path] = kept
            else:
                del grouped[path]
    lines: list[str] = []
    for path, errors in grouped.items():
        # One value that fails every member of a union (a mapping or false, a string or a number):
        # one line saying what is accepted, not one per member.
        is_union = len(errors) > 1 and all(located.tags for located in errors)
        if is_union and all(_is_kind_mismatch(located.error["type"]) for located in errors):
            value = errors[0].error.get("input")
            lines.append(f"{field_path(path, prefix)}: must be {_alternatives(errors)}{_shown(value)}")
            continue
        for located in errors:
            if is_union and _is_kind_mismatch(located.error["type"]):
                continue
            line = _describe(located.error, path, root, prefix)
            if line not in lines:
                lines.append(line)
    return lines


def _duplicate_names(models: list[Any]) -> list[str]:
    seen: dict[str, int] = {}
    problems = []
    for index, model in enumerate(models):
        if not isinstance(model, dict):
            continue
        name, version = model.get("name"), model.get("version", 1)
        key = json.dumps([name, version], default=str)  # any YAML value, hashable
        if key in seen:
            problems.append(
                f"models[{index}].name: model '{name}' version {version} appears twice (also "
                f"models[{seen[key]}]); give each a different version or name"
            )
        seen.setdefault(key, index)
    return problems


class Overlay(NamedTuple):
    """Settings from another file merged over named models, after the defaults (tuned settings).

    Attributes:
        settings: Model name -> settings, deep-merged over every spec entry of that name.
        origin: The file they come from; its problems are reported as
            ``ORIGIN: models.NAME.settings.KEY: ...``.
        hint: Appended to each of those lines: how to fix or skip the file.
    """

    settings: Mapping[str, Mapping[str, Any]]
    origin: str
    hint: str = ""


def parse_spec(
    data: Any, base_dir: Path = Path("."), origin: str = "spec", overlay: Overlay | None = None
) -> Spec:
    """Validate a spec given as plain data (what ``yaml.safe_load`` returns).

    Args:
        data: The spec.
        base_dir: Directory sources resolve against.
        origin: The spec's name in error lines.
        overlay: Settings merged over named models after the defaults, before validation.

    Raises:
        SpecError: with one line per problem, each naming the field path.
    """
    try:
        return _parse(data, base_dir, origin, overlay)
    except RecursionError:
        raise SpecError(
            f"{origin}: the spec is nested too deeply to read; a spec needs only a few levels"
        ) from None


def _merged_model(
    where: str, raw: Any, defaults: dict[str, Any], origin: str, overlay: Overlay | None
) -> tuple[Any, list[str]]:
    """One model's entry with the defaults, then the overlay's settings merged in; its problems.

    The entry is validated without the overlay first, so that a problem the overlay brings is
    reported against the overlay's file and one the spec has against the spec.
    """
    if not isinstance(raw, dict):
        return raw, [f"{origin}: {where}: must be a mapping with name, framework and source"]
    merged = _deep_merge(defaults, raw)
    try:
        model = ModelSpec.model_validate(merged)
    except PydanticValidationError as exc:
        return merged, [f"{origin}: {p}" for p in validation_problems(exc, ModelSpec, merged, where)]
    named = model_problems(model, where)
    named += _parameter_problems(model, raw, where, inherited="defaults")
    named += _scheduler_problems(model, raw, where)
    if named:
        return merged, [f"{origin}: {p}" for p in named]
    settings = overlay.settings.get(merged["name"]) if overlay else None
    if not overlay or not settings:
        return merged, []
    merged = _deep_merge(merged, dict(settings))
    where = field_path(("models", merged["name"], "settings"))
    try:
        model = ModelSpec.model_validate(merged)
    except PydanticValidationError as exc:
        lines = validation_problems(exc, ModelSpec, merged, where)
        return merged, [f"{overlay.origin}: {line}{overlay.hint}" for line in lines]
    lines = _parameter_problems(model, settings, where) + _scheduler_problems(model, settings, where)
    return merged, [f"{overlay.origin}: {line}{overlay.hint}" for line in lines]


def _scheduler_problems(model: ModelSpec, entry: Mapping[str, Any], where: str) -> list[str]:
    """A dynamic batcher that ``entry`` itself sets on a model with a sequence batcher: Triton runs one
    scheduler per model. One inherited from ``defaults`` is dropped instead (the sequence batcher wins)."""
    own = entry.get("dynamic_batching")
    if not model.sequence_batching or own in (None, False):
        return []
    return [
        f"{field_path(('dynamic_batching',), where)}: dynamic_batching and sequence_batching are alternatives "
        "(Triton runs one scheduler per model); remove dynamic_batching, or set sequence_batching: false"
    ]


def _parameter_problems(
    model: ModelSpec, entry: Mapping[str, Any], where: str, inherited: str | None = None
) -> list[str]:
    """Parameters a backend knows whose value it refuses or misreads, for a model served by a backend
    (a Python model reads its parameters itself); each at the path of the entry that set it.

    Args:
        model: The validated model.
        entry: The settings it was validated from, of which only the ``parameters`` set there count.
        where: The path of ``entry``.
        inherited: The path of settings it inherits the other parameters from (``defaults``); None:
            those are not reported.
    """
    if model.target == "python":
        return []
    own = entry.get("parameters")
    own = own if isinstance(own, dict) else {}
    lines = []
    for key, value in (model.parameters or {}).items():
        reason = backend_parameters.problem(key, backend_parameters.config_text(value))
        path = where if key in own else inherited
        if reason is not None and path is not None:
            lines.append(f"{field_path(('parameters', key), path)}: {reason}")
    return lines


def _parse(data: Any, base_dir: Path, origin: str, overlay: Overlay | None) -> Spec:
    if not isinstance(data, dict):
        raise SpecError(
            f"{origin}: (top level): must be a mapping with 'models:'; see `python -m generator schema`"
        )
    data, expansions, places = expand(data, base_dir, origin)
    problems: list[str] = []
    raw_defaults = data.get("defaults") or {}
    try:
        settings = ModelSettings.model_validate(raw_defaults)
    except PydanticValidationError as exc:
        problems += [
            f"{origin}: {p}" for p in validation_problems(exc, ModelSettings, raw_defaults, "defaults")
        ]
        raw_defaults = {}  # reported once, under defaults, not again under every model
    else:
        if settings.sequence_batching and settings.dynamic_batching:
            problems.append(
                f"{origin}: defaults.dynamic_batching: dynamic_batching and sequence_batching are alternatives "
                "(Triton runs one scheduler per model); keep one in defaults"
            )
            raw_defaults = {}
    raw_models = data.get("models")
    merged_models: list[Any] = []
    if isinstance(raw_models, list):
        for index, raw in enumerate(raw_models):
            where = places.get(index, f"models[{index}]")
            merged, found = _merged_model(where, raw, raw_defaults, origin, overlay)
            if isinstance(merged, dict):
                merged_models.append(merged)
            problems += found
        problems += [f"{origin}: {p}" for p in _duplicate_names(raw_models)]
    if problems:
        raise SpecError(*dict.fromkeys(problems))  # an overlay's problem once, not once per version
    top = {k: v for k, v in data.items() if k != "models"}
    top["models"] = merged_models if isinstance(raw_models, list) else raw_models
    try:
        spec = Spec.model_validate(
            {
                **top,
                "base_dir": base_dir,
                "huggingface": {e.name: e.record() for e in expansions},
                "places": {i: w for i, w in places.items() if w != f"models[{i}]"},
            }
        )
    except PydanticValidationError as exc:
        raise SpecError(*(f"{origin}: {p}" for p in validation_problems(exc, Spec, top))) from None
    named = spec_problems(spec)
    if named:
        raise SpecError(*(f"{origin}: {p}" for p in named))
    return spec


def bundled_example() -> Path:
    """The example spec shipped with tritongen (used when no spec is given and none is here)."""
    from generator.core.resources import examples_dir

    return examples_dir() / "generator.yaml"


def default_spec_path() -> Path:
    """``generator.yaml`` in the working directory if there is one, else the bundled example."""
    return DEFAULT_SPEC if DEFAULT_SPEC.exists() else bundled_example()


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses a key given twice in one mapping (YAML forbids it; PyYAML
    would keep the last silently, even for a whole ``models:`` list)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: the base class reports it
                continue
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key {json.dumps(key, default=str)} appears twice in one mapping "
                    f"(first on line {first.line + 1}); keep one of them",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


#: A spec is a few kilobytes; anything far larger is not a spec (and would be slow to read).
MAX_SPEC_BYTES = 16 * 1024 * 1024


def read_yaml(path: Path, what: str = "spec") -> Any:
    """Read a YAML file as plain data, refusing a key given twice in one mapping.

    Args:
        path: The file.
        what: What the file is, for the error lines (``spec``, ``tuned settings file``).

    Raises:
        SpecError: the file is missing, unreadable, too large, not UTF-8 or not YAML.
    """
    try:
        if not path.is_file():
            raise SpecError(f"{what} file '{path}' not found; pass the path of a YAML {what} file")
        if path.stat().st_size > MAX_SPEC_BYTES:
            raise SpecError(
                f"{path}: larger than {MAX_SPEC_BYTES >> 20} MiB, not a {what}; pass a YAML {what}"
            )
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"cannot read the {what} file '{path}': {exc.strerror}; check the path") from None
    except UnicodeDecodeError:
        raise SpecError(f"{path}: not a UTF-8 text file; pass a YAML {what}") from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(
            f"{where}: YAML does not parse ({problem}); fix the indentation, quoting or keys there"
        ) from None
    except RecursionError:
        raise SpecError(f"{path}: nested too deeply to read; a {what} needs only a few levels") from None


def load_spec(path: str | Path | None = None, overlay: Overlay | None = None) -> Spec:
    """Read and validate a spec file (default: :func:`default_spec_path`).

    Args:
        path: The spec file.
        overlay: Settings merged over named models after the defaults (see :func:`parse_spec`).

    Raises:
        SpecError: the file is missing, is not YAML, or does not validate.
    """
    spec_path = Path(path) if path is not None else default_spec_path()
    data = read_yaml(spec_path)
    return parse_spec(data, base_dir=spec_path.resolve().parent, origin=str(spec_path), overlay=overlay)


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the spec file, for editors (``python -m generator schema``)."""
    schema = Spec.model_json_schema()
    schema.setdefault("properties", {}).pop("base_dir", None)
    schema["properties"].pop("huggingface", None)
    schema["properties"].pop("places", None)
    defs = schema.setdefault("$defs", {})
    for kind, settings in STEP_KINDS.items():  # what `step:` takes, per `source: builtin:KIND`
        step_schema = settings.model_json_schema()
        defs.update(step_schema.pop("$defs", {}))
        defs[f"{kind.capitalize()}StepSettings"] = step_schema
    schema["title"] = "tritongen spec"
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema
