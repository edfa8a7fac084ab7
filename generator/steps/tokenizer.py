"""Built-in step ``tokenizer``: text to token ids with a Hugging Face ``tokenizer.json``, as a Triton
Python-backend model.

Input ``text`` (TYPE_STRING, dims [1]: one UTF-8 string per batch row). Outputs, each INT64 or INT32:
``input_ids``, ``attention_mask``, ``token_type_ids`` (the configured subset), dims [max_length] with
``padding: max_length`` or [-1] with ``padding: longest`` (padded to the longest text of each request),
padded on the ``padding_side`` and truncated on the ``truncation_side``, as transformers' tokenizer call
``tokenizer(texts, padding=..., truncation=..., max_length=...)`` returns them.

The settings arrive as the model config's ``parameters`` (strings): ``max_length``, ``padding``,
``truncation``, ``padding_side``, ``truncation_side``, ``add_special_tokens``, ``dtype``, ``outputs``
(comma-separated) and ``pad_token``; ``tokenizer.json`` lies in the version directory.

This file is copied into a model repository as ``model.py`` and runs in Triton's Python backend stub with
only numpy and the ``tokenizers`` package installed: it imports nothing from the package it ships in.
:class:`Tokenize` does the work without Triton.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

#: The file name of the tokenizer in the version directory.
TOKENIZER_FILE = "tokenizer.json"
OUTPUTS = ("input_ids", "attention_mask", "token_type_ids")
#: Pad tokens recognised by name among the tokenizer's special tokens when it has no padding section.
PAD_TOKENS = ("[PAD]", "<pad>", "<|pad|>", "<PAD>")
#: Tokens per text when neither the settings nor the tokenizer's truncation section give a length.
MAX_LENGTH = 128
#: Defaults; None: the tokenizer's own (its truncation and padding sections, else MAX_LENGTH and right).
DEFAULTS: dict[str, object] = {
    "max_length": None,
    "padding": "max_length",
    "truncation": True,
    "padding_side": None,
    "truncation_side": None,
    "add_special_tokens": True,
    "dtype": "INT64",
    "outputs": OUTPUTS,
    "pad_token": None,
}
_NUMPY = {"INT64": np.int64, "INT32": np.int32}


def _flag(value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got '{value}'")


def _padding(value: object) -> str:
    """transformers' padding spellings: true and longest pad to the longest text, max_length to max_length."""
    text = str(value).strip().lower()
    if text in ("true", "longest"):
        return "longest"
    if text == "max_length":
        return text
    raise ValueError(f"padding must be max_length or longest (true), got '{value}'")


def _truncation(value: object) -> bool:
    """transformers' truncation spellings for single texts: true, longest_first, only_first cut them."""
    text = str(value).strip().lower()
    if text in ("longest_first", "only_first"):
        return True
    if text == "do_not_truncate":
        return False
    return _flag(value)


def _side(name: str, value: object) -> str | None:
    if value is None:
        return None
    text = str(value).strip().lower()
    if text not in ("left", "right"):
        raise ValueError(f"{name} must be left or right, got '{value}'")
    return text


def _names(value: object) -> tuple[str, ...]:
    parts = value.split(",") if isinstance(value, str) else list(value)  # type: ignore[call-overload]
    names = tuple(str(part).strip() for part in parts if str(part).strip())
    unknown = [name for name in names if name not in OUTPUTS]
    if unknown or not names:
        raise ValueError(f"outputs must be some of {', '.join(OUTPUTS)}, got '{value}'")
    return names


