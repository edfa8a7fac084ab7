"""The Triton that will serve a repository: the config schema its version reads, and what it can load.

Triton reads ``config.pbtxt`` with the ``model_config.proto`` it was built with, and its text parser
refuses a field or an enum value that schema lacks: the model is not loaded ("failed to read text
proto"). This project parses configs with tritonclient's newer schema, so a config may parse here and
still be refused by the server. :data:`ADDED` records what ``model_config.proto`` gained after Triton
2.18 (release 22.01) and in which Triton version, taken from the proto's history in Triton's ``common``
repository (release branch ``rYY.MM`` ships Triton ``2.N``); :func:`check_schema` parses a config with
the schema of the version that will serve it (tritonclient's schema less what came later) and names
each field or value that version cannot read.

:class:`Server` says which Triton validate judges for: the embedded one on this machine (its version,
its backend directory and this machine's GPUs are known), or another one a user names by version
(``validate --triton-version``), whose machine is unknown unless its GPUs are named too.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from functools import cache, total_ordering

from google.protobuf import descriptor_pb2, descriptor_pool, message, message_factory, text_format
from google.protobuf.descriptor import FieldDescriptor
from tritonclient.grpc import model_config_pb2

from generator.core.errors import ValidationError
from generator.core.gpus import NvmlUnavailable, detect_gpus
from generator.core.triton import STAND_IN_BACKENDS


@total_ordering
@dataclass(frozen=True)
class TritonVersion:
    """A Triton server version, major and minor (``2.51``)."""

    major: int
    minor: int

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"

    def __lt__(self, other: TritonVersion) -> bool:
        return (self.major, self.minor) < (other.major, other.minor)

    @classmethod
    def parse(cls, text: str) -> TritonVersion:
        """``2.51`` or ``2.51.0`` (a Triton version), or ``24.10`` (the release of its NGC container).

        Raises:
            ValidationError: not a version, or one older than validate knows the schema of.
        """
        found = re.fullmatch(r"\s*(\d+)\.(\d+)(?:\.\d+)?(?:-py3)?\s*", text)
        if found is None:
            raise ValidationError(
                f"'{text}' is not a Triton version; write it as 2.51 (or name the container release, 24.10)"
            )
        major, minor = int(found[1]), int(found[2])
        version = cls(major, minor) if major == 2 else _from_release(major, minor, text)
        if version < OLDEST:
            raise ValidationError(
                f"Triton {version} is older than the oldest version validate knows the schema of ({OLDEST}); "
                f"name {OLDEST} or later"
            )
        return version


def _from_release(year: int, month: int, text: str) -> TritonVersion:
    """The Triton version of an NGC container release: 22.01 ships 2.18, one minor version a month.

    25.07 shipped 2.59.1, so from 25.07 on the minor version is one behind the month count.
    """
    if not (22 <= year <= 99 and 1 <= month <= 12):
        raise ValidationError(
            f"'{text}' is neither a Triton version (2.51) nor a container release from 22.01 on (24.10); "
            "name one of them"
        )
    months = (year - 22) * 12 + month - 1
    return TritonVersion(2, 18 + months - (1 if (year, month) >= (25, 7) else 0))


#: The oldest Triton whose config schema validate knows (release 22.01).
OLDEST = TritonVersion(2, 18)

#: The Triton the embedded server runs when its wheel's version is not one listed below.
EMBEDDED_DEFAULT = TritonVersion(2, 51)

#: nvidia-pytriton release -> the Triton version its wheel embeds (pytriton's changelog).
_PYTRITON_TRITON = {
    "0.5.10": TritonVersion(2, 49),
    "0.5.11": TritonVersion(2, 50),
    "0.5.12": TritonVersion(2, 51),
    "0.5.13": TritonVersion(2, 51),
    "0.5.14": TritonVersion(2, 51),
    "0.6.0": TritonVersion(2, 51),
    "0.7.0": TritonVersion(2, 51),
}


def embedded_version() -> TritonVersion:
    """The Triton version of the embedded server, read from the installed wheel that carries it."""
    try:
        wheel = importlib.metadata.version("nvidia-pytriton")
    except importlib.metadata.PackageNotFoundError:
        return EMBEDDED_DEFAULT
    return _PYTRITON_TRITON.get(wheel, EMBEDDED_DEFAULT)


@dataclass(frozen=True)
class Added:
    """Something ``model_config.proto`` gained, and the Triton version that first reads it.

    Attributes:
        where: Where it goes in a config, as a user writes it (``sequence_batching.state.use_growable_memory``).
        since: The first Triton version that reads it.
    """

    where: str
    since: TritonVersion


def _v(minor: int) -> TritonVersion:
    return TritonVersion(2, minor)


#: (message, field) -> when Triton added that field (releases 22.01 to 26.07 of model_config.proto).
ADDED_FIELDS: dict[tuple[str, str], Added] = {
    ("inference.ModelWarmup", "count"): Added("model_warmup.count", _v(24)),
    ("inference.ModelEnsembling.Step", "model_namespace"): Added(
        "ensemble_scheduling.step.model_namespace", _v(32)
    ),
    ("inference.ModelSequenceBatching.StrategyOldest", "preserve_ordering"): Added(
        "sequence_batching.oldest.preserve_ordering", _v(37)
    ),
    ("inference.ModelSequenceBatching.State", "use_same_buffer_for_input_output"): Added(
        "sequence_batching.state.use_same_buffer_for_input_output", _v(40)
    ),
    ("inference.ModelSequenceBatching.State", "use_growable_memory"): Added(
        "sequence_batching.state.use_growable_memory", _v(40)
    ),
    ("inference.ModelSequenceBatching", "iterative_sequence"): Added(
        "sequence_batching.iterative_sequence", _v(40)
    ),
    ("inference.ModelConfig", "runtime"): Added("runtime", _v(42)),
    ("inference.ModelInput", "is_non_linear_format_io"): Added("input.is_non_linear_format_io", _v(49)),
    ("inference.ModelOutput", "is_non_linear_format_io"): Added("output.is_non_linear_format_io", _v(49)),
    ("inference.ModelConfig", "model_metrics"): Added("model_metrics", _v(52)),
    ("inference.ModelEnsembling", "max_inflight_requests"): Added(
        "ensemble_scheduling.max_inflight_requests", _v(63)
    ),
}

#: (enum, value) -> when Triton added that enum value.
ADDED_VALUES: dict[tuple[str, str], Added] = {
    ("inference.BatchInput.Kind", "BATCH_ITEM_SHAPE"): Added("batch_input.kind", _v(20)),
    ("inference.BatchInput.Kind", "BATCH_ITEM_SHAPE_FLATTEN"): Added("batch_input.kind", _v(20)),
    ("inference.DataType", "TYPE_BF16"): Added("data_type", _v(22)),
}

#: (message, field) -> when Triton widened it from 32 to 64 bits (older versions read up to 2**32 - 1).
WIDENED: dict[tuple[str, str], Added] = {
    ("inference.ModelDynamicBatching", "priority_levels"): Added("dynamic_batching.priority_levels", _v(36)),
    ("inference.ModelDynamicBatching", "default_priority_level"): Added(
        "dynamic_batching.default_priority_level", _v(36)
    ),
    ("inference.ModelDynamicBatching.PriorityQueuePolicyEntry", "key"): Added(
        "dynamic_batching.priority_queue_policy key", _v(36)
    ),
}

_UINT32_MAX = 2**32 - 1


def _messages(proto: descriptor_pb2.FileDescriptorProto, prefix: str = "inference") -> list:
    """Every message of the file with its full name, nested ones included."""
    found = []
    pending = [(f"{prefix}.{m.name}", m) for m in proto.message_type]
    while pending:
        name, msg = pending.pop()
        found.append((name, msg))
        pending += [(f"{name}.{n.name}", n) for n in msg.nested_type]
    return found


def _enums(proto: descriptor_pb2.FileDescriptorProto) -> list:
    found = [(f"inference.{e.name}", e) for e in proto.enum_type]
    for name, msg in _messages(proto):
        found += [(f"{name}.{e.name}", e) for e in msg.enum_type]
    return found


@cache
def schema_for(version: TritonVersion | None) -> type[message.Message]:
    """The ``ModelConfig`` message class of a Triton version (None: proto2 form of the newest schema).

    The newest schema is tritonclient's; an older version's is that one less every field and enum
    value added after it, with the widened fields back at 32 bits. The proto2 form (``version=None``)
    records a field even when it is set to its default value, so a walk over it finds every field
    written in the text.
    """
    proto = descriptor_pb2.FileDescriptorProto()
    model_config_pb2.DESCRIPTOR.CopyToProto(proto)
    if version is None:
        proto.syntax = "proto2"
    else:
        for name, msg in _messages(proto):
            kept = [
                f for f in msg.field if ADDED_FIELDS.get((name, f.name), Added("", OLDEST)).since <= version
            ]
            del msg.field[:]
            msg.field.extend(kept)
            for field in msg.field:
                widened = WIDENED.get((name, field.name))
                if widened is not None and version < widened.since:
                    field.type = descriptor_pb2.FieldDescriptorProto.TYPE_UINT32
        for name, enum in _enums(proto):
            kept = [
                v for v in enum.value if ADDED_VALUES.get((name, v.name), Added("", OLDEST)).since <= version
            ]
            del enum.value[:]
            enum.value.extend(kept)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("inference.ModelConfig"))


def _later(where: str, what: str, added: Added, version: TritonVersion) -> str:
    fix = "remove it" if what == "this field" else "use another value"
    return (
        f"{where}: Triton {version} cannot read {what} (added in {added.since}); {fix} or serve with "
        f"Triton >= {added.since}"
    )


def _walk(msg: message.Message, version: TritonVersion, path: str = "") -> list[str]:
    """What ``version`` cannot read in a message parsed with the proto2 form of the newest schema."""
    found: list[str] = []
    for field, value in msg.ListFields():
        where = f"{path}.{field.name}" if path else field.name
        added = ADDED_FIELDS.get((msg.DESCRIPTOR.full_name, field.name))
        if added is not None and version < added.since:
            found.append(_later(where, "this field", added, version))
        elif field.message_type is not None and field.message_type.GetOptions().map_entry:
            key_field, value_field = (field.message_type.fields_by_name[n] for n in ("key", "value"))
            for key in sorted(value):
                found += _check_value(key_field, key, version, f"{where}[{key}]")
                if value_field.message_type is not None:
                    found += _walk(value[key], version, f"{where}[{key}]")
        elif field.is_repeated:
            for position, item in enumerate(value):
                found += _check_item(field, item, version, f"{where}[{position}]")
        else:
            found += _check_item(field, value, version, where)
    return found


def _check_item(field: FieldDescriptor, value: object, version: TritonVersion, where: str) -> list[str]:
    if field.message_type is not None:
        return _walk(value, version, where)  # type: ignore[arg-type]
    return _check_value(field, value, version, where)


def _check_value(field: FieldDescriptor, value: object, version: TritonVersion, where: str) -> list[str]:
    """An enum value or an integer that ``version`` cannot read."""
    if field.enum_type is not None:
        known = field.enum_type.values_by_number.get(value)  # type: ignore[arg-type]
        added = ADDED_VALUES.get((field.enum_type.full_name, known.name)) if known is not None else None
        if added is not None and version < added.since:
            return [_later(where, known.name, added, version)]
        return []
    widened = WIDENED.get((field.containing_type.full_name, field.name))
    if widened is not None and version < widened.since and isinstance(value, int) and value > _UINT32_MAX:
        return [
            f"{where}: Triton {version} reads at most {_UINT32_MAX} here ({widened.since} widened it to 64 "
            f"bits); lower it or serve with Triton >= {widened.since}"
        ]
    return []


_NO_FIELD = re.compile(r'Message type "([\w.]+)" has no field named "(\w+)"')
_NO_VALUE = re.compile(r'Enum type "([\w.]+)" has no value named (\w+)')


def _explain(error: text_format.ParseError, version: TritonVersion) -> str:
    """The parser's refusal in the table's words, where the table knows what was refused."""
    where = f"config.pbtxt line {error.GetLine()}"
    field, value = _NO_FIELD.search(str(error)), _NO_VALUE.search(str(error))
    if field is not None and (field[1], field[2]) in ADDED_FIELDS:
        added = ADDED_FIELDS[(field[1], field[2])]
        return f"{where}: " + _later(added.where, "this field", added, version)
    if value is not None and (value[1], value[2]) in ADDED_VALUES:
        return f"{where}: " + _later(
            ADDED_VALUES[(value[1], value[2])].where, value[2], ADDED_VALUES[(value[1], value[2])], version
        )
    detail = str(error).split(": ", 2)[-1]
    return f"{where}: Triton {version} cannot parse it ({detail}); write it as that version's schema allows"


def check_schema(text: str, version: TritonVersion) -> list[str]:
    """What in a config's text the given Triton version cannot read (its parser would refuse the model).

    The verdict is that version's parser's: the text is parsed with :func:`schema_for` ``(version)``.
    When it is refused, every field and value it cannot read is named, with the version that added it.

    Args:
        text: The config text, which parses with tritonclient's (newest) schema.
        version: The Triton version that will read it.

    Returns:
        One message per refused field or value (``config.pbtxt: <path>: ...``); empty when it parses.
    """
    try:
        text_format.Parse(text, schema_for(version)())
        return []
    except text_format.ParseError as exc:
        refused = exc
    try:
        written = text_format.Parse(text, schema_for(None)())
    except text_format.ParseError:  # a number for an enum value the closed proto2 form does not list
        written = None
    found = _walk(written, version) if written is not None else []
    return [f"config.pbtxt: {m}" for m in found] or [_explain(refused, version)]


#: Triton's default ``--min-supported-compute-capability``: it does not use GPUs below it.
MIN_COMPUTE_CAPABILITY = (6, 0)

#: The embedded server's backend directory: backend -> the files Triton looks for there. The wheel's
#: Python backend, and this project's Python-based ONNX Runtime/TorchScript backend under both names.
EMBEDDED_BACKENDS: dict[str, frozenset[str]] = {
    "python": frozenset({"libtriton_python.so"}),
    **{name: frozenset({"model.py"}) for name in STAND_IN_BACKENDS},
}


def visible_gpus() -> frozenset[int]:
    """The GPU ids a Triton started here would use: CUDA's ids of the GPUs of compute capability >= 6.0.

    ``CUDA_VISIBLE_DEVICES`` renumbers and hides GPUs as it does for CUDA; entries that are not indexes
    (UUIDs, MIG devices) count as usable GPUs.
    """
    try:
        gpus = detect_gpus()
    except NvmlUnavailable:
        return frozenset()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        order = list(range(len(gpus)))
    else:
        entries = [e.strip() for e in visible.split(",") if e.strip()]
        if not all(e.isdigit() for e in entries):
            return frozenset(range(len(entries)))
        order = []
        for entry in entries:  # CUDA stops at the first index it does not have
            if int(entry) >= len(gpus):
                break
            order.append(int(entry))
    return frozenset(
        i for i, index in enumerate(order) if gpus[index].compute_capability >= MIN_COMPUTE_CAPABILITY
    )


def parse_gpu_ids(text: str) -> frozenset[int]:
    """``0,1`` (GPU ids) or ``none`` (a machine without GPUs), as ``validate --gpus`` takes them.

    Raises:
        ValidationError: the text is neither.
    """
    if text.strip().lower() in ("none", ""):
        return frozenset()
    try:
        ids = frozenset(int(part) for part in text.split(","))
    except ValueError:
        raise ValidationError(f"--gpus '{text}' is not a list of GPU ids; write 0,1 or none") from None
    if any(i < 0 for i in ids):
        raise ValidationError(f"--gpus '{text}' holds a negative id; GPU ids start at 0")
    return ids


@dataclass(frozen=True)
class Server:
    """The Triton validate judges a repository for.

    Attributes:
        version: Its version: the schema it reads.
        embedded: Whether it is this project's embedded server, whose backend directory is known
            (:data:`EMBEDDED_BACKENDS`); another server's backends are not.
        gpus: The GPU ids it can use, or None when its machine is unknown (GPU findings are warnings).
        gpus_from: Where ``gpus`` comes from, for messages (``this machine``, ``--gpus``).
    """

    version: TritonVersion = dataclass_field(default_factory=embedded_version)
    embedded: bool = False
    gpus: frozenset[int] | None = None
    gpus_from: str = ""

    @classmethod
    def this_machine(cls, gpus: frozenset[int] | None = None) -> Server:
        """The embedded server on this machine (the one ``serve`` starts), with this machine's GPUs.

        Args:
            gpus: The GPU ids to judge for instead of the ones detected here.
        """
        if gpus is not None:
            return cls(embedded_version(), True, gpus, "--gpus")
        return cls(embedded_version(), True, visible_gpus(), "this machine")

    @classmethod
    def named(cls, version: TritonVersion, gpus: frozenset[int] | None = None) -> Server:
        """A Triton of the given version (a container) on a machine known by its GPUs, or unknown."""
        return cls(version, False, gpus, "--gpus" if gpus is not None else "")

    def __str__(self) -> str:
        return f"the embedded Triton {self.version}" if self.embedded else f"Triton {self.version}"

    def describe(self) -> str:
        """Which server, and which machine, a report is judged for."""
        if self.gpus is None:
            return f"{self} on a machine not known"
        if self.gpus_from == "this machine":
            return f"{self} on this machine"
        return f"{self} with GPUs {sorted(self.gpus)}" if self.gpus else f"{self} on a machine without GPUs"
