"""The tokenizer step's settings (``source: builtin:tokenizer``): :class:`TokenizerSettings`, validated as a
spec is loaded. What they become in a model config (the tokenizer.json's own padding, truncation and pad
token filling what is unset) is :func:`generator.steps.step_definition`'s.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from generator.steps.base_settings import INT64_MAX, StepSettings, canonical_name

__all__ = ["DEFAULT_MAX_LENGTH", "PAD_TOKENS", "TOKENIZER_OUTPUTS", "TokenizerSettings"]

#: The outputs the tokenizer step can produce, in the order it gives them by default.
TOKENIZER_OUTPUTS = ("input_ids", "attention_mask", "token_type_ids")
#: Tokens per text when neither the settings, the folder nor the tokenizer.json give a length.
DEFAULT_MAX_LENGTH = 128
#: Pad tokens recognised by name among a tokenizer's special tokens (tokenizer.py has the same list).
PAD_TOKENS = ("[PAD]", "<pad>", "<|pad|>", "<PAD>")


class TokenizerSettings(StepSettings):
    """Settings of ``builtin:tokenizer``: text (TYPE_STRING [1]) to token ids with a Hugging Face tokenizer
    (a ``tokenizer.json`` or a model folder), as transformers' tokenizer call returns them."""

    tokenizer: str = Field(
        min_length=1,
        description="A Hugging Face tokenizer.json, or a model folder (its tokenizer.json; a folder with only "
        "a slow tokenizer's files, vocab.txt say, is converted with transformers at build time), relative "
        "to the spec's directory; or file.py:function returning a tokenizers.Tokenizer or a transformers "
        "PreTrainedTokenizerFast. Saved as tokenizer.json in the version directory.",
    )
    max_length: int | None = Field(
        default=None,
        ge=1,
        le=INT64_MAX,
        description="Tokens per text: the output length with padding max_length, the truncation length. "
        "Default: a folder's model_max_length (capped by config.json's max_position_embeddings), else the "
        f"tokenizer.json's truncation length, else {DEFAULT_MAX_LENGTH}.",
    )
    padding: Literal["max_length", "longest"] = Field(
        default="max_length",
        description="max_length: every output has max_length tokens (fixed shapes batch well downstream); "
        "longest (or true): dims [-1], padded to the longest text of each request.",
    )
    truncation: bool = Field(
        default=True,
        description="Cut texts to max_length tokens (true, longest_first, only_first; false, do_not_truncate "
        "do not). Without it, with padding max_length, a longer text fails its request.",
    )
    padding_side: Literal["left", "right"] | None = Field(
        default=None,
        description="Where the pad tokens go. Default: the tokenizer's own (a folder's tokenizer_config.json, "
        "else the tokenizer.json's padding section, else right).",
    )
    truncation_side: Literal["left", "right"] | None = Field(
        default=None,
        description="Which end truncation cuts. Default: the tokenizer's own (a folder's "
        "tokenizer_config.json, else the tokenizer.json's truncation section, else right).",
    )
    add_special_tokens: bool = Field(
        default=True, description="Add the tokenizer's special tokens ([CLS], [SEP], ...)."
    )
    dtype: Literal["INT64", "INT32"] = Field(default="INT64", description="Data type of the outputs.")
    outputs: list[Literal["input_ids", "attention_mask", "token_type_ids"]] | None = Field(
        default=None,
        min_length=1,
        description="The outputs to produce, some of input_ids, attention_mask, token_type_ids. Default: a "
        "folder's model_input_names (what the model takes), else all three.",
    )
    pad_token: str | None = Field(
        default=None,
        min_length=1,
        description="The token to pad with. Default: the tokenizer's own (a folder's pad_token, else the "
        f"tokenizer.json's padding section, else a special token named {', '.join(PAD_TOKENS)}).",
    )

    @field_validator("dtype", mode="before")
    @classmethod
    def _dtype(cls, value: Any) -> Any:
        return canonical_name(value)

    @field_validator("padding", mode="before")
    @classmethod
    def _padding(cls, value: Any) -> Any:
        if value is True or value == "true":
            return "longest"
        if value is False or value in ("false", "do_not_pad"):
            raise ValueError(
                "no padding (false, do_not_pad) leaves the texts of a batch at different lengths, and a "
                "served batch needs one shape; use longest (true) or max_length"
            )
        return value

    @field_validator("truncation", mode="before")
    @classmethod
    def _truncation(cls, value: Any) -> Any:
        if value in ("longest_first", "only_first"):
            return True
        if value == "do_not_truncate":
            return False
        if value == "only_second":
            raise ValueError(
                "only_second truncates the second text of a pair, and this step tokenizes single texts "
                "(transformers fails on them); use true (longest_first) or false"
            )
        return value

    @field_validator("outputs")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("names an output twice; list each once")
        return value
