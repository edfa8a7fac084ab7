"""TensorFlow/Keras source: a Keras model or a SavedModel, converted to ONNX with tf2onnx.

Triton's TensorFlow backend is deprecated, so TensorFlow models are served as ONNX (by the ONNX Runtime
backend, or as a TensorRT plan built from the ONNX file), and the conversion is proved against
TensorFlow's own outputs by the usual parity check.

Sources:
    * ``file.py:function``: a factory returning a ``keras.Model``, or ``(model, example_inputs)``;
    * a ``.keras`` (or legacy ``.h5``) file saved by Keras;
    * a SavedModel directory (``model.export(dir)``, ``tf.saved_model.save``): its ``serving_default``
      signature, or its only signature.

The input signature has a dynamic batch axis (``None`` first) when the model batches, and the spec's
``-1`` dims as further dynamic axes. Input names come from the spec, else the model (a Keras model's
``Input`` names; ``input_N`` where Keras made them up); output names from the spec, else the model (a
functional model's output layer names, a SavedModel signature's output keys), else ``output_N``; the
graph's tensors are renamed to match, since tf2onnx names a function's outputs ``Identity:0``. Weights
are stored inside ``model.onnx``; the opset is the spec's ``opset``, else 17; internal names are
canonicalised so the same model gives the same bytes. TensorFlow is an optional extra
(``pip install 'tritongen[tensorflow]'``), imported only here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from generator.build.exporters.base import ExportResult, call_factory, check_opset, error_line, one_line
from generator.build.exporters.naming import rename_io
from generator.build.runners import named_outputs
from generator.core import dtypes
from generator.core.errors import ExportError, MissingDependencyError
from generator.core.signature import read_onnx_signature
from generator.core.triton import DEFAULT_MODEL_FILENAMES, ONNX_PLATFORM
from generator.spec.models import MIN_OPSET, ModelSpec, factory_parts

DEFAULT_OPSET = 17
KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
_INSTALL = {"extra": "tensorflow", "purpose": "to export TensorFlow/Keras models"}
# TensorFlow's C++ side logs through absl straight to file descriptor 2 while it is imported, and
# TF_CPP_MIN_LOG_LEVEL no longer filters those lines (the oneDNN notice, absl's pre-init banner).
_ABSL_BANNER = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
_NATIVE_LINE = re.compile(r"^([IWEF])\d{4} ")
_SEVERITY = {"I": 0, "W": 1, "E": 2, "F": 3}
_AUTO_NAME = re.compile(r"^keras_tensor(_\d+)?$")


def _min_log_level() -> int:
    """TF_CPP_MIN_LOG_LEVEL as the user set it, else 2 (errors only)."""
    try:
        return int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    except ValueError:
        return 0


@contextlib.contextmanager
def _native_stderr_filtered() -> Iterator[None]:
    """Hold back native stderr lines below TF_CPP_MIN_LOG_LEVEL (absl severities); pass the rest on.

    TensorFlow applies the level only when it is set before TensorFlow is first imported, and not to
    the lines absl writes before it is initialised; this applies it to the lines written meanwhile.
    """
    min_level = _min_log_level()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to filter
        yield
        return
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [
                line
                for line in captured.read().decode(errors="replace").splitlines(keepends=True)
                if _keep_native(line, min_level)
            ]
            if kept:
                os.write(2, "".join(kept).encode())


def _keep_native(line: str, min_level: int) -> bool:
    if line.startswith(_ABSL_BANNER):
        return min_level == 0
    match = _NATIVE_LINE.match(line)
    return match is None or _SEVERITY[match.group(1)] >= min_level


def _quiet_logger(name: str, level: int) -> None:
    logger = logging.getLogger(name)
    if logger.level == logging.NOTSET:  # leave loggers the user configured alone
        logger.setLevel(level)


def _import_tensorflow() -> tuple[Any, Any, Any]:
    """``(tensorflow, keras, tf2onnx)``, imported with TensorFlow's start-up noise held back."""
    if "tensorflow" not in sys.modules:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # errors only, unless the user chose
    try:
        with _native_stderr_filtered():
            import tensorflow as tf
    except ModuleNotFoundError as exc:
        if exc.name != "tensorflow":
            raise ExportError(
                f"tensorflow is installed but does not import ({exc}); reinstall it with: "
                "pip install 'tritongen[tensorflow]'"
            ) from exc
        raise MissingDependencyError.for_package("tensorflow-cpu", **_INSTALL) from None
    except ImportError as exc:
        raise ExportError(
            f"tensorflow is installed but does not import ({exc}); reinstall it with: "
            "pip install 'tritongen[tensorflow]'"
        ) from exc
    try:
        import tf2onnx
    except ModuleNotFoundError:
        raise MissingDependencyError.for_package("tf2onnx", **_INSTALL) from None
    import keras

    _quiet_logger("tensorflow", logging.ERROR)  # retracing notices and deprecations
    _quiet_logger("absl", logging.ERROR)
    _quiet_logger("tf2onnx", logging.WARNING)  # per-conversion INFO lines; its errors still show
    return tf, keras, tf2onnx


