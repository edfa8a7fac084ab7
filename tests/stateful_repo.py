"""A hand-written repository of a stateful and a decoupled Python-backend model, for the load tests of both.

* ``accumulate``: sequence batching with the Direct strategy and the four controls (START, END, READY,
  CORRID, which Triton fills from each request's ``sequence_id``/``sequence_start``/``sequence_end``); it
  keeps a running sum of ``x`` per correlation ID (``total``) and the step within the sequence (``step``).
  With a ``log_path`` parameter it appends one JSON line per real request (READY 1) it served.
* ``streamer``: decoupled (``model_transaction_policy { decoupled: true }``): for each request it sends
  ``max_tokens`` responses (the optional input; else one per word of ``prompt``), each one word of the
  prompt in turn as ``text_output``, ``token_delay_ms`` apart (a request parameter; default the config's),
  then an empty response with the final flag. It stops early, sending the final flag, when its client has
  gone (the request is cancelled). With a ``log_path`` parameter it appends one JSON line per request:
  the prompt's words, the tokens it sent, whether it was cancelled and the delay it used.

The configs are written by hand (the spec's ``sequence_batching`` and ``decoupled`` fields are not used
here), so these tests hold the harness to Triton itself.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ACCUMULATE = """\
import json

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        parameters = json.loads(args["model_config"]).get("parameters", {})
        path = parameters.get("log_path", {}).get("string_value", "")
        self.log = open(path, "a", buffering=1) if path else None
        self.totals = {}
        self.steps = {}

    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "x").as_numpy()
            flags = {
                name: int(pb_utils.get_input_tensor_by_name(request, name).as_numpy().reshape(-1)[0])
                for name in ("START", "END", "READY", "CORRID")
            }
            total = np.zeros_like(x)
            step = np.zeros(x.shape, dtype=np.int32)
            if flags["READY"]:
                key = flags["CORRID"]
                if flags["START"]:
                    self.totals[key] = np.zeros_like(x)
                    self.steps[key] = 0
                self.totals[key] = self.totals[key] + x
                self.steps[key] += 1
                total = self.totals[key]
                step = np.full(x.shape, self.steps[key], dtype=np.int32)
                if self.log is not None:
                    record = dict(flags, x=float(x.reshape(-1)[0]), step=self.steps[key])
                    self.log.write(json.dumps(record) + "\\n")
                if flags["END"]:
                    del self.totals[key], self.steps[key]
            outputs = [pb_utils.Tensor("total", total.astype(np.float32)), pb_utils.Tensor("step", step)]
            responses.append(pb_utils.InferenceResponse(output_tensors=outputs))
        return responses

    def finalize(self):
        if self.log is not None:
            self.log.close()
"""

STREAMER = """\
import json
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        parameters = json.loads(args["model_config"]).get("parameters", {})
        path = parameters.get("log_path", {}).get("string_value", "")
        self.log = open(path, "a", buffering=1) if path else None
        self.delay_ms = float(parameters.get("token_delay_ms", {}).get("string_value", "1"))

    def execute(self, requests):
        for request in requests:
            self._stream(request)
        return None

    def _stream(self, request):
        sender = request.get_response_sender()
        prompt = pb_utils.get_input_tensor_by_name(request, "prompt").as_numpy().reshape(-1)[0]
        words = prompt.decode("utf-8").split() or ["<empty>"]
        given = pb_utils.get_input_tensor_by_name(request, "max_tokens")
        count = int(given.as_numpy().reshape(-1)[0]) if given is not None else len(words)
        delay = float(json.loads(request.parameters() or "{}").get("token_delay_ms", self.delay_ms))
        sent, cancelled = 0, False
        for index in range(count):
            time.sleep(delay / 1000.0)
            if request.is_cancelled():
                cancelled = True
                break
            token = np.array([words[index % len(words)].encode("utf-8")], dtype=np.object_)
            sender.send(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("text_output", token)]))
            sent += 1
        sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        if self.log is not None:
            record = {"words": len(words), "sent": sent, "cancelled": cancelled, "delay_ms": delay}
            self.log.write(json.dumps(record) + "\\n")

    def finalize(self):
        if self.log is not None:
            self.log.close()
"""

_CONTROLS = """\
sequence_batching {{
  max_sequence_idle_microseconds: {idle_us}
  direct {{ max_queue_delay_microseconds: {delay_us} }}
  control_input [
    {{ name: "START" control [ {{ kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] }} ] }},
    {{ name: "END" control [ {{ kind: CONTROL_SEQUENCE_END int32_false_true: [ 0, 1 ] }} ] }},
    {{ name: "READY" control [ {{ kind: CONTROL_SEQUENCE_READY int32_false_true: [ 0, 1 ] }} ] }},
    {{ name: "CORRID" control [ {{ kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_UINT64 }} ] }}
  ]
}}
"""


def _parameters(values: dict[str, str]) -> str:
    return "".join(
        f'parameters {{ key: "{k}" value: {{ string_value: "{v}" }} }}\n' for k, v in values.items()
    )


def write_accumulate(
    repository: Path,
    *,
    name: str = "accumulate",
    max_batch_size: int = 4,
    instances: int = 1,
    idle_us: int = 5_000_000,
    queue_delay_us: int = 0,
    log_path: Path | None = None,
) -> Path:
    """Write the stateful ``accumulate`` model; return its directory."""
    model_dir = repository / name
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    (model_dir / "1" / "model.py").write_text(ACCUMULATE)
    config = (
        f'name: "{name}"\nbackend: "python"\nmax_batch_size: {max_batch_size}\n'
        'input [ { name: "x" data_type: TYPE_FP32 dims: [ 1 ] } ]\n'
        'output [ { name: "total" data_type: TYPE_FP32 dims: [ 1 ] }, '
        '{ name: "step" data_type: TYPE_INT32 dims: [ 1 ] } ]\n'
        + _CONTROLS.format(idle_us=idle_us, delay_us=queue_delay_us)
        + f"instance_group [ {{ count: {instances} kind: KIND_CPU }} ]\n"
        + _parameters({"log_path": str(log_path)} if log_path else {})
    )
    (model_dir / "config.pbtxt").write_text(config)
    return model_dir


def write_streamer(
    repository: Path,
    *,
    name: str = "streamer",
    token_delay_ms: float = 1.0,
    instances: int = 2,
    log_path: Path | None = None,
) -> Path:
    """Write the decoupled ``streamer`` model; return its directory."""
    model_dir = repository / name
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    (model_dir / "1" / "model.py").write_text(STREAMER)
    values = {"token_delay_ms": f"{token_delay_ms:g}"}
    if log_path:
        values["log_path"] = str(log_path)
    config = (
        f'name: "{name}"\nbackend: "python"\nmax_batch_size: 0\n'
        'input [ { name: "prompt" data_type: TYPE_STRING dims: [ 1 ] }, '
        '{ name: "max_tokens" data_type: TYPE_INT32 dims: [ 1 ] optional: true } ]\n'
        'output [ { name: "text_output" data_type: TYPE_STRING dims: [ 1 ] } ]\n'
        "model_transaction_policy { decoupled: true }\n"
        f"instance_group [ {{ count: {instances} kind: KIND_CPU }} ]\n" + _parameters(values)
    )
    (model_dir / "config.pbtxt").write_text(config)
    return model_dir


def read_log(path: Path) -> list[dict[str, Any]]:
    """The JSON lines a model wrote to its ``log_path`` (none when it wrote nothing yet)."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def sequences(records: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """``accumulate``'s log records grouped into sequences: each from a START to its END (or the log's end),
    per correlation ID, in the order the model served them."""
    open_ones: dict[int, list[dict[str, Any]]] = {}
    for record in records:
        key = record["CORRID"]
        if record["START"]:
            if key in open_ones:
                yield open_ones.pop(key)
            open_ones[key] = []
        open_ones.setdefault(key, []).append(record)
        if record["END"]:
            yield open_ones.pop(key)
    yield from open_ones.values()
