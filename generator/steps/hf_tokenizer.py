"""Hugging Face tokenizers as the tokenizer step takes them: a model folder, or a transformers tokenizer.

A model folder gives the step its ``tokenizer.json`` and the settings transformers reads from the folder
(:func:`tokenizer_settings_from_folder`: padding and truncation sides, pad token, ``model_max_length``
capped by ``config.json``'s ``max_position_embeddings``, ``model_input_names``). A folder with only a slow
tokenizer's files (``vocab.txt``, ``vocab.json`` + ``merges.txt``, a SentencePiece ``.model``) is converted
once with transformers (:func:`folder_tokenizer_json`); a ``PreTrainedTokenizerFast`` a factory returns is
saved with its own padding and truncation settings in the file's sections (:func:`fast_tokenizer_json`).

Files made here (converted tokenizers, inline label lists) live in a content-addressed cache
(:func:`cached_file`), so the same input gives the same file, made once. Nothing here runs in Triton; the
step files never import it. transformers is imported only where a conversion or a class default needs it.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

from generator.core.errors import MissingDependencyError, SpecError
from generator.core.jsonfile import read_json

#: The output names the tokenizer step can produce, in transformers' order for BERT.
TEXT_INPUTS = ("input_ids", "token_type_ids", "attention_mask")
#: transformers' ``model_max_length`` when a tokenizer has no bound (``VERY_LARGE_INTEGER``, int(1e30)).
_UNBOUNDED = 10**29
#: Files of slow (Python or SentencePiece) tokenizers that transformers can convert to a fast one.
SLOW_FILES = (
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
)
#: The folder files that shape a converted tokenizer (with the slow files and any ``*.model``).
_CONFIG_FILES = ("tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "config.json")


def tokenizer_settings_from_folder(path: Path) -> dict[str, Any]:
    """The tokenizer step's settings a Hugging Face model folder implies, as transformers reads them.

    From ``tokenizer_config.json`` and ``special_tokens_map.json``: ``padding_side``, ``truncation_side``,
    ``pad_token`` and ``outputs`` (the ``model_input_names``, else the tokenizer class's default); from
    ``model_max_length`` when it is a real bound, capped by ``config.json``'s ``max_position_embeddings``:
    ``max_length``. Only what the folder says is returned, with ``tokenizer`` set to the folder.

    Args:
        path: The model folder.

    Returns:
        Plain values valid for :class:`generator.steps.TokenizerSettings`.

    Raises:
        SpecError: The folder does not exist, or one of its JSON files is not valid JSON.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise SpecError(f"step.tokenizer: '{folder}' is not a folder; give a Hugging Face model folder")
    config = _json_file(folder / "tokenizer_config.json")
    special = _json_file(folder / "special_tokens_map.json")
    model = _json_file(folder / "config.json")
    settings: dict[str, Any] = {"tokenizer": str(folder)}
    lengths = [
        value
        for value in (config.get("model_max_length"), model.get("max_position_embeddings"))
        if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < _UNBOUNDED
    ]
    if lengths:
        settings["max_length"] = int(min(lengths))
    for side in ("padding_side", "truncation_side"):
        if config.get(side) in ("left", "right"):
            settings[side] = config[side]
    pad_token = _token(special.get("pad_token")) or _token(config.get("pad_token"))
    if pad_token:
        settings["pad_token"] = pad_token
    names = config.get("model_input_names")
    if not isinstance(names, list):
        names = _class_input_names(config.get("tokenizer_class"))
    outputs = [name for name in names or [] if name in TEXT_INPUTS]
    if outputs:
        settings["outputs"] = list(dict.fromkeys(outputs))
    return settings


def folder_tokenizer_json(folder: Path) -> Path:
    """The ``tokenizer.json`` of a model folder: its own, or one converted from a slow tokenizer's files.

    The conversion loads the folder with transformers' ``AutoTokenizer`` (``use_fast=True``, local files
    only, no remote code) and saves its backend tokenizer; it is made once per folder content.

    Raises:
        SpecError: The folder holds no tokenizer files, or transformers cannot make a fast tokenizer of them.
        MissingDependencyError: A conversion is needed and transformers is not installed.
    """
    own = folder / "tokenizer.json"
    if own.is_file():
        return own
    files = sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and (p.name in SLOW_FILES or p.name in _CONFIG_FILES or p.suffix == ".model")
    )
    if not any(p.name in SLOW_FILES or p.suffix == ".model" for p in files):
        raise SpecError(
            f"step.tokenizer: '{folder}' holds no tokenizer.json and no slow tokenizer files "
            f"({', '.join(SLOW_FILES)}); give a Hugging Face model folder with its tokenizer, or a tokenizer.json"
        )
    try:
        import transformers
    except ImportError:
        raise MissingDependencyError.for_package(
            "transformers", "huggingface", f"to convert the slow tokenizer in '{folder}' to tokenizer.json"
        ) from None
    digest = hashlib.sha256(f"transformers {transformers.__version__}\n".encode())
    for path in files:
        digest.update(f"{path.name}\n".encode() + hashlib.sha256(path.read_bytes()).digest())
    key = digest.hexdigest()
    found = _cache_dir() / key[:32] / "tokenizer.json"
    if found.is_file():
        return found
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(
            str(folder), use_fast=True, local_files_only=True, trust_remote_code=False
        )
    except Exception as error:  # transformers raises many kinds for a folder it cannot read
        reason = " ".join(str(error).split())[:300]
        raise SpecError(
            f"step.tokenizer: transformers cannot load a tokenizer from '{folder}' ({type(error).__name__}: "
            f"{reason}); give a folder transformers loads, or its tokenizer.json"
        ) from None
    text = fast_tokenizer_json(tokenizer)
    if text is None:
        raise SpecError(
            f"step.tokenizer: transformers loads '{folder}' as {type(tokenizer).__name__}, which has no fast "
            "(tokenizers) form; save a tokenizer.json for it"
        )
    return cached_file("tokenizer.json", text.encode("utf-8"), key=key)


