"""Facts about Triton Inference Server that several steps share, in one low module.

What Triton assumes when a config leaves something out (the backend of a platform, the model filename
of a backend or platform), the default ``max_batch_size`` this tool resolves for a model, and the
parser of ``config.pbtxt`` text (Triton's own protobuf schema). Exporters name their files from here,
``config`` writes configs with these facts, and ``validate`` checks configs against them.

This module imports nothing of the project above the error tree; the protobuf schema is imported only
when a config is parsed.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from generator.core.errors import ConfigError

if TYPE_CHECKING:
    from tritonclient.grpc import model_config_pb2

#: The platforms this tool exports to.
ONNX_PLATFORM = "onnxruntime_onnx"
TENSORRT_PLATFORM = "tensorrt_plan"
LIBTORCH_PLATFORM = "pytorch_libtorch"

#: Backends a config names with ``backend:`` alone (no platform); the build records them as the
#: artifact's "platform" and the config renders them as ``backend``.
PYTHON_BACKEND = "python"
#: The backends the embedded server runs through this package's Python-based stand-in (its ``model.py``):
#: ONNX Runtime for ``onnxruntime_onnx`` and PyTorch for ``pytorch_libtorch`` models.
STAND_IN_BACKENDS = ("onnxruntime", "pytorch")
DALI_BACKEND = "dali"
BACKEND_ONLY = (PYTHON_BACKEND, DALI_BACKEND)
ENSEMBLE_PLATFORM = "ensemble"

#: Triton platform -> the backend that serves it.
PLATFORM_BACKENDS = {
    ONNX_PLATFORM: "onnxruntime",
    TENSORRT_PLATFORM: "tensorrt",
    LIBTORCH_PLATFORM: "pytorch",
    "tensorflow_savedmodel": "tensorflow",
    "tensorflow_graphdef": "tensorflow",
    "ensemble": "",
}

#: Backend -> the model filename Triton's auto-complete assumes when ``default_model_filename`` is unset.
BACKEND_FILENAMES = {
    "tensorrt": "model.plan",
    "onnxruntime": "model.onnx",
    "openvino": "model.xml",
    "pytorch": "model.pt",
    "python": "model.py",
}

#: TensorFlow platform -> its model filename (both platforms share one backend, so the platform decides).
TENSORFLOW_FILENAMES = {"tensorflow_savedmodel": "model.savedmodel", "tensorflow_graphdef": "model.graphdef"}

#: Platform -> the model filename Triton loads when the config names none.
DEFAULT_MODEL_FILENAMES = {
    **{
        platform: BACKEND_FILENAMES[backend]
        for platform, backend in PLATFORM_BACKENDS.items()
        if backend in BACKEND_FILENAMES
    },
    **TENSORFLOW_FILENAMES,
}


def default_filename(platform: str) -> str | None:
    """The model filename Triton loads for a platform, or for a backend-only kind (``python``)."""
    if platform == DALI_BACKEND:  # Triton's DALI backend loads model.dali (not auto-detected by file)
        return "model.dali"
    if platform in BACKEND_ONLY:
        return BACKEND_FILENAMES[platform]
    return DEFAULT_MODEL_FILENAMES.get(platform)


def python_backend_utils_dir() -> Path | None:
    """The directory of the embedded server's ``triton_python_backend_utils.py`` (None when absent).

    Importing it needs only numpy, so a Python model's module can be imported and checked outside Triton.
    """
    found = importlib.util.find_spec("pytriton")
    if found is None or not found.submodule_search_locations:
        return None
    directory = Path(next(iter(found.submodule_search_locations))) / "tritonserver" / "backends" / "python"
    return directory if (directory / "triton_python_backend_utils.py").is_file() else None


#: ``max_batch_size`` of a model with a batch axis whose spec leaves it out.
DEFAULT_MAX_BATCH_SIZE = 8


class RequestsBatchSize(Protocol):
    """Anything that may ask for a ``max_batch_size`` (a model's spec entry)."""

    @property
    def max_batch_size(self) -> int | None:
        """The requested size, or ``None`` to let the model decide."""
        ...


class HasBatchAxis(Protocol):
    """Anything that knows whether a model has a batch axis (an exported signature)."""

    @property
    def supports_batching(self) -> bool:
        """Whether every input and output has a dynamic first dimension."""
        ...


def resolve_max_batch_size(model: RequestsBatchSize, signature: HasBatchAxis) -> int:
    """The spec's ``max_batch_size``, or 8 when the model has a batch axis and 0 when it has none."""
    if model.max_batch_size is not None:
        return model.max_batch_size
    return DEFAULT_MAX_BATCH_SIZE if signature.supports_batching else 0


def parse_model_config(text: str) -> model_config_pb2.ModelConfig:
    """Parse config.pbtxt text with Triton's schema, as Triton reads it.

    Raises:
        google.protobuf.text_format.ParseError: the text does not parse (it carries line and column).
    """
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(text, model_config_pb2.ModelConfig())


def parse_config_text(text: str, origin: str = "config.pbtxt") -> model_config_pb2.ModelConfig:
    """Parse config.pbtxt text with Triton's schema.

    Raises:
        ConfigError: the text does not parse; the message carries the parser's line and column.
    """
    from google.protobuf import text_format

    try:
        return parse_model_config(text)
    except text_format.ParseError as exc:
        raise ConfigError(f"{origin}: does not parse as a Triton ModelConfig: {exc}") from None
