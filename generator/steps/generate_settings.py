"""The generate step's settings (``source: builtin:generate``): :class:`GenerateSettings`, the Hugging Face
causal LM folder it serves (:func:`model_folder_problems`), and the config's inputs, outputs and
``parameters`` they become (:func:`generate_io`, :func:`generate_parameters`).

Nothing here imports torch or transformers: the folder is judged by its files and its config.json.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from generator.core.jsonfile import read_json
from generator.steps.base_settings import INT32_MAX, StepSettings, parameter_flag

#: The model folder's name in the version directory (generate.py reads it there).
MODEL_FOLDER = "model"
#: The per-request generation values, each an optional input of this dtype and dims (generate.py's).
VALUE_INPUTS: dict[str, tuple[str, list[int]]] = {
    "max_new_tokens": ("INT32", [1]),
    "do_sample": ("BOOL", [1]),
    "temperature": ("FP32", [1]),
    "top_k": ("INT32", [1]),
    "top_p": ("FP32", [1]),
    "repetition_penalty": ("FP32", [1]),
    "seed": ("INT64", [1]),
    "stop": ("STRING", [-1]),
}
#: Weight files one of which a folder holds (or the index of a sharded checkpoint).
WEIGHTS = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
#: Tokenizer files one of which a folder holds.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
#: config.json keys that hold a model's context length, by architecture.
CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "n_ctx", "seq_length")


class GenerateSettings(StepSettings):
    """Settings of ``builtin:generate``: a causal language model's generation, streamed token by token
    (a decoupled model: one response per token)."""

    model: str = Field(
        min_length=1,
        description="A Hugging Face causal LM folder (config.json, the weights, the tokenizer files, "
        "optionally generation_config.json), relative to the spec's directory; copied into the version "
        "directory as model/.",
    )
    max_new_tokens: int = Field(
        default=64,
        ge=1,
        le=INT32_MAX,
        description="Tokens generated for a request that does not say (cut to what the model's context "
        "leaves after the prompt).",
    )
    max_new_tokens_limit: int | None = Field(
        default=None,
        ge=1,
        le=INT32_MAX,
        description="The most max_new_tokens a request may ask; default: the model's context.",
    )
    do_sample: bool | None = Field(
        default=None,
        description="Sample (true) or take the likeliest token (false, greedy). Default: the folder's "
        "generation_config.json, else greedy.",
    )
    temperature: float | None = Field(
        default=None, gt=0, description="Sampling temperature; default: the folder's, else 1."
    )
    top_k: int | None = Field(
        default=None,
        ge=0,
        description="Sample among the k likeliest tokens (0: all); default: the folder's, else 50.",
    )
    top_p: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="Sample among the likeliest tokens whose probabilities add up to p; default: the folder's, else 1.",
    )
    repetition_penalty: float | None = Field(
        default=None, gt=0, description="transformers' repetition penalty (1: none); default: the folder's."
    )
    stop: list[str] | None = Field(
        default=None,
        description="Stop sequences: generation ends after the token that completes one (the text "
        "includes it, as transformers' stop_strings).",
    )
    full_text: bool = Field(
        default=False,
        description="Add the full_text output: the whole generated text, on the last token's response.",
    )
    skip_special_tokens: bool = Field(
        default=True, description="Leave special tokens (the end-of-sequence token) out of the text."
    )
    dtype: Literal["float32", "float16", "bfloat16", "auto"] = Field(
        default="float32",
        description="The weights' dtype when loaded (auto: the folder's); float16 and bfloat16 suit GPUs.",
    )
    threads: int | None = Field(
        default=None,
        ge=1,
        le=1024,
        description="torch's CPU threads in each instance; default: torch's own (every core). With several "
        "instances on one machine, give each a share.",
    )

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and any(not item for item in value):
            raise ValueError("holds an empty stop sequence; give non-empty ones")
        return value

    @model_validator(mode="after")
    def _within_limit(self) -> GenerateSettings:
        if self.max_new_tokens_limit is not None and self.max_new_tokens > self.max_new_tokens_limit:
            raise ValueError(
                f"max_new_tokens {self.max_new_tokens} is more than max_new_tokens_limit "
                f"{self.max_new_tokens_limit}; lower it or raise the limit"
            )
        return self


def model_folder_problems(folder: Path) -> tuple[list[str], int | None]:
    """What keeps a folder from being served as a causal LM (one line each, without the setting's name),
    and its context length from config.json (None when it gives none)."""
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        return [
            f"'{folder}' {what}; give a Hugging Face causal LM folder relative to the spec's directory"
        ], None
    try:
        config = read_json(folder / "config.json")
    except ValueError as reason:
        return [
            f"'{folder}' has no readable config.json ({reason}); save the model with save_pretrained"
        ], None
    if not isinstance(config, dict):
        return [f"'{folder}/config.json' is not a JSON object; save the model with save_pretrained"], None
    problems = []
    architectures = [str(a) for a in config.get("architectures") or []]
    causal = any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures) or not architectures
    if config.get("is_encoder_decoder") or not causal:
        kind = ", ".join(architectures) or "an encoder-decoder"
        problems.append(f"'{folder}' holds {kind}, not a causal language model (a ...ForCausalLM); give one")
    if not any((folder / name).is_file() for name in WEIGHTS):
        problems.append(
            f"'{folder}' has no weights ({' or '.join(WEIGHTS[::2])}); save the model with save_pretrained"
        )
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        problems.append(
            f"'{folder}' has no tokenizer (tokenizer.json); save the tokenizer into it with save_pretrained"
        )
    context = next(
        (config[k] for k in CONTEXT_KEYS if isinstance(config.get(k), int) and config[k] > 0), None
    )
    return problems, context


def generate_io(settings: GenerateSettings) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The config's inputs (the prompt, then the optional generation values) and outputs."""
    inputs: list[dict[str, Any]] = [{"name": "text_input", "dtype": "STRING", "dims": [1]}]
    inputs += [
        {"name": name, "dtype": dtype, "dims": list(dims), "optional": True}
        for name, (dtype, dims) in VALUE_INPUTS.items()
    ]
    outputs: list[dict[str, Any]] = [
        {"name": "text_output", "dtype": "STRING", "dims": [1]},
        {"name": "token_id", "dtype": "INT64", "dims": [1]},
    ]
    if settings.full_text:
        outputs.append({"name": "full_text", "dtype": "STRING", "dims": [1]})
    return inputs, outputs


def generate_parameters(settings: GenerateSettings) -> dict[str, str]:
    """The config's ``parameters`` generate.py reads back (the optional settings only when set)."""

    def text(value: Any) -> str:
        if isinstance(value, bool):
            return parameter_flag(value)
        if isinstance(value, list):
            return json.dumps(value, ensure_ascii=False)
        return str(value)

    parameters = {"model_folder": MODEL_FOLDER}
    for name in (
        "max_new_tokens",
        "max_new_tokens_limit",
        "do_sample",
        "temperature",
        "top_k",
        "top_p",
        "repetition_penalty",
        "stop",
        "full_text",
        "skip_special_tokens",
        "dtype",
        "threads",
    ):
        value = getattr(settings, name)
        if value is not None:
            parameters[name] = text(value)
    return parameters
