"""The generate step served by the real embedded Triton (decoupled, one response per token): its tokens over
gRPC streaming and over HTTP's generate_stream equal transformers' ``generate`` run in-process on the same
folder (greedy, and sampling with a seed), its generation values are respected, bad values are one-line
error responses, and a client killed mid-stream leaves the server serving."""

from __future__ import annotations

import json
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from generator.serve.server import EmbeddedServer
from generator.steps import StepDefinition, step_definition

from ..conftest import free_ports
from ..hf_models import GenerateReference, make_gpt2_lm

pytestmark = pytest.mark.integration

#: The model's context: room for a generation long enough to be cut by a disconnecting client.
CONTEXT = 1024
#: Each model of the repository: its settings and max_batch_size.
MODELS: dict[str, tuple[dict[str, Any], int]] = {
    "gen": ({"model": "lm", "threads": 1, "full_text": True, "max_new_tokens": 24}, 0),
    "gen_batched": ({"model": "lm", "threads": 1, "max_new_tokens": 6}, 4),
    "gen_sampling": (
        {
            "model": "lm",
            "threads": 1,
            "do_sample": True,
            "temperature": 0.7,
            "top_k": 10,
            "max_new_tokens": 10,
        },
        0,
    ),
}
PROMPTS = ["hello world", "the quick brown fox", "héllo wörld, café", "日本語 🙂", ""]


def config_text(name: str, definition: StepDefinition, max_batch: int) -> str:
    """A decoupled config.pbtxt for the step, as its definition describes it."""

    def tensors(specs: list[dict[str, Any]]) -> str:
        entries = []
        for spec in specs:
            entry = f'name: "{spec["name"]}" data_type: TYPE_{spec["dtype"]} dims: {spec["dims"]}'
            entries.append("{ " + entry + (" optional: true" if spec.get("optional") else "") + " }")
        return ", ".join(entries)

    parameters = ", ".join(
        f"{{ key: {json.dumps(key)} value: {{ string_value: {json.dumps(value)} }} }}"
        for key, value in definition.parameters.items()
    )
    assert definition.decoupled
    return (
        f'name: "{name}"\nbackend: "{definition.backend}"\nmax_batch_size: {max_batch}\n'
        f"input [ {tensors(definition.inputs)} ]\noutput [ {tensors(definition.outputs)} ]\n"
        "model_transaction_policy { decoupled: true }\n"
        + ("dynamic_batching { max_queue_delay_microseconds: 1000 }\n" if max_batch else "")
        + "instance_group [ { count: 1 kind: KIND_CPU } ]\n"
        f"parameters [ {parameters} ]\n"
    )


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_gpt2_lm(tmp_path_factory.mktemp("spec") / "lm", n_positions=CONTEXT)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, folder: Path) -> Iterator[EmbeddedServer]:
    repository = tmp_path_factory.mktemp("generate") / "model_repository"
    for name, (settings, max_batch) in MODELS.items():
        definition = step_definition("generate", settings, folder.parent)
        version = repository / name / "1"
        version.mkdir(parents=True)
        assert definition.model_file is not None
        shutil.copy(definition.model_file, version / "model.py")
        for target, source in definition.version_files.items():
            shutil.copytree(source, version / target)
        (repository / name / "config.pbtxt").write_text(config_text(name, definition, max_batch))
    log = repository.parent / "tritonserver.log"
    with EmbeddedServer(repository, **free_ports(), log_path=log) as embedded:
        yield embedded


@pytest.fixture(scope="module")
def reference(folder: Path) -> GenerateReference:
    return GenerateReference(folder)


