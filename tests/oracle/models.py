"""The cases of the differential test and the model files they are written with.

A :class:`Case` is one model Triton is asked to load (the first of its :attr:`Case.models`), with the
models it depends on (an ensemble's steps) beside it. Each :class:`Model` is a directory: its
``config.pbtxt`` (a ``ModelConfig``, raw text, or none at all), its version directories and its model
file: a trivial Python-backend ``model.py`` (zeros of each output's configured shape, optionally with an
``auto_complete_config`` that adds what :attr:`Model.auto_complete` lists), a broken ``model.py``, or a
small ONNX model made with ``onnx.helper`` (each output the ``Identity`` of one input).

Models carry logical names (``m``, ``step_a``); :func:`write_case` prefixes every name the case defines
(the directory, the config's ``name``, an ensemble step's ``model_name``), so the cases of one run never
collide on one server. A name the case does not define (a misspelt step, a config named after another
directory) is written as it is.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

NAME_TOKEN = "@NAME@"
"""Stands for the model's written name in a raw (text) config."""

TRIVIAL_MODEL = '''"""A trivial model: zeros of each output's configured shape (a response per request)."""

import json

import numpy as np
import triton_python_backend_utils as pb_utils

AUTO = json.loads({auto!r})


class TritonPythonModel:
{auto_method}
    def initialize(self, args):
        self.config = json.loads(args["model_config"])
        policy = self.config.get("model_transaction_policy", {{}})
        self.decoupled = bool(policy.get("decoupled", False))

    def _response(self, request):
        batch = []
        if int(self.config.get("max_batch_size", 0)) > 0:
            shapes = [tensor.shape() for tensor in request.inputs()]
            batch = [int(shapes[0][0]) if shapes and len(shapes[0]) else 1]
        tensors = []
        for output in self.config.get("output", []):
            if "reshape" in output:
                dims = output["reshape"].get("shape", [])
            else:
                dims = output.get("dims", [])
            shape = batch + [max(int(d), 1) for d in dims]
            if output["data_type"] == "TYPE_STRING":
                array = np.full(shape, b"", dtype=np.object_)
            else:
                array = np.zeros(shape, dtype=pb_utils.triton_string_to_numpy(output["data_type"]))
            tensors.append(pb_utils.Tensor(output["name"], array))
        return pb_utils.InferenceResponse(output_tensors=tensors)

    def execute(self, requests):
        if not self.decoupled:
            return [self._response(request) for request in requests]
        for request in requests:
            sender = request.get_response_sender()
            sender.send(self._response(request), flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return None
'''

AUTO_COMPLETE_METHOD = """    @staticmethod
    def auto_complete_config(auto_complete_model_config):
        for tensor in AUTO.get("inputs", []):
            auto_complete_model_config.add_input(tensor)
        for tensor in AUTO.get("outputs", []):
            auto_complete_model_config.add_output(tensor)
        if "max_batch_size" in AUTO:
            auto_complete_model_config.set_max_batch_size(AUTO["max_batch_size"])
        if AUTO.get("dynamic_batching"):
            auto_complete_model_config.set_dynamic_batching()
        if "decoupled" in AUTO:
            auto_complete_model_config.set_model_transaction_policy({"decoupled": AUTO["decoupled"]})
        return auto_complete_model_config

"""

#: Python sources that do not make a model, by label.
BROKEN_MODELS = {
    "syntax error": "class TritonPythonModel:\n    def execute(self, requests)\n        return []\n",
    "no TritonPythonModel class": "import numpy as np\n\n\nclass Model:\n    pass\n",
}

#: ONNX element types by Triton data type (those the ONNX cases use).
ONNX_TYPES = {
    "TYPE_FP32": 1,
    "TYPE_UINT8": 2,
    "TYPE_INT8": 3,
    "TYPE_INT32": 6,
    "TYPE_INT64": 7,
    "TYPE_BOOL": 9,
    "TYPE_FP16": 10,
    "TYPE_FP64": 11,
}


@dataclass(frozen=True)
class OnnxTensor:
    """One input of an ONNX model and the output that is its ``Identity``.

    Attributes:
        input: The input's name.
        output: The output's name.
        data_type: Triton's name of both tensors' type (a key of :data:`ONNX_TYPES`).
        shape: Both tensors' shape; -1 is a symbolic dimension.
    """

    input: str
    output: str
    data_type: str
    shape: tuple[int, ...]


