"""The Python-based backend that serves ONNX models (ONNX Runtime) and TorchScript models (libtorch) on
the CPU for the embedded Triton server.

The Triton build that ships in the ``nvidia-pytriton`` wheel has only the Python backend. Triton resolves a
backend named ``B`` by looking in ``<backend-dir>/B/``; when there is no ``libtriton_B.so`` but a
``model.py``, it runs that file through the Python backend for every model whose config says
``backend: "B"`` or a platform that maps to it. The embedded server copies this file to
``<backend-dir>/onnxruntime/model.py`` and ``<backend-dir>/pytorch/model.py``, so ordinary configs with ``platform: "onnxruntime_onnx"`` (or
``backend: "onnxruntime"``) load unchanged, and the same repository also loads in the official Triton
container with its native C++ ONNX Runtime backend.

What it does, mirroring the native backend where that makes sense on CPUs:

* auto-completes the config as the native backends do (Triton starts with auto-complete on): for ONNX, a
  config without inputs or outputs (or no config.pbtxt at all) gets them from the model, with
  ``max_batch_size`` and ``dynamic_batching`` as the native ONNX Runtime backend sets them; a TorchScript
  config gets nothing, and, as the native PyTorch backend does, a config whose inputs do not match
  ``forward``'s arguments, or that has no input or no output, fails the load. The rules are tritongen's
  :mod:`generator.core.autocomplete`, which ``validate`` applies too: the stub runs the interpreter tritongen
  runs in, so tritongen is importable here;
* loads ``<model dir>/<version>/<default_model_filename or model.onnx>`` (a directory of that name holding
  ``model.onnx`` works too) and checks the config's inputs and outputs against the model at load time;
* registers the custom-op libraries the config names in ``model_operations { op_library_filename }``
  (ONNX Runtime's ``register_custom_ops_library``, as the native backend's ``RegisterCustomOpsLibrary``),
  so graphs with custom operators (onnxruntime-extensions' tokenizers, for one) load;
* honours the config ``parameters`` ``intra_op_thread_count``, ``inter_op_thread_count`` and
  ``execution_mode``, and ``optimization { graph { level } }``; without ``intra_op_thread_count`` each
  instance gets ``max(1, usable cores // instances in instance_group)`` threads, so that instances do not
  oversubscribe the CPU (TorchScript models: the PyTorch backend's ``INTRA_OP_THREAD_COUNT`` and
  ``INTER_OP_THREAD_COUNT``, which is all the native PyTorch backend reads). A parameter whose key starts
  with ``session.`` is passed to ONNX Runtime as a session config entry (``session.intra_op.allow_spinning``
  ``"0"``, for one, stops idle intra-op threads spinning on cores the server's front end needs); the native
  backend reads only ``session.use_device_allocator_for_initializers`` of these and ignores the others;
* when ``max_batch_size > 0``, runs all the requests Triton hands ``execute()`` as one batch (inputs
  concatenated along axis 0, one ``session.run``, outputs split back by each request's batch size); a
  single request's input arrays (views of the shared memory Triton wrote them to) go to ONNX Runtime
  without a copy or concatenation, and its outputs straight into the response;
* applies ``reshape`` on inputs and outputs, skips optional inputs a request does not send, computes only the
  outputs that were requested, and reports failures per request (a failed batched run fails every request in
  that batch);
* serves a stateful model (``sequence_batching`` with ``state``) with implicit state. Triton hands the state
  input to a Python-backend model like any input, but the Python backend (2.51, and since) has no call to
  write the next state back (the native backends' ``TRITONBACKEND_StateNew``/``StateUpdate``), so this
  backend keeps each sequence's state itself, keyed by the request's correlation ID: a request with the
  START flag starts from the state input Triton gives it (the config's ``initial_state``), every later
  one from the state outputs of the sequence's previous request, and END forgets the sequence (as does
  an idle timeout: Triton refuses the sequence's next request without START). The sequence batcher's
  control tensors reach the model as Triton feeds them. Triton binds each sequence to one instance, so
  each instance keeps its own sequences.

The embedded server also copies this file to ``<backend-dir>/pytorch/model.py``: for configs with
``platform: "pytorch_libtorch"`` it runs ``model.pt`` with TorchScript on the CPU, the same way.

This module runs inside Triton's Python backend stub and imports ``triton_python_backend_utils``, which only
exists there: nothing else in the package may import it. The stub embeds the interpreter tritongen runs in
(the server is started with it first on ``PATH``), so tritongen's own modules import here too.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

from generator.core.autocomplete import complete_onnxruntime, forward_inputs, pytorch_refusal
from generator.core.signature import Signature, TensorInfo

_ORT_TO_TRITON = {
    "tensor(bool)": "TYPE_BOOL",
    "tensor(uint8)": "TYPE_UINT8",
    "tensor(uint16)": "TYPE_UINT16",
    "tensor(uint32)": "TYPE_UINT32",
    "tensor(uint64)": "TYPE_UINT64",
    "tensor(int8)": "TYPE_INT8",
    "tensor(int16)": "TYPE_INT16",
    "tensor(int32)": "TYPE_INT32",
    "tensor(int64)": "TYPE_INT64",
    "tensor(float16)": "TYPE_FP16",
    "tensor(float)": "TYPE_FP32",
    "tensor(double)": "TYPE_FP64",
    "tensor(string)": "TYPE_STRING",
    "tensor(bfloat16)": "TYPE_BF16",
}

#: The dtype of a model tensor whose ONNX type Triton has no name for (auto-complete writes TYPE_INVALID).
_UNKNOWN_TYPE = "UNKNOWN"

_GRAPH_LEVELS = {
    -1: ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    1: ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _parameter(config: dict, key: str) -> str | None:
    entry = config.get("parameters", {}).get(key)
    if isinstance(entry, dict):
        value = entry.get("string_value")
        return None if value is None or value == "" else str(value)
    return None


def _int_parameter(config: dict, key: str) -> int | None:
    value = _parameter(config, key)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"parameter '{key}' must be an integer, got '{value}'") from None


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _instance_count(config: dict) -> int:
    total = sum(int(group.get("count", 1)) for group in config.get("instance_group", []) or [])
    return max(1, total)


def _dims(values) -> tuple[int, ...]:
    return tuple(int(v) for v in values or ())


def _target_shape(dims: tuple[int, ...]) -> tuple[int, ...] | None:
    """The shape to pass to ``ndarray.reshape`` (numpy infers at most one -1), or None if undeterminable."""
    return dims if sum(1 for d in dims if d < 0) <= 1 else None


# (request index, {input name: array}, batch size, requested output names)
_Member = tuple[int, dict[str, np.ndarray], int, list[str]]


class _Incompatible(Exception):
    """The requests' inputs cannot be concatenated into one batch."""