@dataclass
class _Input:
    """One input of the converted graph: its final name, shape (None: dynamic) and TensorFlow dtype."""

    name: str
    shape: list[int | None]
    dtype: Any


@dataclass
class _Traced:
    """What gets converted: a ``tf.function`` of the inputs returning a flat list of outputs.

    Attributes:
        function: The ``tf.function`` (its input signature names the inputs).
        inputs: The inputs, in the function's argument order.
        output_names: Final output names in the function's output order; None: none known.
        reference: Runs the source model in TensorFlow on named numpy inputs; returns its output list.
    """

    function: Any
    inputs: list[_Input]
    output_names: list[str] | None
    reference: Callable[[dict[str, np.ndarray]], list[np.ndarray]]


def _first_line(exc: BaseException) -> str:
    """``Type: first line`` of an error; for TensorFlow's traced-code errors, the line that says why."""
    lines = [one_line(line) for line in str(exc).splitlines() if one_line(line)]
    if lines and lines[0] == "in user code:":
        return lines[-1]
    return error_line(exc)


def _tf_dtype(tf: Any, triton_dtype: str) -> Any:
    if triton_dtype == "STRING":
        return tf.string
    if triton_dtype == "BF16":
        return tf.bfloat16
    return tf.as_dtype(dtypes.to_numpy(triton_dtype))


def _load(model: ModelSpec, source: Path, tf: Any, keras: Any) -> tuple[Any, Any, bool]:
    """``(object, example_inputs, is_saved_model)`` for the model's source."""
    if factory_parts(model.source) is not None:
        found, example = call_factory(model, source)
        if not isinstance(found, keras.Model):
            raise ExportError(
                f"model '{model.name}': {model.source} gave a {type(found).__name__}, not a keras.Model; "
                "return the model, or (model, example_inputs)"
            )
        return found, example, False
    if source.is_dir():
        if not any((source / name).is_file() for name in ("saved_model.pb", "saved_model.pbtxt")):
            raise ExportError(
                f"model '{model.name}': {source} is a directory without saved_model.pb; point source at a "
                "SavedModel directory, a .keras file or a `file.py:function` factory"
            )
        try:
            return tf.saved_model.load(str(source)), None, True
        except Exception as exc:
            raise ExportError(
                f"model '{model.name}': TensorFlow cannot load the SavedModel {source} ({_first_line(exc)}); "
                "re-save it with model.export() or tf.saved_model.save()"
            ) from exc
    if source.suffix.lower() in KERAS_SUFFIXES:
        try:
            return keras.models.load_model(str(source), compile=False), None, False
        except Exception as exc:
            raise ExportError(
                f"model '{model.name}': Keras cannot load {source} ({_first_line(exc)}); use a "
                "`file.py:function` factory that builds the model (custom layers need their code)"
            ) from exc
    raise ExportError(
        f"model '{model.name}': {source} is not a Keras model file ({', '.join(KERAS_SUFFIXES)}) or a "
        "SavedModel directory; use one of those, or a `file.py:function` factory returning a keras.Model"
    )