class Tokenize:
    """Tokenize texts into fixed- or request-length arrays with a ``tokenizers.Tokenizer``.

    Args:
        settings: The step's settings, as strings (the config parameters) or plain values; missing ones
            take the defaults in :data:`DEFAULTS`.
        tokenizer_path: The ``tokenizer.json`` file.

    Calling it with a sequence of texts (str or UTF-8 bytes) returns ``{output name: array [rows, length]}``.
    With ``padding: max_length`` the length is ``max_length``; with ``longest`` it is the longest text's.

    Raises:
        ValueError: A setting is invalid, or the tokenizer has no pad token and none is set.
    """

    def __init__(self, settings: Mapping[str, object], tokenizer_path: str | Path) -> None:
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise ImportError(
                "the tokenizer step needs the Python package 'tokenizers' where it runs (in Triton's "
                "Python backend environment too): pip install tokenizers"
            ) from None

        merged = {**DEFAULTS, **{k: v for k, v in settings.items() if v is not None and v != ""}}
        self.padding = _padding(merged["padding"])
        self.truncation = _truncation(merged["truncation"])
        self.add_special_tokens = _flag(merged["add_special_tokens"])
        self.outputs = _names(merged["outputs"])
        padding_side = _side("padding_side", merged["padding_side"])
        truncation_side = _side("truncation_side", merged["truncation_side"])
        dtype = str(merged["dtype"]).upper().removeprefix("TYPE_")
        if dtype not in _NUMPY:
            raise ValueError(f"dtype must be INT64 or INT32, got '{merged['dtype']}'")
        self.dtype = np.dtype(_NUMPY[dtype])

        self._tokenizer = Tokenizer.from_file(str(tokenizer_path))
        kept = self._tokenizer.truncation or {}
        length = merged["max_length"] if merged["max_length"] is not None else kept.get("max_length")
        self.max_length = int(length) if length is not None else MAX_LENGTH  # type: ignore[call-overload]
        if self.max_length < 1:
            raise ValueError(f"max_length must be at least 1, got {self.max_length}")
        pad_token = merged["pad_token"]
        own = self._tokenizer.padding or {}
        pad_token = str(pad_token) if pad_token is not None else own.get("pad_token") or self._named_pad()
        if pad_token is None:
            raise ValueError(
                f"the tokenizer {tokenizer_path} has no pad token (no padding section, no special token "
                f"named {' or '.join(PAD_TOKENS)}), and padding needs one; set pad_token to one of its tokens"
            )
        pad_id = self._tokenizer.token_to_id(pad_token)
        if pad_id is None and own.get("pad_token") == pad_token:
            pad_id = own.get("pad_id")
        if pad_id is None:
            raise ValueError(f"pad_token '{pad_token}' is not in the vocabulary of {tokenizer_path}")
        self.pad_token, self.pad_id = pad_token, int(pad_id)
        self.padding_side = padding_side or str(own.get("direction", "right")).lower()
        self.truncation_side = truncation_side or str(kept.get("direction", "right")).lower()
        self._tokenizer.enable_padding(
            direction=self.padding_side,
            pad_id=self.pad_id,
            pad_type_id=int(own.get("pad_type_id", 0)),
            pad_token=pad_token,
            length=self.max_length if self.padding == "max_length" else None,
        )
        if self.truncation:  # a single text: longest_first, as transformers' truncation=True
            self._tokenizer.enable_truncation(
                self.max_length, strategy="longest_first", direction=self.truncation_side
            )
        else:
            self._tokenizer.no_truncation()

    def _named_pad(self) -> str | None:
        special = {
            token.content for token in self._tokenizer.get_added_tokens_decoder().values() if token.special
        }
        return next((name for name in PAD_TOKENS if name in special), None)

    def __call__(self, texts: Sequence[str | bytes]) -> dict[str, np.ndarray]:
        """Tokenize ``texts``; raise ValueError naming the row of a text that cannot be tokenized."""
        decoded = []
        for row, text in enumerate(texts):
            try:
                decoded.append(text.decode("utf-8") if isinstance(text, bytes) else str(text))
            except UnicodeDecodeError as error:
                raise ValueError(f"batch row {row}: the text is not valid UTF-8 ({error.reason})") from None
        encodings = self._tokenizer.encode_batch(decoded, add_special_tokens=self.add_special_tokens)
        if self.padding == "max_length":
            for row, encoding in enumerate(encodings):
                if len(encoding.ids) > self.max_length:
                    raise ValueError(
                        f"batch row {row}: {len(encoding.ids)} tokens, more than max_length {self.max_length}; "
                        "set truncation: true or raise max_length"
                    )
        fields = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}
        width = len(encodings[0].ids) if encodings else 0
        return {
            name: np.array(
                [getattr(encoding, fields[name]) for encoding in encodings], dtype=self.dtype
            ).reshape(len(encodings), width)
            for name in self.outputs
        }


def _parameters(config: dict) -> dict[str, str]:
    return {
        key: entry["string_value"]
        for key, entry in (config.get("parameters") or {}).items()
        if isinstance(entry, dict) and "string_value" in entry
    }


class TritonPythonModel:
    """Serves :class:`Tokenize`: one ``encode_batch`` for all the requests of an execution when the
    arrays have a fixed length, one per request with ``padding: longest``."""

    def initialize(self, args: dict) -> None:
        """Load ``tokenizer.json`` from the version directory and apply the config's parameters."""
        config = json.loads(args["model_config"])
        self._name = args["model_name"]
        # Without batching (max_batch_size 0) a request holds one text, and its outputs have no row axis.
        self._batched = int(config.get("max_batch_size") or 0) > 0
        path = Path(args["model_repository"]) / str(args["model_version"]) / TOKENIZER_FILE
        self._tokenize = Tokenize(_parameters(config), path)

    def execute(self, requests: list) -> list:
        """Tokenize the requests' texts; a request whose text cannot be tokenized fails alone."""
        import triton_python_backend_utils as pb_utils

        responses: list = [None] * len(requests)
        texts = [
            pb_utils.get_input_tensor_by_name(request, "text").as_numpy().reshape(-1).tolist()
            for request in requests
        ]
        together = self._tokenize.padding == "max_length" and len(requests) > 1
        if together:
            try:
                outputs = self._tokenize([text for rows in texts for text in rows])
            except Exception:
                together = False  # some request fails: run each alone so the others still succeed
            else:
                start = 0
                for index, rows in enumerate(texts):
                    part = {name: array[start : start + len(rows)] for name, array in outputs.items()}
                    responses[index] = self._response(pb_utils, requests[index], part)
                    start += len(rows)
        if not together:
            for index, rows in enumerate(texts):
                try:
                    responses[index] = self._response(pb_utils, requests[index], self._tokenize(rows))
                except Exception as error:  # this request's error response
                    responses[index] = self._error(pb_utils, error)
        return responses

    def _response(self, pb_utils, request, outputs: dict[str, np.ndarray]):
        wanted = set(request.requested_output_names() or outputs)
        if not self._batched:
            outputs = {name: array[0] for name, array in outputs.items()}
        return pb_utils.InferenceResponse(
            output_tensors=[pb_utils.Tensor(name, array) for name, array in outputs.items() if name in wanted]
        )

    def _error(self, pb_utils, error: BaseException):
        text = " ".join(str(error).split())
        if not isinstance(error, ValueError):
            text = f"{type(error).__name__}: {text}"
        return pb_utils.InferenceResponse(error=pb_utils.TritonError(f"model '{self._name}': {text}"))