def _is_torchscript(config: dict) -> bool:
    return config.get("platform") == "pytorch_libtorch" or config.get("backend") == "pytorch"


def _position(name: str, fallback: int) -> int:
    """The index in a PyTorch-backend tensor name ``NAME__index`` (its config position otherwise)."""
    head, sep, tail = name.rpartition("__")
    return int(tail) if sep and head and tail.isdigit() else fallback


def _model_file(version_dir: Path, config: dict, torchscript: bool) -> Path:
    """The model file of one version: ``default_model_filename`` (or the backend's default), or the
    ``model.onnx``/``model.pt`` inside a directory of that name."""
    default = "model.pt" if torchscript else "model.onnx"
    path = version_dir / (config.get("default_model_filename") or default)
    if path.is_dir():
        path = path / default
    if not path.is_file():
        raise FileNotFoundError(f"no {'TorchScript' if torchscript else 'ONNX'} model at '{path}'")
    return path


def _op_libraries(config: dict) -> list[str]:
    """The custom-op libraries of ``model_operations { op_library_filename }``, in the config's order."""
    names = (config.get("model_operations") or {}).get("op_library_filename") or []
    return [str(name) for name in ([names] if isinstance(names, str) else names) if name]


def _with_op_libraries(options: ort.SessionOptions, config: dict) -> ort.SessionOptions:
    """``options`` with the config's custom-op libraries registered (paths as the native backend reads
    them: absolute, or a bare file name the dynamic loader finds)."""
    for library in _op_libraries(config):
        try:
            options.register_custom_ops_library(library)
        except Exception as error:
            raise ValueError(
                f"model_operations: cannot load the custom-op library '{library}' ({_one_line(error)}); "
                "give its absolute path, or put it where the dynamic loader finds it"
            ) from None
    return options


