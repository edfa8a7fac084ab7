"""Hugging Face source: a local transformers model folder (or a factory returning a ``PreTrainedModel``),
exported to ONNX with torch.onnx for its task.

The folder is loaded with transformers' ``AutoModelFor<Task>`` (``AutoModel`` for feature extraction)
from local files only, and wrapped so that its inputs are the tokenizer's (or the image step's) outputs in
the spec's order and its one output is what the task needs: ``logits`` for classification, ``embedding``
for a sentence-embedding model (sentence-transformers' own modules, or the pooling and normalisation the
spec names, inside the graph), ``last_hidden_state`` otherwise. The export itself is the torch exporter's
(dynamo, a dynamic batch axis and a dynamic sequence axis), and parity is checked against the transformers
model at the spec's sequence lengths.

Optimum's ONNX exporter is not used: optimum-onnx 0.1 requires transformers < 4.58 and tokenizers <= 0.23.0,
which conflict with the pinned transformers 5 and tokenizers 0.23.3. ``torch.onnx`` with dynamic batch and
sequence axes exports the encoder architectures these tasks use.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from generator.build.exporters.base import call_factory, error_line
from generator.build.exporters.torch import TorchExporter, import_torch
from generator.core.errors import ExportError, MissingDependencyError
from generator.spec.huggingface import embedding_plan, sentence_transformers_modules
from generator.spec.models import ModelSpec, factory_parts

#: transformers' auto class for each task.
AUTO_CLASSES = {
    "feature-extraction": "AutoModel",
    "text-classification": "AutoModelForSequenceClassification",
    "token-classification": "AutoModelForTokenClassification",
    "image-classification": "AutoModelForImageClassification",
}


def import_transformers() -> Any:
    """The ``transformers`` module, kept offline (nothing is fetched from a hub at build time).

    Raises:
        MissingDependencyError: transformers is not installed.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    try:
        import transformers
    except ImportError:
        raise MissingDependencyError.for_package(
            "transformers", purpose="to export Hugging Face models"
        ) from None
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    return transformers


def _pool(torch: Any, tokens: Any, mask: Any, pooling: str) -> Any:
    """sentence-transformers' pooling of token embeddings [B, S, H] under an attention mask [B, S]."""
    if pooling == "cls":
        return tokens[:, 0]
    weights = mask.unsqueeze(-1).to(tokens.dtype)
    if pooling == "max":
        masked = tokens.masked_fill(weights == 0, torch.finfo(tokens.dtype).min)
        return masked.max(dim=1).values
    summed = (tokens * weights).sum(dim=1)
    counts = weights.sum(dim=1).clamp(min=1e-9)
    return summed / (counts.sqrt() if pooling == "mean_sqrt_len" else counts)


def wrap(model: Any, input_names: list[str], head: str, plan: dict[str, Any] | None) -> Any:
    """A module taking the inputs positionally in ``input_names`` order and returning one tensor, the
    output its ``head`` attribute names.

    Args:
        model: A transformers ``PreTrainedModel`` or a sentence-transformers ``SentenceTransformer``.
        input_names: The inputs, in the order the spec declares them.
        head: ``logits``, ``last_hidden_state`` or ``embedding``.
        plan: For ``embedding``: ``{"pooling", "normalize", "sentence_transformers"}``.
    """
    torch = import_torch()

    class Wrapped(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.head = head

        def forward(self, first: Any, second: Any = None, third: Any = None, fourth: Any = None) -> Any:
            tensors = [t for t in (first, second, third, fourth) if t is not None]
            feeds = dict(zip(input_names, tensors, strict=True))
            if plan is not None and plan["sentence_transformers"]:
                return self.model(feeds)["sentence_embedding"]
            output = self.model(**feeds)
            if head == "logits":
                return output.logits
            tokens = output.last_hidden_state
            if plan is None:
                return tokens
            mask = feeds.get("attention_mask")
            if mask is None:
                mask = torch.ones(tokens.shape[:2], dtype=tokens.dtype)
            pooled = _pool(torch, tokens, mask, plan["pooling"])
            return torch.nn.functional.normalize(pooled, p=2, dim=1) if plan["normalize"] else pooled

    return Wrapped().eval()


class HuggingFaceExporter(TorchExporter):
    """Exports a transformers model folder (or factory) to ONNX for its task."""

    framework = "huggingface"

    def output_names(self, model: ModelSpec, module: Any) -> list[str] | None:
        """The spec's output names, else the task's one output the loaded module returns (logits,
        embedding or last_hidden_state)."""
        return super().output_names(model, module) or [module.head]

    def _plan(self, model: ModelSpec, source: Path | None) -> tuple[str, dict[str, Any] | None]:
        """The output the task needs and, for feature extraction, its pooling plan."""
        task = str(model.task)
        if task != "feature-extraction":
            return "logits", None
        where = f"model '{model.name}'"
        modules = None
        if source is not None and factory_parts(model.source) is None:
            modules = sentence_transformers_modules(source, where)
        plan = embedding_plan(model.pooling, model.normalize, modules, where)
        return ("last_hidden_state" if plan is None else "embedding"), plan

    def load(self, model: ModelSpec, source: Path) -> tuple[Any, Any]:
        """The wrapped model for ``model.task``; no example inputs (the spec's inputs give the shapes).

        Raises:
            ExportError: the folder does not load as the task's model class, or the factory gives no
                transformers model.
        """
        transformers = import_transformers()
        task = str(model.task)
        head, plan = self._plan(model, source)
        loaded = self._loaded(model, source, transformers, task, plan)
        names = [t.name for t in model.inputs or []]
        if not names:
            names = ["pixel_values"] if task == "image-classification" else ["input_ids", "attention_mask"]
        return wrap(loaded, names, head, plan), None

    def _loaded(self, model: ModelSpec, source: Path, transformers: Any, task: str, plan: Any) -> Any:
        if factory_parts(model.source) is not None:
            produced, _ = call_factory(model, source)
            if (
                not isinstance(produced, transformers.PreTrainedModel)
                and type(produced).__name__ != "SentenceTransformer"
            ):
                raise ExportError(
                    f"model '{model.name}': {model.source} gave a {type(produced).__name__}, not a transformers "
                    "PreTrainedModel; return the model (AutoModelFor...from_pretrained(...))"
                )
            return produced.eval()
        if plan is not None and plan["sentence_transformers"]:
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError:
                raise MissingDependencyError.for_package(
                    "sentence-transformers", purpose="to export sentence-transformers folders"
                ) from None
            try:
                return SentenceTransformer(str(source), device="cpu", local_files_only=True).eval()
            except Exception as exc:
                raise ExportError(
                    f"model '{model.name}': sentence-transformers cannot load '{source}': {error_line(exc)}"
                ) from None
        auto = getattr(transformers, AUTO_CLASSES[task])
        try:
            return auto.from_pretrained(str(source), local_files_only=True).eval()
        except Exception as exc:
            raise ExportError(
                f"model '{model.name}': transformers' {AUTO_CLASSES[task]} cannot load '{source}' for task "
                f"{task}: {error_line(exc)}; check the task, or that the folder holds the model's weights"
            ) from None

    def details(self, module: Any) -> dict[str, Any]:
        """The transformers version and the model's class."""
        transformers = import_transformers()
        inner = getattr(module, "model", module)
        return {"transformers": transformers.__version__, "model_class": type(inner).__name__}
