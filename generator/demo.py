"""The main job end to end on the embedded default: build the bundled example, serve it with the real
tritonserver, send real requests over HTTP and gRPC, load-test it, and report what came back.

Each served model is asked something it never saw and its answers are compared with the same repository
files run in-process: the digits models classify held-out images (checked against the labels and ONNX
Runtime); the text pipelines (ensembles: tokenizer, classifier, post-processing; the example's own and the
one a Hugging Face folder expanded into) label unseen sentences; the stateful model takes digit sequences
interleaved over HTTP and gRPC (against the exported model run step by step); the generator streams greedy
completions over gRPC (against the generate step's own class). An answer that differs from the in-process
one fails the demo. The load tests are ``python -m generator loadtest`` run as their own processes against
the same server (Locust patches the standard library for gevent when imported, which this process, with
its threads, must not have).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from generator.build.exporters.base import load_factory
from generator.build.pipelines import local_ensemble
from generator.build.run import build
from generator.build.runners import onnx_runner
from generator.build.sample_data import PERF_ANALYZER_DATA
from generator.core.errors import GeneratorError
from generator.core.resources import examples_dir
from generator.serve.server import EmbeddedServer, Endpoints
from generator.spec.models import bundled_example

Say = Callable[[str], None]
#: The demo's load test: digits_cnn over gRPC at 1, 4 and 16 users, 5 s each, priced at $1/hour.
DEFAULT_LOADTEST = [
    "--model",
    "digits_cnn",
    "--protocol",
    "grpc",
    "--sweep",
    "1,4,16",
    "--duration",
    "5",
    "--price-per-hour",
    "1.0",
    "--fail-if",
    "error_rate>0",
    "--out",
    "loadtest-report",
]
#: Then the text pipeline (an ensemble of three models) over gRPC at 1 and 16 users, with the figures of
#: each step (the sentences to send are added from the example's text_queries.txt).
TEXT_LOADTEST = [
    "--model",
    "text_pipeline",
    "--protocol",
    "grpc",
    "--sweep",
    "1,16",
    "--duration",
    "5",
    "--fail-if",
    "error_rate>0",
    "--out",
    "loadtest-report-text",
]

#: The stateful model in sequences of 10 digits (correlation IDs, START/END) at 1 and 4 users, with the
#: per-sequence figures.
SEQUENCE_LOADTEST = [
    "--model", "running_max", "--protocol", "grpc", "--sweep", "1,4", "--duration", "3",
    "--sequence-length", "10", "--fail-if", "error_rate>0", "--out", "loadtest-report-sequence",
]  # fmt: skip
#: The streaming generator over gRPC streams at 1 and 2 users: time to first token, inter-token latency,
#: tokens/s (the prompts are the repository's own data file).
STREAM_LOADTEST = [
    "--model", "tiny_lm", "--protocol", "grpc", "--sweep", "1,2", "--duration", "3",
    "--fail-if", "error_rate>0", "--out", "loadtest-report-stream",
]  # fmt: skip


@dataclass
class DemoResult:
    """What the demo measured."""

    accuracy: dict[str, float] = field(default_factory=dict)
    max_abs_error_vs_onnxruntime: dict[str, float] = field(default_factory=dict)
    requests: int = 0
    loadtest_exit_code: int | None = None
    #: The text pipelines' served labels equal the same pipelines run in-process, sentence by sentence.
    text_labels_match: bool = False
    #: The generator's streamed tokens equal the same greedy generation in-process.
    generate_tokens_match: bool = False

    def record(self, model: str, accuracy: float, served: np.ndarray, local: np.ndarray) -> None:
        """A model's accuracy and the largest difference of its served answers from the in-process ones."""
        self.accuracy[model] = accuracy
        self.max_abs_error_vs_onnxruntime[model] = float(np.abs(served - local).max())


def _infer_http(url: str, model: str, name: str, output: str, batch: np.ndarray) -> np.ndarray:
    import tritonclient.http as httpclient

    with httpclient.InferenceServerClient(url=url) as client:
        tensor = httpclient.InferInput(name, list(batch.shape), "FP32")
        tensor.set_data_from_numpy(batch, binary_data=True)
        result = client.infer(
            model, [tensor], outputs=[httpclient.InferRequestedOutput(output, binary_data=True)]
        )
        return result.as_numpy(output)


def _infer_grpc(url: str, model: str, name: str, output: str, batch: np.ndarray) -> np.ndarray:
    import tritonclient.grpc as grpcclient

    with grpcclient.InferenceServerClient(url=url) as client:
        tensor = grpcclient.InferInput(name, list(batch.shape), "FP32")
        tensor.set_data_from_numpy(batch)
        result = client.infer(model, [tensor], outputs=[grpcclient.InferRequestedOutput(output)])
        return result.as_numpy(output)