def _example_arrays(example: Any) -> tuple[list[str] | None, list[np.ndarray]]:
    if example is None:
        return None, []
    if isinstance(example, dict):
        return list(example), [np.asarray(v) for v in example.values()]
    items = list(example) if isinstance(example, (tuple, list)) else [example]
    return None, [np.asarray(v) for v in items]


def _named(names: list[str]) -> list[str] | None:
    """``names`` unless Keras made them up (``keras_tensor_7`` changes from one process to the next)."""
    return names if names and not any(_AUTO_NAME.match(n) for n in names) else None


def _keras_inputs(
    model: ModelSpec, keras_model: Any, example: Any, batching: bool, tf: Any
) -> tuple[list[_Input], list[str] | None]:
    """The inputs to convert with, and the Keras model's own input names (None if it has none)."""
    try:
        known = list(keras_model.inputs or [])
    except (AttributeError, ValueError):  # a subclassed model that was never called has no inputs
        known = []
    keras_names = [t.name for t in known] or None
    example_names, arrays = _example_arrays(example)
    count = len(model.inputs) if model.inputs else len(known) or len(arrays)
    if count == 0:
        raise ExportError(
            f"model '{model.name}': the Keras model declares no inputs and the spec gives none; add "
            "`inputs:` to the spec or return (model, example_inputs) from the factory"
        )
    for what, found in (("Keras model", len(known)), ("factory's example", len(arrays))):
        if found and found != count:
            raise ExportError(
                f"model '{model.name}': the spec names {count} inputs but the {what} has {found}; make them agree"
            )
    names = _named(keras_names or []) or example_names or [f"input_{i}" for i in range(count)]
    inputs: list[_Input] = []
    for index in range(count):
        if model.inputs:
            tensor = model.inputs[index]
            dims: list[int | None] = [None if d == -1 else d for d in tensor.reshape or tensor.dims]
            shape = ([None] if batching else []) + dims
            inputs.append(_Input(tensor.name, shape, _tf_dtype(tf, tensor.dtype)))
            continue
        if known:
            full = list(known[index].shape)
            dtype = tf.as_dtype(known[index].dtype)
        else:
            full = [None, *arrays[index].shape[1:]] if batching else list(arrays[index].shape)
            dtype = tf.as_dtype(arrays[index].dtype)
        if batching and full:
            full[0] = None
        inputs.append(_Input(names[index], full, dtype))
    return inputs, keras_names


def _keras_output_names(keras_model: Any) -> list[str] | None:
    """A functional model's output names, a Sequential's last layer name; None if Keras made them up."""
    names = getattr(keras_model, "output_names", None)
    if not names:
        try:
            single = len(keras_model.outputs) == 1
        except (AttributeError, ValueError, TypeError):
            single = False
        names = [keras_model.layers[-1].name] if single and keras_model.layers else None
    return _named(list(names or []))


