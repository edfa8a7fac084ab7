"""The settings of the steps after a classifier (``builtin:postprocess``, ``builtin:token_labels``): what
they share (the classes, their labels, the activation) and each kind's own, validated as a spec is
loaded. What they become in a model config is :func:`generator.steps.step_definition`'s.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from generator.steps.base_settings import INT64_MAX, StepSettings, parameter_flag

__all__ = ["LABELS_FILE", "PostprocessSettings", "TokenLabelsSettings"]

#: The label file's name in the repository (beside config.pbtxt and in the version directory).
LABELS_FILE = "labels.txt"


def _inline_labels(value: Any) -> Any:
    """A label file's path or a list of labels, each a non-empty string of one line (one per line in the
    file written)."""
    if value is None or (isinstance(value, str) and value):
        return value
    if isinstance(value, str):
        raise ValueError("must not be empty; give a label file's path or a list of labels")
    if not isinstance(value, list):
        raise ValueError("must be a label file's path or a list of labels")
    if not value:
        raise ValueError("is an empty list; list one label per class")
    bad = [
        str(index)
        for index, label in enumerate(value)
        if not isinstance(label, str) or not label.strip() or "\n" in label or "\r" in label
    ]
    if bad:
        raise ValueError(
            f"labels at {', '.join(bad)} are not one line of text each (empty, a line break, or not a "
            "string: quote numbers and yes/no); give each label as one line of text"
        )
    return value


class _LabelSettings(StepSettings):
    """What the classification steps share: the classes, their labels, the activation."""

    classes: int | None = Field(
        default=None,
        ge=1,
        le=INT64_MAX,
        description="N, the number of classes; default: the number of labels.",
    )
    labels: str | list[str] | None = Field(
        default=None,
        description="The class labels: a text file with one label per line (relative to the spec's "
        "directory), or a list of them (written to labels.txt in the repository); adds the labels output.",
    )
    activation: Literal["softmax", "sigmoid", "none"] | None = Field(
        default=None,
        description="softmax (one class per input), sigmoid (multi-label, or a single logit: as "
        "transformers' pipelines for problem_type multi_label_classification or num_labels 1), or none "
        "(the logits as scores).",
    )

    @field_validator("labels", mode="before")
    @classmethod
    def _labels(cls, value: Any) -> Any:
        return _inline_labels(value)


class PostprocessSettings(_LabelSettings):
    """Settings of ``builtin:postprocess``: logits (FP32 [N]) to probabilities and the top k classes."""

    activation: Literal["softmax", "sigmoid", "none"] | None = Field(
        default=None,
        description="softmax (one class per input), sigmoid (multi-label, or a single logit: as "
        "transformers' text-classification pipeline for problem_type multi_label_classification or "
        "num_labels 1) or none (the logits as scores); softmax and sigmoid add the probabilities output "
        "and, with labels, Triton's classification extension on it. Default: softmax, or none with "
        "softmax: false.",
    )
    softmax: bool = Field(
        default=True,
        description="The former spelling of activation: true is softmax, false none.",
    )
    top_k: int | None = Field(
        default=None,
        ge=1,
        le=INT64_MAX,
        description="How many classes scores, indices and labels hold; default min(5, N).",
    )

    @model_validator(mode="after")
    def _one_activation(self) -> PostprocessSettings:
        explicit = "softmax" in self.model_fields_set and self.activation is not None
        if explicit and self.softmax != (self.activation == "softmax"):
            raise ValueError(
                f"softmax: {parameter_flag(self.softmax)} disagrees with activation: {self.activation}; set "
                "activation alone"
            )
        return self

    @property
    def applied(self) -> str:
        """The activation applied: ``activation``, else softmax or none as ``softmax`` says."""
        return self.activation or ("softmax" if self.softmax else "none")


class TokenLabelsSettings(_LabelSettings):
    """Settings of ``builtin:token_labels``: per-token logits (FP32 [-1, N]) to each token's top class, its
    probability and its label (token classification, as transformers' pipeline with no aggregation)."""

    activation: Literal["softmax", "sigmoid", "none"] = Field(
        default="softmax",
        description="softmax (as transformers' token-classification pipeline), sigmoid (independent "
        "classes), or none (the logits as scores).",
    )