def _infer_text(url: str, grpc: bool, texts: list[str], model: str) -> tuple[np.ndarray, np.ndarray]:
    """A text pipeline's LABELS and SCORES for ``texts`` (one string per batch row)."""
    if grpc:
        import tritonclient.grpc as client_module
    else:
        import tritonclient.http as client_module  # type: ignore[no-redef]
    batch = np.array([[text.encode("utf-8")] for text in texts], dtype=object)
    with client_module.InferenceServerClient(url=url) as client:
        tensor = client_module.InferInput("TEXT", list(batch.shape), "BYTES")
        tensor.set_data_from_numpy(batch)
        result = client.infer(model, [tensor])
        return result.as_numpy("LABELS"), result.as_numpy("SCORES")


def _took(started: float) -> str:
    """The time since ``started`` (``time.perf_counter()``), as each demo's summary line ends."""
    return f"({time.perf_counter() - started:.2f}s)"


def _digits_demo(
    repo: Path,
    endpoints: Endpoints,
    result: DemoResult,
    say: Say,
    case: tuple[str, str, str, np.ndarray],
    labels: np.ndarray,
) -> None:
    """Ask a served digits model about held-out images over HTTP and gRPC; compare with the labels and
    with ONNX Runtime run in-process on the repository's model file."""
    model, name, out, data = case
    started = time.perf_counter()
    http_first = _infer_http(endpoints.http, model, name, out, data[:8])
    grpc_single = np.concatenate(
        [_infer_grpc(endpoints.grpc, model, name, out, data[i : i + 1]) for i in range(8)]
    )
    served = np.concatenate(
        [_infer_grpc(endpoints.grpc, model, name, out, data[i : i + 64]) for i in range(0, len(data), 64)]
    )
    result.requests += 1 + 8 + (len(data) + 63) // 64
    local = onnx_runner(repo / model / "1" / "model.onnx")({name: data})[out]
    result.record(model, float((served.argmax(1) == labels).mean()), served, local)
    say(
        f"{model}: HTTP batch 8 predicts {http_first.argmax(1).tolist()}, gRPC batch 1 x 8 predicts "
        f"{grpc_single.argmax(1).tolist()}, labels {labels[:8].tolist()}"
    )
    say(
        f"{model}: {len(data)} held-out digits over gRPC in batches of 64: accuracy {result.accuracy[model]:.3f}; "
        f"max |served - ONNX Runtime in-process| = {result.max_abs_error_vs_onnxruntime[model]:.1e} "
        f"{_took(started)}"
    )


#: The text pipelines the demo asks: the example's own (a tokenizer step, a torch model, labels) and the one
#: a Hugging Face model folder expanded into.
TEXT_PIPELINES = ("text_pipeline", "hf_topics")


def _text_demo(repo: Path, endpoints: Endpoints, result: DemoResult, say: Say, model: str) -> bool:
    """Ask a served text pipeline about sentences it never saw; compare with it run in-process.

    Returns:
        Whether the served labels equal the in-process pipeline's, sentence by sentence.
    """
    held_out = load_factory(examples_dir() / "text.py", "held_out", "demo")
    texts, topics = held_out()
    started = time.perf_counter()
    labels, scores = _infer_text(endpoints.http, False, texts, model)
    single = [_infer_text(endpoints.grpc, True, [text], model) for text in texts]
    result.requests += 1 + len(texts)
    batch = np.array([[text.encode("utf-8")] for text in texts], dtype=object)
    local = local_ensemble(repo, model)({"TEXT": batch})
    served = [label.decode("utf-8") for label in labels[:, 0]]
    match = bool(
        np.array_equal(labels, local["LABELS"])
        and all(np.array_equal(one[0][0], labels[i]) for i, one in enumerate(single))
    )
    accuracy = float(np.mean([a == b for a, b in zip(served, topics, strict=True)]))
    result.record(model, accuracy, scores, local["SCORES"])
    say(f'{model}: "{texts[0]}" -> {served[0]} ({scores[0, 0]:.3f}), "{texts[1]}" -> {served[1]}')
    say(
        f"{model}: {len(texts)} unseen sentences over HTTP (one batch) and gRPC (one by one): accuracy "
        f"{result.accuracy[model]:.3f}; labels equal to the pipeline run in-process: "
        f"{'yes' if match else 'NO'}; max |served - in-process score| = "
        f"{result.max_abs_error_vs_onnxruntime[model]:.1e} {_took(started)}"
    )
    return match


#: The largest difference of the served running_max's logits from the same model run step by step in-process.
SEQUENCE_TOLERANCE = 1e-4


