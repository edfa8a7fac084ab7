"""Built-in step ``postprocess``: classification logits to probabilities and the top k classes, as a Triton
Python-backend model.

Input ``logits`` (FP32, dims [N]). Outputs: ``probabilities`` (FP32 [N], the softmax or the sigmoid; not
with activation ``none``), ``scores`` (FP32 [k]: the k highest probabilities, or logits without an
activation, highest first), ``indices`` (INT64 [k]: their classes) and, when labels are given, ``labels``
(TYPE_STRING [k]: their labels). Softmax and sigmoid are those of transformers' text-classification
pipeline (sigmoid for multi-label models and single-logit ones).

The settings arrive as the model config's ``parameters`` (strings): ``classes``, ``top_k``, ``activation``
(``softmax``, ``sigmoid``, ``none``; or the former ``softmax: true|false``); the labels, one per line, lie
in ``labels.txt`` in the version directory when the parameter ``labels_file`` names it.

This file is copied into a model repository as ``model.py`` and runs in Triton's Python backend stub with
only numpy installed: it imports nothing from the package it ships in. :class:`Postprocess` does the work
without Triton.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

INPUT = "logits"
#: Defaults: top_k None is min(5, classes); activation None is softmax, or none with softmax false.
DEFAULTS: dict[str, object] = {"activation": None, "softmax": True, "top_k": None}
ACTIVATIONS = ("softmax", "sigmoid", "none")


def _flag(value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got '{value}'")


def read_labels(path: str | Path) -> list[str]:
    """The labels of a label file: one per line, trailing empty lines dropped."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, in float32, stable for large logits."""
    shifted = logits.astype(np.float32) - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """The logistic function of each value, in float32, without overflow for large logits."""
    values = logits.astype(np.float32)
    exp = np.exp(-np.abs(values))  # at most 1
    return np.where(values >= 0, 1 / (1 + exp), exp / (1 + exp)).astype(np.float32)


def activate(logits: np.ndarray, activation: str) -> np.ndarray:
    """``logits`` through ``softmax``, ``sigmoid`` or ``none`` (as float32)."""
    if activation == "softmax":
        return softmax(logits)
    if activation == "sigmoid":
        return sigmoid(logits)
    return logits.astype(np.float32)


def _activation(merged: Mapping[str, object]) -> str:
    if merged.get("activation") is None:
        return "softmax" if _flag(merged["softmax"]) else "none"
    activation = str(merged["activation"]).strip().lower()
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be softmax, sigmoid or none, got '{merged['activation']}'")
    return activation


class Postprocess:
    """Softmax and top-k over rows of logits.

    Args:
        settings: The step's settings, as strings (the config parameters) or plain values: ``classes``
            (N; the number of labels when labels are given), ``top_k`` (default min(5, N)),
            ``activation`` (softmax, sigmoid or none; default softmax, or none with ``softmax: false``).
        labels: The labels (N of them), a label file's path, or None.

    Calling it with logits [rows, N] returns ``{"probabilities", "scores", "indices", "labels"}`` (those that
    apply), ``labels`` as an object array of UTF-8 bytes.

    Raises:
        ValueError: A setting is invalid or disagrees with the labels.
    """

    def __init__(
        self, settings: Mapping[str, object], labels: str | Path | Sequence[str] | None = None
    ) -> None:
        merged = {**DEFAULTS, **{k: v for k, v in settings.items() if v is not None and v != ""}}
        names = read_labels(labels) if isinstance(labels, (str, Path)) else labels
        self.labels = None if names is None else np.array([n.encode("utf-8") for n in names], dtype=object)
        classes = merged.get("classes")
        if classes is None and self.labels is None:
            raise ValueError("the number of classes is unknown: set classes or give labels")
        self.classes = int(classes) if classes is not None else len(self.labels)  # type: ignore[arg-type,call-overload]
        if self.labels is not None and len(self.labels) != self.classes:
            raise ValueError(f"classes is {self.classes} but there are {len(self.labels)} labels")
        if self.classes < 1:
            raise ValueError(f"classes must be at least 1, got {self.classes}")
        top_k = merged["top_k"]
        self.top_k = min(5, self.classes) if top_k is None else int(top_k)  # type: ignore[call-overload]
        if not 1 <= self.top_k <= self.classes:
            raise ValueError(f"top_k must be between 1 and classes ({self.classes}), got {self.top_k}")
        self.activation = _activation(merged)

    def __call__(self, logits: np.ndarray) -> dict[str, np.ndarray]:
        """Post-process logits [rows, N]."""
        logits = np.asarray(logits)
        if logits.ndim != 2 or logits.shape[1] != self.classes:
            raise ValueError(f"expected logits of shape [rows, {self.classes}], got {list(logits.shape)}")
        values = activate(logits, self.activation)
        # Stable sort of the negated values: the highest first, ties in class order.
        indices = np.argsort(-values, axis=1, kind="stable")[:, : self.top_k]
        outputs = {
            "scores": np.take_along_axis(values, indices, axis=1),
            "indices": indices.astype(np.int64),
        }
        if self.activation != "none":
            outputs = {"probabilities": values, **outputs}
        if self.labels is not None:
            outputs["labels"] = self.labels[indices]
        return outputs


def _parameters(config: dict) -> dict[str, str]:
    return {
        key: entry["string_value"]
        for key, entry in (config.get("parameters") or {}).items()
        if isinstance(entry, dict) and "string_value" in entry
    }


class TritonPythonModel:
    """Serves :class:`Postprocess`: the logits of all the requests of an execution in one pass."""

    def initialize(self, args: dict) -> None:
        """Read the settings from the config's parameters and the labels from the version directory."""
        self._name = args["model_name"]
        config = json.loads(args["model_config"])
        # Without batching (max_batch_size 0) a request's logits and outputs have no row axis.
        self._batched = int(config.get("max_batch_size") or 0) > 0
        settings = _parameters(config)
        labels_file = settings.pop("labels_file", None)
        version_dir = Path(args["model_repository"]) / str(args["model_version"])
        self._postprocess = Postprocess(settings, version_dir / labels_file if labels_file else None)

    def execute(self, requests: list) -> list:
        """Post-process the logits of every request together, and split the results back."""
        import triton_python_backend_utils as pb_utils

        arrays = [pb_utils.get_input_tensor_by_name(request, INPUT).as_numpy() for request in requests]
        if not self._batched:
            arrays = [array[None] for array in arrays]
        try:
            outputs = self._postprocess(np.concatenate(arrays) if len(arrays) > 1 else arrays[0])
        except Exception as error:  # every request of the execution fails with it
            text = " ".join(str(error).split())
            failure = pb_utils.TritonError(f"model '{self._name}': {type(error).__name__}: {text}")
            return [pb_utils.InferenceResponse(error=failure) for _ in requests]
        responses = []
        start = 0
        for request, array in zip(requests, arrays, strict=True):
            stop = start + len(array)
            wanted = set(request.requested_output_names() or outputs)
            tensors = [
                pb_utils.Tensor(name, value[start:stop] if self._batched else value[start])
                for name, value in outputs.items()
                if name in wanted
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start = stop
        return responses
