"""Built-in step ``generate``: a causal language model's generation loop, streamed token by token, as a
decoupled Triton Python-backend model.

Input ``text_input`` (TYPE_STRING [1]: the prompt). Each generated token is sent as soon as it is produced,
one response per token: ``text_output`` (TYPE_STRING [1], the text the token adds) and ``token_id``
(INT64 [1]); the last token's response carries Triton's final flag and, with the ``full_text`` setting,
``full_text`` (TYPE_STRING [1], the whole generated text). A request that ends without a last token (the
client cancelled it, a criterion of the folder's own) ends with an empty final response. The pieces
concatenated are the generated tokens decoded together (a character split across tokens arrives with the
token that completes it).

Generation is transformers' ``generate`` with a streamer (the model's ``generation_config.json`` under the
step's settings under the request's values), so its tokens are transformers' own for the same arguments.
The per-request values are optional inputs or request parameters of the same names: ``max_new_tokens``
(INT32), ``do_sample`` (BOOL; false is greedy), ``temperature``, ``top_p`` (FP32), ``top_k`` (INT32),
``repetition_penalty`` (FP32), ``seed`` (INT64: seeds sampling, so one seed gives one answer) and ``stop``
(TYPE_STRING [-1]: stop sequences; as a request parameter one sequence, or a JSON list of them).
Generation ends after the token that completes a stop sequence (the text includes it, as transformers'
``stop_strings``), at an end-of-sequence token (sent too, with an empty text), or after
``max_new_tokens``. A bad value fails its request with one line naming the value and the fix.

The settings arrive as the model config's ``parameters`` (strings): ``model_folder`` (the Hugging Face
causal LM folder in the version directory: config.json, weights, tokenizer files), ``max_new_tokens``
(the default per request), ``max_new_tokens_limit`` (the most a request may ask), the defaults of the
generation values above, ``full_text``, ``skip_special_tokens``, ``dtype`` (float32, float16, bfloat16,
auto) and ``threads`` (torch's threads in this instance). The model runs on the instance's GPU for
``KIND_GPU`` instances, else on the CPU.

This file is copied into a model repository as ``model.py`` and runs in Triton's Python backend stub with
numpy, torch and transformers (4.56 or later) installed: it imports nothing from the package it ships in.
:class:`Generate` does the work without Triton.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

#: The folder of the model in the version directory.
MODEL_FOLDER = "model"
INPUT = "text_input"
TEXT_OUTPUT = "text_output"
TOKEN_OUTPUT = "token_id"
FULL_TEXT_OUTPUT = "full_text"
#: The generation values a request may send (optional inputs or request parameters): name -> kind.
VALUES = {
    "max_new_tokens": "count",
    "do_sample": "flag",
    "temperature": "positive",
    "top_k": "natural",
    "top_p": "fraction",
    "repetition_penalty": "positive",
    "seed": "natural",
    "stop": "texts",
}
#: Their Triton data types as optional inputs.
VALUE_DTYPES = {
    "max_new_tokens": "INT32",
    "do_sample": "BOOL",
    "temperature": "FP32",
    "top_k": "INT32",
    "top_p": "FP32",
    "repetition_penalty": "FP32",
    "seed": "INT64",
    "stop": "STRING",
}
#: Sent only when sampling; greedy decoding ignores them (as transformers does).
SAMPLING = ("temperature", "top_k", "top_p", "seed")
MAX_NEW_TOKENS = 64
DTYPES = ("float32", "float16", "bfloat16", "auto")
_INT64_MAX = 2**63 - 1


def _flag(value: object) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got '{value}'")


def _integer(value: object) -> int:
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"expected a whole number, got {value}")
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return int(value)
    try:
        return int(str(value).strip())
    except ValueError:
        raise ValueError(f"expected a whole number, got '{value}'") from None


def _number(value: object) -> float:
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"expected a number, got {value}")
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"expected a number, got '{value}'") from None
    if not math.isfinite(number):
        raise ValueError(f"expected a finite number, got {value}")
    return number


def _texts(value: object) -> tuple[str, ...]:
    """Stop sequences: a list of strings, or one string (a JSON list of strings counts as that list)."""
    if isinstance(value, (str, bytes)):
        text = value.decode("utf-8") if isinstance(value, bytes) else value
        if text.startswith("["):
            try:
                listed = json.loads(text)
            except json.JSONDecodeError:
                listed = None
            if isinstance(listed, list) and all(isinstance(item, str) for item in listed):
                return _texts(listed)
        items = [text]
    elif isinstance(value, (list, tuple, np.ndarray)):
        items = [
            v.decode("utf-8") if isinstance(v, bytes) else v for v in np.asarray(value).reshape(-1).tolist()
        ]
    else:
        raise ValueError(f"expected stop sequences, got {value!r}")
    if not all(isinstance(item, str) for item in items):
        raise ValueError("expected stop sequences as strings")
    if any(item == "" for item in items):
        raise ValueError("holds an empty stop sequence; send non-empty ones")
    return tuple(items)


def check_value(name: str, value: object) -> Any:
    """A generation value converted and checked: ``ValueError`` with one line naming it and the fix."""
    kind = VALUES.get(name)
    if kind is None:
        raise ValueError(f"unknown generation value '{name}'; send some of {', '.join(VALUES)}")
    try:
        if kind == "flag":
            return _flag(value)
        if kind == "texts":
            return _texts(value)
        if kind in ("count", "natural"):
            number: Any = _integer(value)
            low, high = (1, 2**31 - 1) if kind == "count" else (0, _INT64_MAX)
            if not low <= number <= high:
                raise ValueError(f"must be between {low} and {high} (got {number})")
            return number
        number = _number(value)
        if kind == "fraction" and not 0 < number <= 1:
            raise ValueError(f"must be greater than 0 and at most 1 (got {number:g})")
        if kind == "positive" and number <= 0:
            hint = "; for greedy decoding send do_sample false" if name == "temperature" else ""
            raise ValueError(f"must be greater than 0 (got {number:g}){hint}")
        return number
    except ValueError as error:
        raise ValueError(f"{name}: {error}") from None


def _count(name: str, value: object) -> int:
    """A setting that counts something (at least 1)."""
    try:
        number = _integer(value)
    except ValueError as error:
        raise ValueError(f"{name}: {error}") from None
    if number < 1:
        raise ValueError(f"{name}: must be at least 1 (got {number})")
    return number


# NamedTuples, not dataclasses: a dataclass needs its module in sys.modules, and the build imports this
# file without registering it there.
class Token(NamedTuple):
    """One generated token as streamed: its id, the text it adds, whether it is the last and, on the last,
    every generated token decoded together."""

    token_id: int
    text: str
    last: bool = False
    full_text: str | None = None


class Plan(NamedTuple):
    """One request's generation: the prompt's token ids and transformers' ``generate`` arguments."""

    prompt_ids: list[int]
    max_new_tokens: int
    arguments: dict[str, Any]
    stop: tuple[str, ...] = ()
    seed: int | None = None


class IncrementalDecoder:
    """The text each new token adds to a growing sequence; the pieces concatenated are the sequence
    decoded whole. A token that ends inside a character adds nothing until the character is complete.

    Each step decodes only the tokens since the last emitted piece, with one token of context before them
    (so tokenizers that drop a leading space at the start of a decode keep it).
    """

    def __init__(self, tokenizer: Any, skip_special_tokens: bool = True) -> None:
        self._tokenizer = tokenizer
        self._skip = skip_special_tokens
        self.ids: list[int] = []
        self._context = 0  # where the decoded window starts
        self._emitted = 0  # tokens whose text has been emitted

    def _decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=self._skip)

    def push(self, token_id: int) -> str:
        """Add a token; the text it completes ("" while a character is incomplete)."""
        self.ids.append(token_id)
        before = self._decode(self.ids[self._context : self._emitted])
        after = self._decode(self.ids[self._context :])
        if len(after) <= len(before) or after.endswith("\ufffd"):
            return ""
        self._context, self._emitted = self._emitted, len(self.ids)
        return after[len(before) :]

    def flush(self) -> str:
        """The text still held back (an incomplete character, decoded as the replacement character)."""
        before = self._decode(self.ids[self._context : self._emitted])
        after = self._decode(self.ids[self._context :])
        self._context = self._emitted = len(self.ids)
        return after[len(before) :]