def _sequence_demo(repo: Path, endpoints: Endpoints, result: DemoResult, say: Say) -> bool:
    """Send digit sequences to the stateful model, interleaved step by step, odd ones over gRPC and even
    ones over HTTP; compare each step with the exported model run step by step in-process.

    Returns:
        Whether every served step is within :data:`SEQUENCE_TOLERANCE` of the in-process one.
    """
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    sequences = load_factory(examples_dir() / "sequence.py", "sequences", "demo")
    digits, targets = sequences(8, 10, 777)
    started = time.perf_counter()
    clients = [
        httpclient.InferenceServerClient(endpoints.http),
        grpcclient.InferenceServerClient(endpoints.grpc),
    ]
    served = np.zeros((*digits.shape, 10), dtype=np.float32)
    try:
        for step in range(digits.shape[1]):  # every sequence's step before the next step of any
            for row in range(digits.shape[0]):
                module = (httpclient, grpcclient)[row % 2]
                tensor = module.InferInput("digit", [1, 1], "INT64")
                tensor.set_data_from_numpy(digits[row : row + 1, step : step + 1].astype(np.int64))
                answer = clients[row % 2].infer(
                    "running_max",
                    [tensor],
                    sequence_id=1000 + row,
                    sequence_start=step == 0,
                    sequence_end=step == digits.shape[1] - 1,
                )
                served[row, step] = answer.as_numpy("logits")[0]
    finally:
        for client in clients:
            client.close()
    result.requests += digits.size
    run = onnx_runner(repo / "running_max" / "1" / "model.onnx")
    state = np.zeros((digits.shape[0], 16), dtype=np.float32)
    local = np.zeros_like(served)
    for step in range(digits.shape[1]):
        outputs = run({"digit": digits[:, step : step + 1].astype(np.int64), "h_in": state})
        local[:, step], state = outputs["logits"], outputs["h_out"]
    result.record("running_max", float((served.argmax(-1) == targets).mean()), served, local)
    say(f"running_max: digits {digits[0].tolist()} -> running maximum {served[0].argmax(-1).tolist()}")
    say(
        f"running_max: {digits.shape[0]} sequences of {digits.shape[1]} digits, interleaved over HTTP and gRPC "
        f"with the state kept on the server: accuracy {result.accuracy['running_max']:.3f}; max |served - "
        f"in-process step by step| = {result.max_abs_error_vs_onnxruntime['running_max']:.1e} "
        f"{_took(started)}"
    )
    return not result.max_abs_error_vs_onnxruntime["running_max"] > SEQUENCE_TOLERANCE


def _generate_demo(repo: Path, endpoints: Endpoints, result: DemoResult, say: Say) -> bool:
    """Stream greedy completions from the generator over gRPC, token by token; compare the tokens with the
    same generation run in-process by the step's own class.

    Returns:
        Whether the streamed tokens equal the in-process ones.
    """
    import queue

    import tritonclient.grpc as grpcclient

    from generator.build.exporters.huggingface import import_transformers
    from generator.steps.generate import Generate

    prompts = ["The striker", "Bake the bread", "Strong winds"]
    started = time.perf_counter()
    responses: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(endpoints.grpc)
    client.start_stream(callback=lambda result, error: responses.put((result, error)))
    served: list[list[int]] = []
    texts: list[str] = []
    first_token: list[float] = []
    try:
        for prompt in prompts:
            tensor = grpcclient.InferInput("text_input", [1], "BYTES")
            tensor.set_data_from_numpy(np.array([prompt.encode("utf-8")], dtype=object))
            sent = time.perf_counter()
            client.async_stream_infer("tiny_lm", [tensor], parameters={"max_new_tokens": 12})
            ids: list[int] = []
            pieces: list[str] = []
            while True:
                answer, error = responses.get(timeout=120)
                if error is not None:
                    raise GeneratorError(f"tiny_lm: {error}")
                if not ids:
                    first_token.append(time.perf_counter() - sent)
                ids.append(int(answer.as_numpy("token_id").reshape(-1)[0]))
                pieces.append(answer.as_numpy("text_output").reshape(-1)[0].decode("utf-8"))
                if answer.get_response().parameters["triton_final_response"].bool_param:
                    break
            served.append(ids)
            texts.append(prompt + "".join(pieces))
    finally:
        client.stop_stream()
        client.close()
    result.requests += len(prompts)
    import_transformers()  # its logging quiet, and offline
    local = Generate(repo / "tiny_lm" / "1" / "model")
    expected = [[token.token_id for token in local(prompt, max_new_tokens=12)] for prompt in prompts]
    match = served == expected
    say(f'tiny_lm: "{texts[0]}"')
    say(
        f"tiny_lm: {len(prompts)} greedy completions streamed over gRPC, {sum(map(len, served))} tokens, first "
        f"token after {1000 * float(np.median(first_token)):.1f} ms (median); tokens equal to the same generation "
        f"in-process: {'yes' if match else 'NO'} {_took(started)}"
    )
    return match