def _onnx_signature(path: Path, config: dict) -> Signature:
    """The model's tensors as ONNX Runtime reads them (the native backend's source), as a Signature."""
    options = _with_op_libraries(ort.SessionOptions(), config)
    session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])

    def tensors(args) -> tuple:
        return tuple(
            TensorInfo(
                arg.name,
                _ORT_TO_TRITON.get(arg.type, _UNKNOWN_TYPE).removeprefix("TYPE_"),
                tuple(d if isinstance(d, int) and d >= 0 else -1 for d in arg.shape or ()),
            )
            for arg in args
        )

    return Signature(tensors(session.get_inputs()), tensors(session.get_outputs()))


def _check_tensor(kind: str, spec: dict, meta, batching: bool) -> None:
    """Refuse a config tensor whose type or shape is not the model's (as the native backend does)."""
    name = spec["name"]
    expected = spec.get("data_type", "")
    actual = _ORT_TO_TRITON.get(meta.type, meta.type)
    if expected == "TYPE_BYTES":
        expected = "TYPE_STRING"
    if expected != actual:
        raise ValueError(f"{kind} '{name}': the configuration says {expected} but the model has {actual}")
    dims = _dims(spec["reshape"].get("shape")) if "reshape" in spec else _dims(spec.get("dims"))
    model_shape = list(meta.shape)
    if batching:
        if not model_shape or (isinstance(model_shape[0], int) and model_shape[0] > 0):
            raise ValueError(
                f"{kind} '{name}': max_batch_size > 0 but the model's first dimension is not dynamic "
                f"(model shape {model_shape}); set max_batch_size: 0 or export with a dynamic batch axis"
            )
        model_shape = model_shape[1:]
    mismatch = len(model_shape) != len(dims) or any(
        isinstance(m, int) and m > 0 and d > 0 and m != d for m, d in zip(model_shape, dims, strict=True)
    )
    if mismatch:
        raise ValueError(
            f"{kind} '{name}': the configuration's shape {list(dims)} does not match the model's "
            f"{model_shape}{' after the batch dimension' if batching else ''}"
        )


