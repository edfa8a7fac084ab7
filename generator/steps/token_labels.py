"""Built-in step ``token_labels``: per-token classification logits to each token's class, as a Triton
Python-backend model (token classification: named entities, parts of speech).

Input ``logits`` (FP32, dims [-1, N]: one row of N logits per token). Outputs, one value per token: when
labels are given ``labels`` (TYPE_STRING [-1]: the label of the highest class), ``scores`` (FP32 [-1]: its
probability, or its logit with activation ``none``) and ``indices`` (INT64 [-1]: the class). With the
default softmax these are the ``entity``, ``score`` and class of transformers' token-classification
pipeline without aggregation; the step does not know which tokens are special or padding (the tokenizer's
``attention_mask`` says so).

The settings arrive as the model config's ``parameters`` (strings): ``classes``, ``activation``
(``softmax``, ``sigmoid``, ``none``); the labels, one per line, lie in ``labels.txt`` in the version
directory when the parameter ``labels_file`` names it.

This file is copied into a model repository as ``model.py`` and runs in Triton's Python backend stub with
only numpy installed: it imports nothing from the package it ships in. :class:`TokenLabels` does the work
without Triton.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

INPUT = "logits"
DEFAULTS: dict[str, object] = {"activation": "softmax"}
ACTIVATIONS = ("softmax", "sigmoid", "none")


def read_labels(path: str | Path) -> list[str]:
    """The labels of a label file: one per line, trailing empty lines dropped."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def activate(logits: np.ndarray, activation: str) -> np.ndarray:
    """Softmax over the last axis, the sigmoid of each value, or the logits (``none``), in float32."""
    values = logits.astype(np.float32)
    if activation == "softmax":
        exp = np.exp(values - values.max(axis=-1, keepdims=True))
        return exp / exp.sum(axis=-1, keepdims=True)
    if activation == "sigmoid":
        exp = np.exp(-np.abs(values))
        return np.where(values >= 0, 1 / (1 + exp), exp / (1 + exp)).astype(np.float32)
    return values


class TokenLabels:
    """The top class of every token.

    Args:
        settings: The step's settings, as strings (the config parameters) or plain values: ``classes`` (N;
            the number of labels when labels are given), ``activation`` (softmax, sigmoid or none; default
            softmax).
        labels: The labels (N of them), a label file's path, or None.

    Calling it with logits [rows, tokens, N] returns ``{"labels", "scores", "indices"}``, each
    [rows, tokens] (``labels`` only with labels, an object array of UTF-8 bytes).

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
        self.activation = str(merged["activation"]).strip().lower()
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be softmax, sigmoid or none, got '{merged['activation']}'")

    def __call__(self, logits: np.ndarray) -> dict[str, np.ndarray]:
        """Each token's class, score and label, for logits [rows, tokens, N]."""
        logits = np.asarray(logits)
        if logits.ndim != 3 or logits.shape[2] != self.classes:
            raise ValueError(
                f"expected logits of shape [rows, tokens, {self.classes}], got {list(logits.shape)}"
            )
        values = activate(logits, self.activation)
        indices = values.argmax(axis=-1)  # the first of equal highest values, as numpy's argmax
        outputs = {
            "scores": np.take_along_axis(values, indices[..., None], axis=-1)[..., 0],
            "indices": indices.astype(np.int64),
        }
        if self.labels is not None:
            outputs = {"labels": self.labels[indices].reshape(indices.shape), **outputs}
        return outputs


def _parameters(config: dict) -> dict[str, str]:
    return {
        key: entry["string_value"]
        for key, entry in (config.get("parameters") or {}).items()
        if isinstance(entry, dict) and "string_value" in entry
    }


class TritonPythonModel:
    """Serves :class:`TokenLabels`, one request at a time (requests differ in their number of tokens)."""

    def initialize(self, args: dict) -> None:
        """Read the settings from the config's parameters and the labels from the version directory."""
        self._name = args["model_name"]
        config = json.loads(args["model_config"])
        # Without batching (max_batch_size 0) a request's logits [tokens, N] and outputs have no row axis.
        self._batched = int(config.get("max_batch_size") or 0) > 0
        settings = _parameters(config)
        labels_file = settings.pop("labels_file", None)
        version_dir = Path(args["model_repository"]) / str(args["model_version"])
        self._token_labels = TokenLabels(settings, version_dir / labels_file if labels_file else None)

    def execute(self, requests: list) -> list:
        """Label the tokens of each request; a request that fails fails alone."""
        import triton_python_backend_utils as pb_utils

        responses = []
        for request in requests:
            logits = pb_utils.get_input_tensor_by_name(request, INPUT).as_numpy()
            try:
                outputs = self._token_labels(logits if self._batched else logits[None])
            except Exception as error:  # this request's error response
                text = " ".join(str(error).split())
                failure = pb_utils.TritonError(f"model '{self._name}': {type(error).__name__}: {text}")
                responses.append(pb_utils.InferenceResponse(error=failure))
                continue
            wanted = set(request.requested_output_names() or outputs)
            if not self._batched:
                outputs = {name: value[0] for name, value in outputs.items()}
            tensors = [pb_utils.Tensor(name, value) for name, value in outputs.items() if name in wanted]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses
