"""Whether validate's message names the problem Triton names: a heuristic over topics.

Each topic pairs a pattern of Triton's messages (its core, the Python backend, the stand-in backend)
with a pattern validate's message must match to name the same problem: the field path or the thing at
fault. A Triton message that matches no topic agrees when a validate error repeats one of the names it
quotes or one of its snake_case field names. The heuristic errs towards disagreement: a message it
cannot place counts against the figure, so a new kind of Triton message shows up in the benchmark.
"""

from __future__ import annotations

import re

#: (Triton's message, what validate's message must name).
TOPICS: tuple[tuple[str, str], ...] = (
    (r"reshape", r"reshape"),
    (r"must specify 'dims'|dimension must be|dims", r"dims"),
    (r"must specify 'data_type'|data ?type|datatype", r"data_type|type"),
    (r"must specify 'name'", r"name"),
    (r"NHWC|NCHW", r"format|NHWC|NCHW"),
    (r"shape tensor", r"is_shape_tensor|shape tensor"),
    (r"non-linear", r"non_linear"),
    (r"batch input|source input", r"batch_input|batch_output"),
    (r"batch output|target output", r"batch_output"),
    (r"dynamic batching preferred", r"preferred_batch_size"),
    (r"default priority level", r"default_priority_level"),
    (r"priority queue policy", r"priority_queue_policy"),
    (r"preserve_ordering", r"preserve_ordering"),
    (r"sequence batching control|sequence batching (specifies|must)|for control", r"control_input|control"),
    (r"sequence batching preferred", r"preferred_batch_size"),
    (r"slot utilization", r"minimum_slot_utilization"),
    (r"initial_state|state input|'state'", r"state"),
    (r"Response Cache", r"response_cache"),
    (r"instance group|KIND_|gpu", r"instance_group|GPU"),
    (r"profile", r"profile"),
    (r"ensemble|step of model", r"ensemble_scheduling|step|input_map|output_map|ensemble"),
    (r"version", r"version"),
    (r"platform|backend", r"platform|backend|runtime"),
    (r"runtime|backend library", r"runtime|backend"),
    (r"max(imum)?[ _]batch[ _]size", r"max_batch_size"),
    (r"warmup|warm-up", r"model_warmup|warm-up"),
    (r"decoupled", r"decoupled|model_transaction_policy"),
    (r"EXECUTION_ENV_PATH|canonical path", r"EXECUTION_ENV_PATH"),
    (r"TRITON_BATCH_STRATEGY_PATH|Batching library", r"TRITON_BATCH_STRATEGY_PATH"),
    (r"auto[-_]complete", r"auto_complete|auto-complete"),
    (r"TritonPythonModel|SyntaxError|invalid syntax", r"TritonPythonModel|syntax|model\.py"),
    (
        r"model\.py|model\.onnx|No such file|unable to find|not found|does not exist",
        r"model\.py|model\.onnx|file",
    ),
    (r"failed to read text proto|Error parsing text-format", r"parse|config\.pbtxt"),
    (r"JSON non-string as string", r"kind|unknown"),
)

_PARSED_FIELD = re.compile(r'(?:no field named|field) "(\w+)"')
_QUOTED = re.compile(r"'([^']{2,})'")
_FIELD = re.compile(r"\b[a-z]+(?:_[a-z]+)+\b")


def message_agrees(triton: str, errors: list[str]) -> bool:
    """Whether one of validate's ``errors`` names the problem Triton's message names."""
    if not errors:
        return False
    named = _PARSED_FIELD.findall(triton)
    if named:  # the parser names the field it stopped at: validate must name it too
        return any(name in error for name in named for error in errors)
    matched = [wanted for pattern, wanted in TOPICS if re.search(pattern, triton, re.IGNORECASE)]
    if matched:
        return any(re.search(wanted, error, re.IGNORECASE) for wanted in matched for error in errors)
    names = {n for n in _QUOTED.findall(triton) if not re.match(r"c\d{4}_", n)} | set(_FIELD.findall(triton))
    return any(name.lower() in error.lower() for name in names for error in errors)