class Stream:
    """One gRPC stream: requests sent on it in turn, each read to its final response."""

    def __init__(self, url: str) -> None:
        self.client = grpcclient.InferenceServerClient(url)
        self.results: queue.Queue = queue.Queue()
        self.client.start_stream(callback=lambda result, error: self.results.put((result, error)))

    def close(self) -> None:
        self.client.stop_stream()
        self.client.close()

    def ask(
        self,
        model: str,
        prompt: str,
        parameters: dict[str, Any] | None = None,
        inputs: dict[str, np.ndarray] | None = None,
        batched: bool = False,
    ) -> list[dict[str, Any]]:
        """The responses to one request: each ``{"token_id", "text", "full_text", "final"}``.

        Raises:
            InferenceServerException: the request's error response.
        """
        tensors = []
        for name, array in {
            "text_input": np.array([prompt.encode("utf-8")], dtype=object),
            **(inputs or {}),
        }.items():
            array = array[None] if batched else array
            tensor = grpcclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
            tensor.set_data_from_numpy(array)
            tensors.append(tensor)
        self.client.async_stream_infer(
            model, tensors, parameters=parameters, enable_empty_final_response=True
        )
        responses = []
        while True:
            result, error = self.results.get(timeout=120)
            if error is not None:
                raise error
            response = result.get_response()
            final = response.parameters["triton_final_response"].bool_param
            names = {output.name for output in response.outputs}
            if names:
                entry = {
                    "token_id": int(result.as_numpy("token_id").reshape(-1)[0]),
                    "text": result.as_numpy("text_output").reshape(-1)[0].decode("utf-8"),
                    "full_text": result.as_numpy("full_text").reshape(-1)[0].decode("utf-8")
                    if "full_text" in names
                    else None,
                    "final": final,
                }
                responses.append(entry)
            if final:
                return responses


@pytest.fixture
def stream(server: EmbeddedServer) -> Iterator[Stream]:
    opened = Stream(server.endpoints.grpc)
    yield opened
    opened.close()


def _ids(responses: list[dict[str, Any]]) -> list[int]:
    return [r["token_id"] for r in responses]


def test_greedy_tokens_over_grpc_equal_transformers(stream: Stream, reference: GenerateReference) -> None:
    for prompt in PROMPTS:
        responses = stream.ask("gen", prompt)
        expected = reference(prompt, max_new_tokens=24, do_sample=False)
        assert _ids(responses) == expected, prompt
        text = reference.text(expected)
        assert "".join(r["text"] for r in responses) == text
        # The final flag and the full text ride on the last token's response, and only there.
        assert [r["final"] for r in responses] == [False] * (len(responses) - 1) + [True]
        assert [r["full_text"] for r in responses] == [None] * (len(responses) - 1) + [text]


def test_sampling_with_a_seed_equals_transformers(stream: Stream, reference: GenerateReference) -> None:
    values = {
        "do_sample": True,
        "temperature": 0.8,
        "top_k": 20,
        "top_p": 0.9,
        "seed": 7,
        "max_new_tokens": 16,
    }
    expected = reference("hello world", **values)
    assert _ids(stream.ask("gen", "hello world", parameters=values)) == expected
    inputs = {
        "do_sample": np.array([True]),
        "temperature": np.array([0.8], np.float32),
        "top_k": np.array([20], np.int32),
        "top_p": np.array([0.9], np.float32),
        "seed": np.array([7], np.int64),
        "max_new_tokens": np.array([16], np.int32),
    }
    # FP32 inputs arrive as float32: transformers is given the same float32 values.
    as_float32 = {**values, "temperature": float(np.float32(0.8)), "top_p": float(np.float32(0.9))}
    assert _ids(stream.ask("gen", "hello world", inputs=inputs)) == reference("hello world", **as_float32)
    penalised = reference("the quick brown fox", max_new_tokens=16, do_sample=False, repetition_penalty=1.5)
    assert penalised != reference("the quick brown fox", max_new_tokens=16, do_sample=False)
    responses = stream.ask("gen", "the quick brown fox", {"repetition_penalty": 1.5, "max_new_tokens": 16})
    assert _ids(responses) == penalised


def test_settings_are_each_requests_defaults(stream: Stream, reference: GenerateReference) -> None:
    sampled = reference("hello world", seed=3, do_sample=True, temperature=0.7, top_k=10, max_new_tokens=10)
    assert _ids(stream.ask("gen_sampling", "hello world", {"seed": 3})) == sampled
    greedy = reference("hello world", do_sample=False, max_new_tokens=10)
    assert _ids(stream.ask("gen_sampling", "hello world", {"do_sample": False})) == greedy


def test_max_new_tokens_is_respected(stream: Stream, reference: GenerateReference) -> None:
    for count in (1, 5, 40):
        responses = stream.ask("gen", "hello world", inputs={"max_new_tokens": np.array([count], np.int32)})
        expected = reference("hello world", max_new_tokens=count, do_sample=False)
        assert _ids(responses) == expected
        assert len(responses) == count or expected[-1] == reference.eos


def _stop_for(prompt: str, pieces: list[str]) -> tuple[str, int]:
    """A stop sequence the greedy text reaches first at the end of token k (a token of letters): (it, k)."""
    for k in range(3, len(pieces)):
        piece = pieces[k]
        before = prompt + "".join(pieces[: k + 1])
        if piece.isascii() and piece.strip().isalpha() and before.find(piece) == len(before) - len(piece):
            return piece, k
    pytest.fail(f"no usable stop sequence in {pieces!r}")


def test_stop_sequences_end_the_generation(stream: Stream, reference: GenerateReference) -> None:
    prompt = "the quick brown fox"
    unstopped = stream.ask("gen", prompt, {"max_new_tokens": 40})
    stop, k = _stop_for(prompt, [r["text"] for r in unstopped])
    stopped = stream.ask("gen", prompt, {"max_new_tokens": 40, "stop": stop})
    # It ends with the token that completes the stop sequence, as transformers' stop_strings does.
    assert _ids(stopped) == _ids(unstopped)[: k + 1]
    assert _ids(stopped) == reference(prompt, max_new_tokens=40, do_sample=False, stop_strings=[stop])
    assert stopped[-1]["final"] and stopped[-1]["full_text"].endswith(stop)
    several = np.array([b"never in this text \xc3\xa9", stop.encode()], dtype=object)
    assert _ids(stream.ask("gen", prompt, {"max_new_tokens": 40}, inputs={"stop": several})) == _ids(stopped)
    listed = json.dumps(["zzz never", stop])
    assert _ids(stream.ask("gen", prompt, {"max_new_tokens": 40, "stop": listed})) == _ids(stopped)


BAD: list[tuple[dict[str, Any], dict[str, np.ndarray], str]] = [
    ({"max_new_tokens": 0}, {}, "max_new_tokens: must be between 1"),
    ({"do_sample": True, "temperature": 0.0}, {}, "temperature: must be greater than 0"),
    ({"top_p": 1.5}, {}, "top_p: must be greater than 0 and at most 1"),
    ({"top_k": -1}, {}, "top_k: must be between 0"),
    ({"do_sample": "perhaps"}, {}, "do_sample: expected true or false"),
    ({"max_tokens": 5}, {}, "unknown request parameter 'max_tokens'"),
    ({"max_new_tokens": CONTEXT}, {}, f"exceed the model's {CONTEXT}-token context"),
    (
        {"seed": 1},
        {"seed": np.array([1], np.int64)},
        "seed: sent both as an input and as a request parameter",
    ),
    ({}, {"stop": np.array([b""], dtype=object)}, "stop: holds an empty stop sequence"),
]


@pytest.mark.parametrize(("parameters", "inputs", "message"), BAD)
def test_bad_values_are_one_line_errors(
    stream: Stream,
    reference: GenerateReference,
    parameters: dict[str, Any],
    inputs: dict[str, np.ndarray],
    message: str,
) -> None:
    with pytest.raises(InferenceServerException) as caught:
        stream.ask("gen", "hello world", parameters, inputs)
    text = str(caught.value.message())
    assert message in text and text.startswith("model 'gen': ") and "\n" not in text
    # The stream and the model go on serving.
    assert _ids(stream.ask("gen", "hello", {"max_new_tokens": 3})) == reference(
        "hello", max_new_tokens=3, do_sample=False
    )


def test_one_prompt_per_request(stream: Stream) -> None:
    """A batched config takes requests of several rows; the step refuses all but one prompt per request."""
    with pytest.raises(InferenceServerException) as caught:
        stream.ask(
            "gen_batched", "hello", inputs={"text_input": np.array([[b"one"], [b"two"]], dtype=object)}
        )
    assert caught.value.message() == "model 'gen_batched': text_input: send one prompt per request, got 2"


_CLIENT = """
import sys, time
import numpy as np
import tritonclient.grpc as grpcclient

client = grpcclient.InferenceServerClient(sys.argv[1])
client.start_stream(callback=lambda result, error: print("token" if error is None else error, flush=True))
prompt = grpcclient.InferInput("text_input", [1], "BYTES")
prompt.set_data_from_numpy(np.array([b"hello"], dtype=object))
client.async_stream_infer("gen", [prompt], parameters={"max_new_tokens": int(sys.argv[2])})
time.sleep(600)
"""


def test_a_client_killed_mid_stream_leaves_the_server_serving(
    server: EmbeddedServer, stream: Stream, reference: GenerateReference
) -> None:
    offset = server.log_size()
    client = subprocess.Popen(
        [sys.executable, "-c", _CLIENT, server.endpoints.grpc, str(CONTEXT - 10)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert client.stdout is not None
        assert client.stdout.readline().strip() == "token"  # the stream is under way
    finally:
        client.kill()
        client.wait()
    # The step sees the cancellation and stops generating (it says so in the server's log).
    deadline = time.monotonic() + 120
    while "request cancelled by its client" not in server.log_path.read_bytes()[offset:].decode(
        errors="replace"
    ):
        assert time.monotonic() < deadline, "the step never saw the client go away"
        time.sleep(0.2)
    stopped = server.log_path.read_bytes()[offset:].decode(errors="replace")
    generated = int(stopped.split("generation stopped after ")[1].split()[0])
    assert generated < CONTEXT - 10
    health = grpcclient.InferenceServerClient(server.endpoints.grpc)
    assert health.is_server_live() and health.is_server_ready() and health.is_model_ready("gen")
    health.close()
    assert _ids(stream.ask("gen", "hello world")) == reference(
        "hello world", max_new_tokens=24, do_sample=False
    )


def test_concurrent_streams_on_a_batched_config(server: EmbeddedServer, reference: GenerateReference) -> None:
    prompts = ["hello world", "the lazy dog", "café crème", "pipelines chain"]
    found: dict[str, list[int]] = {}

    def run(prompt: str) -> None:
        own = Stream(server.endpoints.grpc)
        try:
            found[prompt] = _ids(own.ask("gen_batched", prompt, batched=True))
        finally:
            own.close()

    threads = [threading.Thread(target=run, args=(prompt,)) for prompt in prompts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert found == {prompt: reference(prompt, max_new_tokens=6, do_sample=False) for prompt in prompts}


def test_http_generate_stream(server: EmbeddedServer, reference: GenerateReference) -> None:
    url = f"http://{server.endpoints.http}/v2/models/gen/generate_stream"
    reply = requests.post(
        url, json={"text_input": "hello world", "max_new_tokens": 8}, stream=True, timeout=120
    )
    assert reply.status_code == 200
    events = [json.loads(line[len("data: ") :]) for line in reply.iter_lines(decode_unicode=True) if line]
    expected = reference("hello world", max_new_tokens=8, do_sample=False)
    assert [event["token_id"] for event in events] == expected
    assert events[-1]["full_text"] == reference.text(expected)
    bad = requests.post(url, json={"text_input": "hello", "top_p": 0}, stream=True, timeout=120)
    assert "top_p: must be greater than 0" in bad.text


def test_a_spec_with_the_step_builds_and_serves(
    tmp_path: Path, folder: Path, reference: GenerateReference
) -> None:
    """From the spec: the build runs the step's model factory, renders the config decoupled with the
    generation values as optional inputs (left out of the sample data), and the repository serves."""
    from generator.build.run import build
    from generator.core.triton import parse_model_config
    from generator.steps.generate_settings import VALUE_INPUTS

    (tmp_path / "lm.py").write_text(f"def build():\n    return {str(folder)!r}\n")
    (tmp_path / "generator.yaml").write_text(
        "models:\n"
        "  - name: writer\n"
        "    framework: python\n"
        "    source: builtin:generate\n"
        "    max_batch_size: 0\n"
        "    step: {model: lm.py:build, max_new_tokens: 5, threads: 1}\n"
    )
    repository = tmp_path / "repo"
    build(tmp_path / "generator.yaml", repository)
    config = parse_model_config((repository / "writer" / "config.pbtxt").read_text())
    assert config.model_transaction_policy.decoupled
    assert [t.name for t in config.input if t.optional] == list(VALUE_INPUTS)
    samples = json.loads((repository / "writer" / "perf_analyzer_data.json").read_text())["data"]
    assert {name for sample in samples for name in sample} == {"text_input"}
    with EmbeddedServer(repository, **free_ports()) as served:
        own = Stream(served.endpoints.grpc)
        try:
            responses = own.ask("writer", "hello world")
        finally:
            own.close()
    assert _ids(responses) == reference("hello world", max_new_tokens=5, do_sample=False)