def _refuse_differences(
    text_matches: dict[str, bool], sequence_matches: bool, generate_matches: bool
) -> None:
    """Fail the demo where a served model answered otherwise than the same model in-process.

    Raises:
        GeneratorError: one line naming the model that differs (the generator first, then the stateful
            model, then the text pipelines).
    """
    if not generate_matches:
        raise GeneratorError(
            "the tokens tiny_lm streamed differ from the same generation in-process; see the lines above"
        )
    if not sequence_matches:
        raise GeneratorError(
            "the served running_max differs from the same model run step by step in-process; "
            "see the lines above"
        )
    differing = [model for model, match in text_matches.items() if not match]
    if differing:
        raise GeneratorError(
            f"the served labels of {', '.join(differing)} differ from the same pipeline run in-process; "
            "see the lines above"
        )


def _loadtest(endpoints: Endpoints, args: list[str], say: Say) -> int:
    """Run ``python -m generator loadtest ARGS`` against the server as its own process.

    Raises:
        GeneratorError: the load test failed.
    """
    grpc = "--protocol" not in args or "grpc" in args[args.index("--protocol") + 1 :][:1]
    url = f"grpc://{endpoints.grpc}" if grpc else endpoints.http
    command = [
        sys.executable,
        "-m",
        "generator",
        "loadtest",
        "--url",
        url,
        "--metrics-url",
        endpoints.metrics,
        *args,
    ]
    say("load test: python -m generator loadtest " + " ".join(command[4:]))
    code = subprocess.run(command, check=False).returncode
    if code != 0:
        raise GeneratorError(f"the load test failed (exit {code}); see its output above")
    return code


def _loadtest_runs(repo: Path, loadtest_args: list[str] | None) -> list[list[str]]:
    """The load tests to run: the user's (``[]``: none), else the demo's own four."""
    if loadtest_args is not None:
        return [loadtest_args] if loadtest_args else []
    return [
        DEFAULT_LOADTEST,
        [*TEXT_LOADTEST, "--data", str(examples_dir() / "text_queries.txt")],
        SEQUENCE_LOADTEST,
        [*STREAM_LOADTEST, "--data", str(repo / "tiny_lm" / PERF_ANALYZER_DATA)],
    ]


def run_demo(
    output: str | Path = "model_repository",
    *,
    http_port: int = 8000,
    grpc_port: int = 8001,
    metrics_port: int = 8002,
    address: str = "127.0.0.1",
    say: Say = lambda line: None,
    loadtest_args: list[str] | None = None,
) -> DemoResult:
    """Build, serve, query and load-test the bundled example; ``say`` receives the lines to show a user.

    Args:
        loadtest_args: Arguments for ``python -m generator loadtest`` (the server's URL is added); ``[]``
            skips the load test; ``None`` runs short gRPC sweeps of ``digits_cnn`` (``loadtest-report/``),
            ``text_pipeline`` (``loadtest-report-text/``), ``running_max`` in sequences
            (``loadtest-report-sequence/``) and ``tiny_lm`` streaming (``loadtest-report-stream/``).
    """
    repo = Path(output)
    report = build(bundled_example(), repo)
    for model in report.models:
        say(f"built {model.name} v{model.version} ({model.status}) -> {repo / model.name}")
    load_data = load_factory(examples_dir() / "digits.py", "load_data", "demo")
    _, images, _, labels = load_data()
    result = DemoResult()
    cases = [
        ("digits_cnn", "image", "logits", images),
        ("digits_linear", "pixels", "probabilities", images.reshape(len(images), -1)),
    ]
    with EmbeddedServer(
        repo, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port, address=address
    ) as server:
        endpoints = server.endpoints
        say(f"tritonserver ready: HTTP {endpoints.http}, gRPC {endpoints.grpc}, metrics {endpoints.metrics}")
        for case in cases:
            _digits_demo(repo, endpoints, result, say, case, labels)
        text_matches = {model: _text_demo(repo, endpoints, result, say, model) for model in TEXT_PIPELINES}
        result.text_labels_match = all(text_matches.values())
        sequence_matches = _sequence_demo(repo, endpoints, result, say)
        result.generate_tokens_match = _generate_demo(repo, endpoints, result, say)
        _refuse_differences(text_matches, sequence_matches, result.generate_tokens_match)
        for args in _loadtest_runs(repo, loadtest_args):
            result.loadtest_exit_code = _loadtest(endpoints, args, say)
    say("tritonserver stopped")
    return result