class _TorchScriptSession:
    """A TorchScript module behind ONNX Runtime's ``run(output_names, feeds)`` call.

    The same file serves as the embedded server's Python-based ``pytorch`` backend: as Triton's PyTorch
    backend does, inputs are passed to ``forward`` by their ``NAME__index`` position and outputs are
    matched to the config's outputs by theirs.
    """

    def __init__(self, path: Path, config: dict) -> None:
        import torch

        threads = _int_parameter(config, "INTRA_OP_THREAD_COUNT")  # the PyTorch backend's own keys
        torch.set_num_threads(max(1, threads or _usable_cpus() // _instance_count(config)))
        inter = _int_parameter(config, "INTER_OP_THREAD_COUNT")
        if inter is not None and inter > 0:
            with contextlib.suppress(RuntimeError):  # settable once per process, before any parallel work
                torch.set_num_interop_threads(inter)
        self._torch = torch
        self._module = torch.jit.load(str(path), map_location="cpu").eval()
        refusal = pytorch_refusal(config, forward_inputs(self._module))
        if refusal is not None:
            raise ValueError(refusal)
        inputs = [spec["name"] for spec in config.get("input", [])]
        outputs = [spec["name"] for spec in config.get("output", [])]
        self._inputs = sorted(inputs, key=lambda n: _position(n, inputs.index(n)))
        self._outputs = sorted(outputs, key=lambda n: _position(n, outputs.index(n)))

    def run(self, names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        torch = self._torch
        with torch.inference_mode():
            result = self._module(*[torch.from_numpy(feeds[n]) for n in self._inputs if n in feeds])
        flat = list(result) if isinstance(result, (tuple, list)) else [result]
        by_name = dict(zip(self._outputs, flat, strict=False))
        return [by_name[name].numpy() for name in names]


#: Triton's request flags for the first and the last request of a sequence (TRITONSERVER_RequestFlag).
_SEQUENCE_START = 1
_SEQUENCE_END = 2
#: Triton's ``max_sequence_idle_microseconds`` when a config leaves it 0.
_DEFAULT_IDLE_MICROSECONDS = 1_000_000


class _SequenceStates:
    """Implicit state kept per sequence (correlation ID), since the Python backend cannot hand it to Triton."""

    def __init__(self, config: dict) -> None:
        batcher = config.get("sequence_batching") or {}
        states = batcher.get("state") or []
        self.inputs = [str(s.get("input_name", "")) for s in states]
        self.outputs = [str(s.get("output_name", "")) for s in states]
        self.fed = {str(t.get("name", "")) for t in batcher.get("control_input") or []} | set(self.inputs)
        idle = int(batcher.get("max_sequence_idle_microseconds") or 0) or _DEFAULT_IDLE_MICROSECONDS
        self._idle_seconds = idle / 1e6
        self._kept: dict[object, tuple[float, dict[str, np.ndarray]]] = {}

    def __bool__(self) -> bool:
        return bool(self.inputs)

    def load(self, request, feeds: dict[str, np.ndarray]) -> None:
        """Put the sequence's kept state into ``feeds`` (unless the request starts it, or is a padding
        request of the sequence batcher, without a correlation ID: those run on Triton's state input)."""
        now = time.monotonic()
        stale = [key for key, (seen, _) in self._kept.items() if now - seen > self._idle_seconds]
        for key in stale:  # Triton has released these sequences: their next request needs START
            del self._kept[key]
        key = request.correlation_id()
        if not key or request.flags() & _SEQUENCE_START or key not in self._kept:
            return
        feeds.update(self._kept[key][1])

    def keep(self, request, outputs: dict[str, np.ndarray]) -> None:
        """Keep the state outputs of ``request``'s run as its sequence's next state; END forgets it."""
        key = request.correlation_id()
        if not key:
            return
        if request.flags() & _SEQUENCE_END:
            self._kept.pop(key, None)
            return
        state = {name: np.array(outputs[out]) for name, out in zip(self.inputs, self.outputs, strict=True)}
        self._kept[key] = (time.monotonic(), state)


class TritonPythonModel:
    """Serves one ONNX model instance with ONNX Runtime on the CPU."""

    @staticmethod
    def auto_complete_config(auto_complete_model_config):
        """Complete the config as the native ONNX Runtime or PyTorch backend does (see the module docstring).

        Triton's Python backend calls this before ``initialize`` while auto-complete is on; Triton keeps the
        max_batch_size, the tensors and a scheduler the config did not set. A refusal fails the load.
        """
        config = auto_complete_model_config.as_dict()
        inputs = config.get("input") or config.get("batch_input")
        if _is_torchscript(config) or (inputs and config.get("output")):
            return auto_complete_model_config  # PyTorch completes nothing; ONNX Runtime needs nothing here
        path = _model_file(Path(pb_utils.get_model_dir()), config, torchscript=False)
        completion = complete_onnxruntime(config, _onnx_signature(path, config))
        if completion.refusal is not None:
            raise ValueError(completion.refusal)
        config.clear()
        config.update(completion.config)
        return auto_complete_model_config

    def initialize(self, args: dict) -> None:
        """Load the ONNX model, configure its session and check it against the model config."""
        config = json.loads(args["model_config"])
        self._name = args["model_name"]
        self._batching = int(config.get("max_batch_size", 0)) > 0

        self._torchscript = _is_torchscript(config)
        model_path = self._model_path(args, config)
        if self._torchscript:
            self._session = _TorchScriptSession(model_path, config)
        else:
            self._session = ort.InferenceSession(
                str(model_path),
                sess_options=self._session_options(config),
                providers=["CPUExecutionProvider"],
            )

        self._output_names = [o["name"] for o in config.get("output", [])]
        self._sequence = "sequence_batching" in config
        self._states = _SequenceStates(config)
        self._requests: list = []
        self._input_reshape: dict[str, tuple[int, ...]] = {}
        self._output_reshape: dict[str, tuple[int, ...]] = {}
        self._string_inputs: set[str] = set()
        for spec in config.get("input", []):
            if "reshape" in spec:
                self._input_reshape[spec["name"]] = _dims(spec["reshape"].get("shape"))
            if spec.get("data_type") in ("TYPE_STRING", "TYPE_BYTES"):
                self._string_inputs.add(spec["name"])
        for spec in config.get("output", []):
            if "reshape" in spec:
                target = _target_shape(_dims(spec.get("dims")))
                if target is not None:
                    self._output_reshape[spec["name"]] = target
        if not self._torchscript:
            self._check_against_model(config)
        # A request with nothing to convert (no strings, reshapes or state) takes the short path; see _run_plain.
        self._plain = not (
            self._string_inputs
            or self._input_reshape
            or self._output_reshape
            or self._states
            or self._torchscript
        )

    def _model_path(self, args: dict, config: dict) -> Path:
        version_dir = Path(args["model_repository"]) / str(args["model_version"])
        return _model_file(version_dir, config, self._torchscript)

    def _session_options(self, config: dict) -> ort.SessionOptions:
        options = ort.SessionOptions()
        intra = _int_parameter(config, "intra_op_thread_count")
        if intra is None:
            intra = max(1, _usable_cpus() // _instance_count(config))
        options.intra_op_num_threads = max(0, intra)
        inter = _int_parameter(config, "inter_op_thread_count")
        if inter is not None:
            options.inter_op_num_threads = max(0, inter)
        mode = _int_parameter(config, "execution_mode")
        if mode is not None:
            options.execution_mode = (
                ort.ExecutionMode.ORT_PARALLEL if mode == 1 else ort.ExecutionMode.ORT_SEQUENTIAL
            )
        level = config.get("optimization", {}).get("graph", {}).get("level")
        if level is not None and int(level) in _GRAPH_LEVELS:
            options.graph_optimization_level = _GRAPH_LEVELS[int(level)]
        for key, entry in (config.get("parameters") or {}).items():
            if key.startswith("session.") and isinstance(entry, dict) and entry.get("string_value"):
                options.add_session_config_entry(key, str(entry["string_value"]))
        return _with_op_libraries(options, config)

    def _check_against_model(self, config: dict) -> None:
        """Refuse to load when the config does not describe the model, as the native backend does."""
        model_inputs = {i.name: i for i in self._session.get_inputs()}
        model_outputs = {o.name: o for o in self._session.get_outputs()}
        configured = {spec["name"] for spec in config.get("input", [])} | self._states.fed
        for kind, specs, found in (
            ("input", config.get("input", []), model_inputs),
            ("output", config.get("output", []), model_outputs),
        ):
            for spec in specs:
                name = spec["name"]
                if name not in found:
                    allowed = ", ".join(sorted(found)) or "none"
                    raise ValueError(
                        f"unexpected {kind} '{name}' in the model configuration; "
                        f"the model's {kind}s are: {allowed}"
                    )
                _check_tensor(kind, spec, found[name], self._batching)
        missing = sorted(set(model_inputs) - configured)
        if missing:
            raise ValueError(f"the model configuration lacks the model input(s) {', '.join(missing)}")

    def execute(self, requests: list) -> list:
        """Run the requests; with batching, all of them in one ``session.run`` where their shapes allow.

        The sequence batcher's padding requests (the Direct strategy fills a batch's empty slots with
        requests whose inputs Triton leaves uninitialised, and drops their responses) get an empty
        response without running the model: their inputs could fail the batch they would join (an
        index past an embedding table). They are the requests without a correlation ID, which every
        request of a sequence model has.
        """
        if self._sequence:
            real = [request for request in requests if request.correlation_id()]
            if len(real) < len(requests):
                answered = iter(self._execute(real) if real else [])
                return [
                    next(answered) if request.correlation_id() else self._padding() for request in requests
                ]
        return self._execute(requests)

    def _padding(self):
        """The response to a padding request (a new one each: a response answers one request)."""
        return pb_utils.InferenceResponse(output_tensors=[])

    def _execute(self, requests: list) -> list:
        if len(requests) == 1 or not self._batching:
            run = self._run_plain if self._plain else self._run_one
            return [run(request) for request in requests]
        return self._run_batched(requests)

    def _run_plain(self, request):
        """:meth:`_run_one` for a model whose tensors need no conversion: the request's input arrays (views
        of the shared memory Triton wrote them to) go to ONNX Runtime as they are, its outputs straight
        into the response, with no Python work between them that initialize could do instead."""
        try:
            names = self._wanted(request)
            outputs = self._session.run(
                names, {tensor.name(): tensor.as_numpy() for tensor in request.inputs()}
            )
            return pb_utils.InferenceResponse(
                output_tensors=[
                    pb_utils.Tensor(name, array) for name, array in zip(names, outputs, strict=True)
                ]
            )
        except Exception as error:  # every failure becomes this request's error response
            return self._error(error)

    def _feeds(self, request) -> dict[str, np.ndarray]:
        feeds = {tensor.name(): tensor.as_numpy() for tensor in request.inputs()}
        if self._string_inputs:
            for name in self._string_inputs.intersection(feeds):
                feeds[name] = np.vectorize(_decode, otypes=[object])(feeds[name])
        if self._states:
            self._states.load(request, feeds)
        return feeds

    def _run(self, names: list[str], feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``session.run`` of ``names``, and of the state outputs a stateful model passes on."""
        wanted = names + [n for n in self._states.outputs if n not in names]
        return dict(zip(wanted, self._session.run(wanted, self._to_model(feeds)), strict=True))

    def _wanted(self, request) -> list[str]:
        names = request.requested_output_names()
        if not names or len(names) == len(self._output_names):
            return self._output_names
        return [n for n in self._output_names if n in names]

    def _to_model(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        for name, shape in self._input_reshape.items():
            array = feeds.get(name)
            if array is not None:
                feeds[name] = array.reshape(array.shape[:1] + shape if self._batching else shape)
        return feeds

    def _from_model(self, name: str, array: np.ndarray) -> np.ndarray:
        shape = self._output_reshape.get(name)
        if shape is None:
            return array
        return array.reshape(array.shape[:1] + shape if self._batching else shape)

    def _run_one(self, request):
        try:
            names = self._wanted(request)
            outputs = self._run(names, self._feeds(request))
            if self._states:
                self._states.keep(request, outputs)
            return pb_utils.InferenceResponse(
                output_tensors=[
                    pb_utils.Tensor(name, self._from_model(name, outputs[name])) for name in names
                ]
            )
        except Exception as error:  # every failure becomes this request's error response
            return self._error(error)

    def _run_batched(self, requests: list) -> list:
        self._requests = requests  # a stateful model keeps each request's state from the batch's outputs
        responses: list = [None] * len(requests)
        members: list[_Member] = []
        for index, request in enumerate(requests):
            try:
                feeds = self._feeds(request)
                batch = next(iter(feeds.values())).shape[0] if feeds else 0
                members.append((index, feeds, batch, self._wanted(request)))
            except Exception as error:
                responses[index] = self._error(error)
        if not members:
            return responses
        try:
            self._run_group(members, responses)
        except _Incompatible:
            # Triton's dynamic batcher only batches requests of equal shapes, so this is rare: run each
            # set of requests whose inputs can be concatenated as its own batch.
            groups: dict[tuple, list[_Member]] = {}
            for member in members:
                key = tuple(sorted((name, a.shape[1:], a.dtype.str) for name, a in member[1].items()))
                groups.setdefault(key, []).append(member)
            for group in groups.values():
                self._run_group(group, responses)
        return responses

    def _run_group(self, members: list[_Member], responses: list) -> None:
        """Run ``members`` as one batch and store their responses; raise _Incompatible if they cannot be."""
        first = members[0][1]
        if len(members) == 1:
            feeds = first
        else:
            if any(member[1].keys() != first.keys() for member in members):
                raise _Incompatible
            try:
                feeds = {name: np.concatenate([member[1][name] for member in members]) for name in first}
            except ValueError:
                raise _Incompatible from None
        names = members[0][3]
        if any(member[3] is not names for member in members):
            wanted = set().union(*(member[3] for member in members))
            names = [n for n in self._output_names if n in wanted]
        try:
            outputs = self._run(names, feeds)
            start = 0
            for index, _, batch, requested in members:
                stop = start + batch
                if self._states:
                    self._states.keep(
                        self._requests[index], {n: outputs[n][start:stop] for n in self._states.outputs}
                    )
                responses[index] = pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor(name, self._from_model(name, outputs[name][start:stop]))
                        for name in requested
                    ]
                )
                start = stop
        except Exception as error:  # a failed batch fails each of its requests
            for member in members:
                responses[member[0]] = self._error(error)

    def _error(self, error: BaseException):
        return pb_utils.InferenceResponse(
            error=pb_utils.TritonError(f"model '{self._name}': onnxruntime: {_one_line(error)}")
        )

    def finalize(self) -> None:
        """Release the ONNX Runtime session."""
        self._session = None


def _decode(value):
    return value.decode("utf-8") if isinstance(value, bytes) else value