def fast_tokenizer_json(tokenizer: Any) -> str | None:
    """A transformers fast tokenizer (``PreTrainedTokenizerFast``) as ``tokenizer.json`` text, or None for
    any other object.

    The tokenizer is not changed: a copy of its backend gets its padding section (padding side, pad token,
    pad type id; none without a pad token) and its truncation section (``model_max_length`` when it is a
    real bound, the truncation side), which the step takes as the tokenizer's own settings.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or not callable(getattr(backend, "to_str", None)):
        return None
    from tokenizers import Tokenizer

    copy = Tokenizer.from_str(backend.to_str())
    pad_token, pad_id = getattr(tokenizer, "pad_token", None), getattr(tokenizer, "pad_token_id", None)
    if isinstance(pad_token, str) and isinstance(pad_id, int):
        copy.enable_padding(
            direction=str(getattr(tokenizer, "padding_side", "right")),
            pad_id=pad_id,
            pad_type_id=int(getattr(tokenizer, "pad_token_type_id", 0) or 0),
            pad_token=pad_token,
        )
    else:
        copy.no_padding()
    bound = getattr(tokenizer, "model_max_length", None)
    if isinstance(bound, int) and 0 < bound < _UNBOUNDED:
        copy.enable_truncation(bound, direction=str(getattr(tokenizer, "truncation_side", "right")))
    else:
        copy.no_truncation()
    return copy.to_str(pretty=True)


def cached_file(name: str, data: bytes, key: str | None = None) -> Path:
    """A file named ``name`` holding ``data`` in the cache, written once (atomically) per key.

    Args:
        name: The file's name.
        data: Its content.
        key: What the file is made from (default: the content's SHA-256).
    """
    key = key or hashlib.sha256(data).hexdigest()
    target = _cache_dir() / key[:32] / name
    if target.is_file() and target.read_bytes() == data:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target


def _cache_dir() -> Path:
    """``$XDG_CACHE_HOME/tritongen/steps`` (``~/.cache/tritongen/steps`` by default)."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "tritongen" / "steps"


def _json_file(path: Path) -> dict[str, Any]:
    """A folder's JSON file as a mapping ({} when it is absent); SpecError when it is not JSON."""
    if not path.is_file():
        return {}
    try:
        data = read_json(path)
    except ValueError as reason:
        raise SpecError(f"step.tokenizer: '{path}' is not valid JSON ({reason}); fix or remove it") from None
    return data if isinstance(data, dict) else {}


def _token(value: Any) -> str | None:
    """A special token as a config writes it: its text, or an AddedToken's ``content``."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) and value else None


def _class_input_names(name: Any) -> list[str] | None:
    """The default ``model_input_names`` of the transformers tokenizer class ``name`` (None if unknown)."""
    if not isinstance(name, str) or not name.isidentifier():
        return None
    try:
        import transformers
    except ImportError:
        return None
    try:
        found = getattr(transformers, name, None)
    except Exception:  # transformers' lazy module raises when an optional backend is missing
        return None
    names = getattr(found, "model_input_names", None)
    return [str(n) for n in names] if isinstance(names, (list, tuple)) else None