class Generate:
    """A Hugging Face causal LM folder's generation, streamed token by token.

    Args:
        folder: The model folder (config.json, weights, tokenizer files).
        settings: The step's settings, as strings (the config parameters) or plain values:
            ``max_new_tokens`` (default 64), ``max_new_tokens_limit``, defaults of the generation values
            (``do_sample``, ``temperature``, ...), ``skip_special_tokens`` (default true), ``dtype``
            (float32 default, float16, bfloat16, auto) and ``threads``.
        device: Where the model runs (``cpu``, ``cuda:0``).

    Raises:
        ValueError: A setting is invalid.
    """

    def __init__(
        self, folder: str | Path, settings: Mapping[str, object] | None = None, device: str = "cpu"
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        merged = {k: v for k, v in (settings or {}).items() if v is not None and v != ""}
        self.max_new_tokens = check_value("max_new_tokens", merged.pop("max_new_tokens", MAX_NEW_TOKENS))
        limit = merged.pop("max_new_tokens_limit", None)
        self.limit = None if limit is None else _count("max_new_tokens_limit", limit)
        self.skip_special_tokens = _flag(merged.pop("skip_special_tokens", True))
        dtype = str(merged.pop("dtype", "float32")).lower()
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got '{dtype}'")
        threads = merged.pop("threads", None)
        if threads is not None:
            torch.set_num_threads(_count("threads", threads))
        self.defaults = {name: check_value(name, merged[name]) for name in VALUES if name in merged}
        self._torch = torch
        self.device = device
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        chosen = "auto" if dtype == "auto" else getattr(torch, dtype)
        self.model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=chosen).to(device).eval()
        config = self.model.generation_config
        eos = config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [] if eos is None else [eos])
        if config.pad_token_id is None and self.eos_ids:
            config.pad_token_id = min(self.eos_ids)  # what generate picks (and warns about) every call
        self.context = getattr(self.model.config, "max_position_embeddings", None)

    def plan(self, prompt: str, values: Mapping[str, object] | None = None) -> Plan:
        """Tokenize a prompt and check a request's generation values (over the settings' defaults).

        Raises:
            ValueError: A value is unknown or invalid, or the prompt leaves no room to generate.
        """
        given = {name: check_value(name, value) for name, value in (values or {}).items()}
        merged = {**self.defaults, **given}
        ids = self.tokenizer(prompt)["input_ids"]
        if not ids:
            bos = self.tokenizer.bos_token_id
            if bos is None:
                raise ValueError(
                    f"{INPUT}: the prompt is empty and the tokenizer has no start token; send text"
                )
            ids = [bos]
        wanted = merged.get("max_new_tokens", self.max_new_tokens)
        if self.limit is not None and wanted > self.limit:
            raise ValueError(
                f"max_new_tokens: {wanted} is more than this model allows ({self.limit}); ask fewer"
            )
        if self.context is not None:
            room = self.context - len(ids)
            if room < 1 or ("max_new_tokens" in merged and wanted > room):
                raise ValueError(
                    f"max_new_tokens: the prompt's {len(ids)} tokens and {wanted} new ones exceed the model's "
                    f"{self.context}-token context; send a shorter prompt or fewer max_new_tokens"
                )
            wanted = min(wanted, room)
        sampling = merged.get("do_sample", bool(self.model.generation_config.do_sample))
        arguments: dict[str, Any] = {"max_new_tokens": wanted, "do_sample": sampling}
        for name in ("temperature", "top_k", "top_p", "repetition_penalty"):
            if name in merged and (sampling or name not in SAMPLING):
                arguments[name] = merged[name]
        seed = merged.get("seed") if sampling else None
        return Plan(ids, wanted, arguments, merged.get("stop", ()), seed)

    def run(self, plan: Plan, on_token: Callable[[Token], bool | None] | None = None) -> list[Token]:
        """Generate, calling ``on_token`` with each token as it is produced.

        ``on_token`` returning False stops the generation after that token (a client that went away).
        Returns the tokens generated.
        """
        from transformers import StoppingCriteria, StoppingCriteriaList, StopStringCriteria

        torch = self._torch
        decoder = IncrementalDecoder(self.tokenizer, self.skip_special_tokens)
        stops = StopStringCriteria(self.tokenizer, list(plan.stop)) if plan.stop else None
        state = {"stopped": False, "skip": True}
        tokens: list[Token] = []

        class _Stopped(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                return torch.full(
                    (input_ids.shape[0],), state["stopped"], dtype=torch.bool, device=input_ids.device
                )

        def put(value: Any) -> None:
            if state["skip"]:  # generate hands the streamer the prompt first
                state["skip"] = False
                return
            for token_id in value.reshape(-1).tolist():
                if state["stopped"]:
                    return
                tokens.append(self._token(token_id, decoder, plan, stops))
                proceed = on_token(tokens[-1]) if on_token is not None else None
                state["stopped"] = tokens[-1].last or proceed is False

        streamer = type("_Streamer", (), {"put": staticmethod(put), "end": staticmethod(lambda: None)})()
        criteria = StoppingCriteriaList([_Stopped()] + ([stops] if stops is not None else []))
        if plan.seed is not None:
            torch.manual_seed(plan.seed)
        ids = torch.tensor([plan.prompt_ids], device=self.device)
        with torch.inference_mode():
            self.model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                streamer=streamer,
                stopping_criteria=criteria,
                **plan.arguments,
            )
        return tokens

    def _token(self, token_id: int, decoder: IncrementalDecoder, plan: Plan, stops: Any) -> Token:
        """The token streamed for ``token_id``: its text and whether generation ends with it."""
        text = decoder.push(token_id)
        last = len(decoder.ids) >= plan.max_new_tokens or token_id in self.eos_ids
        if not last and stops is not None:
            sequence = self._torch.tensor([plan.prompt_ids + decoder.ids])
            last = bool(stops(sequence, None)[0])
        if not last:
            return Token(token_id, text)
        whole = self.tokenizer.decode(decoder.ids, skip_special_tokens=self.skip_special_tokens)
        return Token(token_id, text + decoder.flush(), True, whole)

    def text(self, tokens: list[Token]) -> str:
        """The generated tokens decoded together."""
        return self.tokenizer.decode(
            [t.token_id for t in tokens], skip_special_tokens=self.skip_special_tokens
        )

    def __call__(self, prompt: str, **values: object) -> list[Token]:
        """Generate for a prompt with these generation values; the tokens."""
        return self.run(self.plan(prompt, values))