def _keras_function(
    model: ModelSpec, keras_model: Any, example: Any, batching: bool, tf: Any, keras: Any
) -> _Traced:
    """The Keras model as a ``tf.function`` of its inputs returning its outputs as a flat list.

    tf2onnx's own ``from_keras`` looks up Keras 3 output names that Sequential models do not have; a
    plain function of the model converts every kind of Keras model alike.
    """
    inputs, keras_names = _keras_inputs(model, keras_model, example, batching, tf)

    def call_input(tensors: list[Any]) -> Any:
        if len(tensors) == 1:
            return tensors[0]
        return dict(zip(keras_names, tensors, strict=True)) if keras_names else list(tensors)

    @tf.function(
        input_signature=[tf.TensorSpec(i.shape, i.dtype, name=i.name) for i in inputs], autograph=False
    )
    def serve(*args: Any) -> list[Any]:
        return keras.tree.flatten(keras_model(call_input(list(args)), training=False))

    def reference(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        tensors = [tf.convert_to_tensor(feeds[i.name]) for i in inputs]
        outputs = keras.tree.flatten(keras_model(call_input(tensors), training=False))
        return [np.asarray(out) for out in outputs]

    spec_names = [t.name for t in model.outputs] if model.outputs else None
    return _Traced(serve, inputs, spec_names or _keras_output_names(keras_model), reference)


def _rename(graph: Any, mapping: dict[str, str]) -> None:
    """Rename tensors everywhere in an ONNX graph (subgraphs included)."""
    import onnx

    for value in [*graph.input, *graph.output, *graph.value_info]:
        if value.name in mapping:
            value.name = mapping[value.name]
    for node in graph.node:
        for field in (node.input, node.output):
            for i, name in enumerate(field):
                if name in mapping:
                    field[i] = mapping[name]
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                _rename(attribute.g, mapping)
            for subgraph in attribute.graphs:
                _rename(subgraph, mapping)


def _rename_io(model: ModelSpec, proto: Any, input_names: list[str], output_names: list[str]) -> Any:
    """The graph with the intended input and output names (positionally); inner values that already carry
    one of those names are renamed instead (:func:`generator.build.exporters.naming.rename_io`)."""
    graph = proto.graph
    initializers = {t.name for t in graph.initializer}
    graph_inputs = [v.name for v in graph.input if v.name not in initializers]
    graph_outputs = [v.name for v in graph.output]
    if len(output_names) != len(graph_outputs):
        raise ExportError(
            f"model '{model.name}': the spec names {len(output_names)} outputs but the model has "
            f"{len(graph_outputs)}; list one spec output per model output, in the model's order"
        )
    inputs = {old: new for old, new in zip(graph_inputs, input_names, strict=True) if old != new}
    outputs = {old: new for old, new in zip(graph_outputs, output_names, strict=True) if old != new}
    if not inputs and not outputs:
        return proto
    taken = {name for node in graph.node for name in [*node.input, *node.output]} | initializers
    taken |= set(graph_inputs) | set(graph_outputs)
    mapping = {**inputs, **outputs}
    if not any(new in taken and new not in mapping for new in mapping.values()):
        _rename(graph, mapping)  # in place, byte for byte the same on every build
        return proto
    return rename_io(proto, inputs, outputs, model.name)  # inner values carry a wanted name: move them aside


def _check_converted_onnx(model: ModelSpec, proto: Any, opset: int) -> None:
    """Refuse a conversion with ops ONNX does not define, or that onnx.checker rejects."""
    import onnx

    unsupported = sorted(
        {n.op_type for n in proto.graph.node if n.domain in ("", "ai.onnx") and not onnx.defs.has(n.op_type)}
    )
    if unsupported:
        raise ExportError(
            f"model '{model.name}': tf2onnx has no ONNX conversion for the TensorFlow op(s) "
            f"{', '.join(unsupported)} (opset {opset}); replace them in the model, or try another `opset:`"
        )
    try:
        onnx.checker.check_model(proto)
    except Exception as exc:
        raise ExportError(
            f"model '{model.name}': tf2onnx produced an invalid ONNX model ({_first_line(exc)}); "
            "try another `opset:` in the spec"
        ) from exc


def _canonicalize(proto: Any, name: str) -> None:
    """Name internal nodes, tensors and constants by position, so the same model gives the same bytes.

    tf2onnx's names carry process-wide counters (``Transpose__30``) and its constant folding keeps an
    arbitrary one of several identical constants; graph inputs and outputs keep their names.
    """
    graph = proto.graph
    keep = {v.name for v in [*graph.input, *graph.output]}

    def fresh(candidate: str) -> str:
        while candidate in keep:
            candidate += "_"
        return candidate

    initializers = {t.name: t for t in graph.initializer}
    mapping: dict[str, str] = {}
    used: list[Any] = []
    for index, node in enumerate(graph.node):
        node.name = f"{node.op_type}_{index}"
        for tensor in node.input:
            if tensor in initializers and tensor not in mapping and tensor not in keep:
                mapping[tensor] = fresh(f"const_{len(used)}")
                used.append(initializers[tensor])
        for position, tensor in enumerate(node.output):
            if tensor and tensor not in keep:
                suffix = f":{position}" if len(node.output) > 1 else ""
                mapping[tensor] = fresh(f"{node.op_type}_{index}{suffix}")
    unused = [t for t in graph.initializer if t.name not in mapping]
    ordered = [*used, *unused]
    copies = [type(t)() for t in ordered]
    for copy, tensor in zip(copies, ordered, strict=True):
        copy.CopyFrom(tensor)
    del graph.initializer[:]
    graph.initializer.extend(copies)
    _rename(graph, mapping)
    for tensor in graph.initializer:
        tensor.name = mapping.get(tensor.name, tensor.name)
    graph.name = name
    graph.doc_string = ""  # tf2onnx writes the traced function's numbered name here


def _name_batch_axis(proto: Any) -> None:
    """Call the leading dynamic axis ``batch`` rather than tf2onnx's ``unk__N``, for readable files."""
    for value in [*proto.graph.input, *proto.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_param = "batch"


def _natural(key: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", key)]


def _match(model: ModelSpec, what: str, wanted: list[str], found: list[str]) -> list[str]:
    """``found`` reordered to line up with ``wanted`` (by name, else by position)."""
    if sorted(wanted) == sorted(found):
        return wanted
    if len(wanted) == len(found):
        return found
    raise ExportError(
        f"model '{model.name}': the spec names {len(wanted)} {what} ({', '.join(wanted)}) but the SavedModel "
        f"signature has {len(found)} ({', '.join(found)}); list one per signature {what[:-1]}"
    )


def _saved_model_function(model: ModelSpec, loaded: Any, batching: bool, tf: Any) -> _Traced:
    """The SavedModel's serving signature as a ``tf.function`` returning its outputs as a flat list."""
    signatures = dict(getattr(loaded, "signatures", {}) or {})
    if "serving_default" in signatures:
        function = signatures["serving_default"]
    elif len(signatures) == 1:
        function = next(iter(signatures.values()))
    else:
        raise ExportError(
            f"model '{model.name}': the SavedModel has no serving_default signature "
            f"(it has: {', '.join(sorted(signatures)) or 'none'}); save it with model.export() or "
            "tf.saved_model.save(obj, dir, signatures=...)"
        )
    positional, keyword = function.structured_input_signature
    if positional:
        raise ExportError(
            f"model '{model.name}': the SavedModel signature takes positional arguments; re-save it with "
            "named inputs (model.export() does)"
        )
    sig_inputs = list(keyword)
    sig_outputs = sorted(function.structured_outputs, key=_natural)
    in_names = [t.name for t in model.inputs] if model.inputs else sig_inputs
    out_names = [t.name for t in model.outputs] if model.outputs else sig_outputs
    # The signature's keys are the tensors' names inside the model: a spec tensor's source_name.
    in_keys = [t.source_name or t.name for t in model.inputs] if model.inputs else sig_inputs
    out_keys = [t.source_name or t.name for t in model.outputs] if model.outputs else sig_outputs
    in_sources = _match(model, "inputs", in_keys, sig_inputs)
    out_sources = _match(model, "outputs", out_keys, sig_outputs)
    inputs: list[_Input] = []
    for index, (name, source_name) in enumerate(zip(in_names, in_sources, strict=True)):
        if model.inputs:
            tensor = model.inputs[index]
            dims: list[int | None] = [None if d == -1 else d for d in tensor.reshape or tensor.dims]
            inputs.append(_Input(name, ([None] if batching else []) + dims, _tf_dtype(tf, tensor.dtype)))
        else:
            spec = keyword[source_name]
            shape = list(spec.shape) if spec.shape.rank is not None else [None]
            if batching and shape:
                shape[0] = None
            inputs.append(_Input(name, shape, spec.dtype))

    @tf.function(
        input_signature=[tf.TensorSpec(i.shape, i.dtype, name=i.name) for i in inputs], autograph=False
    )
    def serve(*args: Any) -> list[Any]:
        outputs = function(**dict(zip(in_sources, args, strict=True)))
        return [outputs[key] for key in out_sources]

    serve.saved_model = loaded  # the signature's variables live as long as the loaded object

    def reference(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return [np.asarray(out) for out in serve(*[tf.convert_to_tensor(feeds[i.name]) for i in inputs])]

    return _Traced(serve, inputs, out_names, reference)


class TensorflowExporter:
    """Converts a Keras model or a SavedModel to ONNX with tf2onnx (opset from the spec, else 17)."""

    framework = "tensorflow"

    def export(self, model: ModelSpec, source: Path, version_dir: Path) -> ExportResult:
        """Convert to ``version_dir/model.onnx`` and return a reference runner that calls TensorFlow.

        Raises:
            MissingDependencyError: tensorflow or tf2onnx is not installed.
            ExportError: the source cannot be loaded, or tf2onnx cannot convert it.
        """
        import onnx

        tf, keras, tf2onnx = _import_tensorflow()
        if keras.backend.backend() != "tensorflow":
            raise ExportError(
                f"model '{model.name}': Keras runs on the '{keras.backend.backend()}' backend; set "
                "KERAS_BACKEND=tensorflow to export it with tf2onnx"
            )
        loaded, example, is_saved_model = _load(model, source, tf, keras)
        batching = model.max_batch_size != 0
        opset = model.opset or DEFAULT_OPSET
        newest = max(tf2onnx.constants.OPSET_TO_IR_VERSION)
        if opset > newest:
            raise ExportError(
                f"model '{model.name}': tf2onnx {tf2onnx.__version__} writes opsets up to {newest}, not "
                f"{opset}; use opset {MIN_OPSET} to {newest} for a TensorFlow model, or leave it unset "
                f"({DEFAULT_OPSET})"
            )
        started = time.perf_counter()
        if is_saved_model:
            traced = _saved_model_function(model, loaded, batching, tf)
        else:
            traced = _keras_function(model, loaded, example, batching, tf, keras)
        specs = [tf.TensorSpec(i.shape, i.dtype, name=i.name) for i in traced.inputs]
        try:
            with _native_stderr_filtered():  # grappler's INFO lines ("Starting new session")
                proto, _ = tf2onnx.convert.from_function(traced.function, input_signature=specs, opset=opset)
        except Exception as exc:
            raise ExportError(
                f"model '{model.name}': tf2onnx could not convert it: {_first_line(exc)}; check the spec's "
                "input shapes and dtypes against the model, or try another `opset:`"
            ) from exc
        # tf2onnx names a function's list outputs Identity:0, Identity_1:0, ...
        output_names = traced.output_names or [f"output_{i}" for i in range(len(proto.graph.output))]
        input_names = [i.name for i in traced.inputs]
        proto = _rename_io(model, proto, input_names, output_names)
        _check_converted_onnx(model, proto, opset)
        _canonicalize(proto, model.name)
        if batching:
            _name_batch_axis(proto)
        version_dir.mkdir(parents=True, exist_ok=True)
        target = version_dir / DEFAULT_MODEL_FILENAMES[ONNX_PLATFORM]
        try:
            onnx.save(proto, str(target))
        except ValueError as exc:  # protobuf's 2 GB limit
            raise ExportError(
                f"model '{model.name}': the converted model does not fit in one ONNX file ({_first_line(exc)})"
            ) from exc
        seconds = time.perf_counter() - started
        signature = read_onnx_signature(target)
        check_opset(model, signature.details.get("opset"), "tf2onnx", f"use opset {MIN_OPSET} to {newest}")
        return ExportResult(
            files=[target],
            platform=ONNX_PLATFORM,
            signature=signature,
            reference=named_outputs(traced.reference, output_names),
            details={
                "opset": signature.details.get("opset"),
                "tensorflow": tf.__version__,
                "keras": keras.__version__,
                "tf2onnx": tf2onnx.__version__,
                "export_seconds": round(seconds, 3),
            },
        )