@dataclass
class Model:
    """One model directory of a case.

    Attributes:
        name: Logical name: the directory (prefixed when written) and what configs call it.
        config: The config (its ``name``, and ensemble steps' ``model_name``, renamed when written), raw
            text (:data:`NAME_TOKEN` stands for the written name), or None for no ``config.pbtxt``.
        kind: ``python`` (a ``model.py``), ``onnx`` (``model.onnx`` from :attr:`onnx`), ``ensemble`` or
            ``none`` (version directories without a model file).
        versions: Version directory names.
        auto_complete: For a Python model: the inputs, outputs, ``max_batch_size``, ``dynamic_batching``
            and ``decoupled`` its ``auto_complete_config`` sets (None: it has no such method).
        source: A Python model's source instead of the trivial one (see :data:`BROKEN_MODELS`).
        onnx: An ONNX model's tensors.
        filename: The model file's name in each version directory (default ``model.py``/``model.onnx``).
        extra: More files, by path relative to the model directory.
    """

    name: str
    config: mc.ModelConfig | str | None
    kind: str = "python"
    versions: tuple[str, ...] = ("1",)
    auto_complete: Mapping[str, object] | None = None
    source: str | None = None
    onnx: tuple[OnnxTensor, ...] = ()
    filename: str | None = None
    extra: Mapping[str, bytes] = field(default_factory=dict)


@dataclass
class Case:
    """One configuration for validate and Triton to judge.

    Attributes:
        area: The part of ``model_config.proto`` the case exercises.
        label: What was done to the base configuration (``valid`` when nothing).
        models: The model Triton loads first, then the models it needs (an ensemble's steps).
        judge: Who makes Triton's verdict: ``core`` (Triton's own checks and the official Python
            backend: an oracle) or ``stand-in`` (the embedded server's Python-based ONNX backend, which
            is this project's code and only mirrors the native backend).
    """

    area: str
    label: str
    models: tuple[Model, ...]
    judge: str = "core"

    @property
    def target(self) -> Model:
        """The model Triton is asked to load."""
        return self.models[0]

    def describe(self, prefix: str = "") -> str:
        """The case as text: area, label, and each model's files and config (one line each)."""
        lines = [f"[{self.area}] {self.label} (judged by {self.judge})"]
        names = {m.name: f"{prefix}{m.name}" for m in self.models}
        for model in self.models:
            config = config_text(model, names)
            shown = (
                "(no config.pbtxt)" if config is None else " ".join(config.split()) or "(empty config.pbtxt)"
            )
            files = f"{model.kind} {list(model.versions)}"
            if model.auto_complete is not None:
                files += f", auto_complete_config adds {json.dumps(dict(model.auto_complete))}"
            if model.onnx:
                files += f", model.onnx {[(t.input, t.output, t.data_type, t.shape) for t in model.onnx]}"
            if model.extra:
                files += f", files {sorted(model.extra)}"
            lines.append(f"  {names[model.name]} ({files}): {shown}")
        return "\n".join(lines)


def config_text(model: Model, names: Mapping[str, str]) -> str | None:
    """The ``config.pbtxt`` text of ``model`` with the case's logical names replaced by ``names``."""
    if model.config is None:
        return None
    if isinstance(model.config, str):
        return model.config.replace(NAME_TOKEN, names[model.name])
    config = mc.ModelConfig()
    config.CopyFrom(model.config)
    if config.name in names:
        config.name = names[config.name]
    for step in config.ensemble_scheduling.step:
        if step.model_name in names:
            step.model_name = names[step.model_name]
    return text_format.MessageToString(config)


def python_source(model: Model) -> str:
    """The ``model.py`` of a Python model."""
    if model.source is not None:
        return model.source
    auto = json.dumps(dict(model.auto_complete or {}))
    method = AUTO_COMPLETE_METHOD if model.auto_complete is not None else ""
    return TRIVIAL_MODEL.format(auto=auto, auto_method=method)


def write_onnx(path: Path, tensors: tuple[OnnxTensor, ...]) -> None:
    """Write an ONNX model whose every output is the ``Identity`` of its input."""
    import onnx
    from onnx import helper

    def value_info(name: str, tensor: OnnxTensor) -> onnx.ValueInfoProto:
        shape = [f"d{i}" if d < 0 else d for i, d in enumerate(tensor.shape)]
        return helper.make_tensor_value_info(name, ONNX_TYPES[tensor.data_type], shape)

    graph = helper.make_graph(
        [helper.make_node("Identity", [t.input], [t.output]) for t in tensors],
        "identity",
        [value_info(t.input, t) for t in tensors],
        [value_info(t.output, t) for t in tensors],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def _write_model(model: Model, directory: Path, names: Mapping[str, str]) -> None:
    directory.mkdir(parents=True)
    config = config_text(model, names)
    if config is not None:
        (directory / "config.pbtxt").write_text(config)
    for version in model.versions:
        version_dir = directory / version
        version_dir.mkdir()
        if model.kind == "python":
            (version_dir / (model.filename or "model.py")).write_text(python_source(model))
        elif model.kind == "onnx":
            write_onnx(version_dir / (model.filename or "model.onnx"), model.onnx)
    for relative, payload in model.extra.items():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(payload)


def write_case(case: Case, repository: Path, prefix: str) -> dict[str, str]:
    """Write every model of ``case`` into ``repository`` under prefixed names.

    Returns:
        The written name of each logical name.
    """
    names = {model.name: f"{prefix}{model.name}" for model in case.models}
    for model in case.models:
        _write_model(model, repository / names[model.name], names)
    return names