def _parameters(config: dict) -> dict[str, str]:
    return {
        key: entry["string_value"]
        for key, entry in (config.get("parameters") or {}).items()
        if isinstance(entry, dict) and "string_value" in entry
    }


def request_values(inputs: Mapping[str, np.ndarray], parameters: Mapping[str, object]) -> dict[str, object]:
    """A request's generation values from its optional inputs and its parameters.

    Raises:
        ValueError: An unknown parameter, a value given both ways, or an input with more than one value.
    """
    values: dict[str, object] = {}
    for name, array in inputs.items():
        flat = np.asarray(array).reshape(-1)
        if name == "stop":
            values[name] = flat
            continue
        if flat.size != 1:
            raise ValueError(f"{name}: send one value, got {flat.size}")
        item = flat[0]
        values[name] = item.decode("utf-8") if isinstance(item, bytes) else item.item()
    for name, value in parameters.items():
        if name.startswith("triton_"):  # the protocol's own (an empty final response, ...)
            continue
        if name not in VALUES:
            raise ValueError(
                f"unknown request parameter '{name}'; the generation values are {', '.join(VALUES)}"
            )
        if name in values:
            raise ValueError(f"{name}: sent both as an input and as a request parameter; send it once")
        values[name] = value
    return values


class TritonPythonModel:
    """Serves :class:`Generate` in decoupled mode: each request's tokens are sent as they are produced."""

    def initialize(self, args: dict) -> None:
        """Load the model folder from the version directory, on the instance's GPU for KIND_GPU."""
        import triton_python_backend_utils as pb_utils

        config = json.loads(args["model_config"])
        self._name = args["model_name"]
        if not pb_utils.using_decoupled_model_transaction_policy(config):
            raise pb_utils.TritonModelException(
                f"model '{self._name}': the generate step streams many responses per request; set "
                "model_transaction_policy { decoupled: true } in its config (decoupled: true in the spec)"
            )
        self._batched = int(config.get("max_batch_size") or 0) > 0
        self._full_text = any(o.get("name") == FULL_TEXT_OUTPUT for o in config.get("output") or [])
        settings = _parameters(config)
        folder = (
            Path(args["model_repository"])
            / str(args["model_version"])
            / settings.pop("model_folder", MODEL_FOLDER)
        )
        settings.pop("full_text", None)
        device = "cpu"
        if args.get("model_instance_kind") == "GPU":
            device = f"cuda:{args.get('model_instance_device_id', 0)}"
        self._generate = Generate(folder, settings, device)
        self._generate(" ", max_new_tokens=1)  # the first forward's one-off costs, not the first request's

    def execute(self, requests: list) -> None:
        """Generate for each request in turn, streaming its tokens; returns None (decoupled)."""
        import triton_python_backend_utils as pb_utils

        for request in requests:
            self._serve(pb_utils, request)
        return None

    def _serve(self, pb_utils, request) -> None:
        sender = request.get_response_sender()
        final = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
        sent = {"final": False, "cancelled": False}
        try:
            plan = self._plan(pb_utils, request)
        except ValueError as error:
            sender.send(self._error(pb_utils, error, invalid=True), flags=final)
            return

        def send(token: Token) -> bool:
            # Never ask after the final response: Triton 2.51 frees the request's response factory then,
            # and asking crashes the server.
            if sender.is_cancelled():
                sent["cancelled"] = True
                return False
            sender.send(self._response(pb_utils, token), flags=final if token.last else 0)
            sent["final"] = token.last
            return True

        try:
            tokens = self._generate.run(plan, send)
        except Exception as error:  # the request fails; the model stays up for the next
            if not sent["final"]:
                sender.send(self._error(pb_utils, error), flags=final)
            return
        if not sent["final"]:
            sender.send(flags=final)
        if sent["cancelled"]:
            pb_utils.Logger.log_info(
                f"model '{self._name}': request cancelled by its client; generation stopped after "
                f"{len(tokens)} tokens"
            )

    def _plan(self, pb_utils, request) -> Plan:
        prompt_tensor = pb_utils.get_input_tensor_by_name(request, INPUT)
        prompts = prompt_tensor.as_numpy().reshape(-1) if prompt_tensor is not None else []
        if len(prompts) != 1:
            raise ValueError(f"{INPUT}: send one prompt per request, got {len(prompts)}")
        prompt = prompts[0]
        prompt = prompt.decode("utf-8") if isinstance(prompt, bytes) else str(prompt)
        inputs = {}
        for name in VALUES:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is not None:
                inputs[name] = tensor.as_numpy()
        parameters = json.loads(request.parameters() or "{}")
        return self._generate.plan(prompt, request_values(inputs, parameters))

    def _response(self, pb_utils, token: Token):
        shape = (1, 1) if self._batched else (1,)
        tensors = [
            pb_utils.Tensor(TEXT_OUTPUT, np.array([token.text.encode("utf-8")], dtype=object).reshape(shape)),
            pb_utils.Tensor(TOKEN_OUTPUT, np.array([token.token_id], dtype=np.int64).reshape(shape)),
        ]
        if self._full_text and token.full_text is not None:
            whole = np.array([token.full_text.encode("utf-8")], dtype=object).reshape(shape)
            tensors.append(pb_utils.Tensor(FULL_TEXT_OUTPUT, whole))
        return pb_utils.InferenceResponse(output_tensors=tensors)

    def _error(self, pb_utils, error: BaseException, invalid: bool = False):
        text = " ".join(str(error).split())
        if not isinstance(error, ValueError):
            text = f"{type(error).__name__}: {text}"
        code = getattr(pb_utils.TritonError, "INVALID_ARG" if invalid else "INTERNAL", None)
        message = f"model '{self._name}': {text}"
        failure = pb_utils.TritonError(message, code) if code is not None else pb_utils.TritonError(message)
        return pb_utils.InferenceResponse(error=failure)
