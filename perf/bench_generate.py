"""Benchmark: the two ways a streaming generation step can run a causal LM, on tiny GPT-2-like models made here.

- ``transformers``: the generate step's own path (:class:`generator.steps.generate.Generate`):
  transformers' ``generate`` with a streamer that hands each token over as it is produced (decoded
  incrementally, as the step sends it). ``generate (no streamer)`` is transformers alone, for its overhead.
- ``onnx``: the model exported to ONNX with its KV cache as inputs and outputs (``torch.onnx.export``,
  dynamo, a dynamic past length) and a greedy decode loop in numpy over ONNX Runtime, decoding the text the
  same way. Its tokens are checked against transformers' first (they must be identical).
- ``served``: the generate step on the embedded Triton (decoupled), read over a gRPC stream by a client in
  this process: what a user sees, with the server's per-response cost.

For each model size (``tiny``: the tests' model, 2 layers, 64 wide; ``small``: 6 layers, 512 wide), a fixed
prompt and ``--tokens`` greedy tokens: time to first token (ms) and decode rate (tokens/s after the first,
median over ``--rounds`` rounds that run every way in turn), plus the ONNX export's one-off time. Torch and
ONNX Runtime run on ``--threads`` threads each. Figures go to ``--out`` (JSON). The machine's other load
moves absolute figures; compare the ways within one run.

What ships: the transformers way. Both give the same tokens, and the ONNX loop decodes several times faster
on the tiny model, where transformers' Python overhead per token is all there is, but that lead shrinks to
a small factor once the model computes something (``small``), while the ONNX way needs an export per
architecture (its cache layout) and every sampling option of transformers' reimplemented in numpy.

Run: ``python perf/bench_generate.py [--sizes tiny,small] [--tokens 64] [--rounds 5] [--threads 1]
[--out perf/results/bench_generate.json]``.
"""

from __future__ import annotations

import argparse
import json
import queue
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from generator.steps import generate as step
from tests.hf_models import make_gpt2_tokenizer

PROMPT = "the quick brown fox jumps over the lazy dog"
SIZES = {
    "tiny": {"n_embd": 64, "n_layer": 2, "n_head": 2},
    "small": {"n_embd": 512, "n_layer": 6, "n_head": 8},
}
CONTEXT = 256


def make_model(folder: Path, size: str) -> Path:
    """A GPT-2-like causal LM folder of that size (seeded random weights) with the tests' tokenizer."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    make_gpt2_tokenizer(folder)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    end = tokenizer.eos_token_id
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=CONTEXT, bos_token_id=end, eos_token_id=end, **SIZES[size]
    )
    GPT2LMHeadModel(config).eval().save_pretrained(str(folder))
    return folder


def timed(run: Callable[[Callable[[int], None]], None]) -> dict[str, float]:
    """Run a generation that calls ``emit(token)`` per token: TTFT (ms), decode rate (tokens/s), tokens."""
    stamps: list[float] = []
    start = time.perf_counter()
    run(lambda token: stamps.append(time.perf_counter()))
    decode = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else float("nan")
    return {
        "ttft_ms": (stamps[0] - start) * 1e3,
        "tokens_per_s": decode,
        "overall_tokens_per_s": len(stamps) / (stamps[-1] - start),
        "tokens": len(stamps),
    }


def median(rounds: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}


def transformers_way(folder: Path, tokens: int) -> tuple[Callable, Callable, list[int]]:
    """The step's path and transformers alone; the greedy tokens."""
    import torch

    generate = step.Generate(folder, {"max_new_tokens": tokens})
    plan = generate.plan(PROMPT, {"max_new_tokens": tokens, "do_sample": False})

    def streamed(emit: Callable[[int], None]) -> None:
        generate.run(plan, lambda token: emit(token.token_id))

    ids = torch.tensor([plan.prompt_ids])

    def alone(emit: Callable[[int], None]) -> None:
        with torch.inference_mode():
            out = generate.model.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), **plan.arguments
            )
        for token in out[0, ids.shape[1] :].tolist():  # no streamer: all arrive at the end
            emit(token)

    return streamed, alone, [t.token_id for t in generate.run(plan)]


def export_onnx(folder: Path, target: Path) -> float:
    """Export the model with its KV cache (past_* in, present_* out, dynamic lengths); the seconds it took."""
    import torch
    from torch.export import Dim
    from transformers import AutoModelForCausalLM, DynamicCache

    model = AutoModelForCausalLM.from_pretrained(str(folder)).eval()
    layers, heads = model.config.n_layer, model.config.n_head
    width = model.config.n_embd // heads

    class WithCache(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any, past: list[Any]) -> tuple[Any, ...]:
            cache = DynamicCache(config=self.model.config)
            for layer in range(layers):
                cache.update(past[2 * layer], past[2 * layer + 1], layer)
            out = self.model(
                input_ids=input_ids, attention_mask=attention_mask, past_key_values=cache, use_cache=True
            )
            present = [t for layer in out.past_key_values.layers for t in (layer.keys, layer.values)]
            return (out.logits, *present)

    names = [f"past_{kind}_{layer}" for layer in range(layers) for kind in ("key", "value")]
    example = (
        torch.tensor([[5, 6, 7]]),
        torch.ones(1, 5, dtype=torch.int64),
        [torch.zeros(1, heads, 2, width) for _ in names],
    )
    seq, past, total = (
        Dim("seq", min=1, max=CONTEXT),
        Dim("past", min=1, max=CONTEXT),
        Dim("total", min=2, max=2 * CONTEXT),
    )
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            WithCache(),
            example,
            str(target),
            input_names=["input_ids", "attention_mask", *names],
            output_names=["logits", *[n.replace("past", "present") for n in names]],
            dynamic_shapes={
                "input_ids": {1: seq},
                "attention_mask": {1: total},
                "past": [{2: past}] * len(names),
            },
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    return time.perf_counter() - start


def onnx_way(folder: Path, path: Path, tokens: int, threads: int) -> Callable:
    """Greedy decoding over ONNX Runtime with the KV cache fed back, text decoded as the step does."""
    import onnxruntime as ort
    from transformers import AutoTokenizer

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    pasts = [i for i in session.get_inputs() if i.name.startswith("past_")]
    prompt = np.array([tokenizer(PROMPT)["input_ids"]], dtype=np.int64)

    def run(emit: Callable[[int], None]) -> None:
        decoder = step.IncrementalDecoder(tokenizer)
        feeds: dict[str, np.ndarray] = {
            i.name: np.zeros((1, i.shape[1], 0, i.shape[3]), np.float32) for i in pasts
        }
        ids, length = prompt, prompt.shape[1]
        for _ in range(tokens):
            outputs = session.run(
                None, {"input_ids": ids, "attention_mask": np.ones((1, length), np.int64), **feeds}
            )
            token = int(outputs[0][0, -1].argmax())
            decoder.push(token)
            emit(token)
            feeds = {i.name: value for i, value in zip(pasts, outputs[1:], strict=True)}
            ids, length = np.array([[token]], np.int64), length + 1

    return run


def served_way(folder: Path, tokens: int, threads: int, workdir: Path) -> tuple[Callable, Callable[[], None]]:
    """The step on the embedded server, read over a gRPC stream; (run, close)."""
    import tritonclient.grpc as grpcclient

    from generator.serve.launch import find_free_port
    from generator.serve.server import EmbeddedServer
    from generator.steps import step_definition

    definition = step_definition("generate", {"model": str(folder), "threads": threads}, folder.parent)
    version = workdir / "repo" / "gen" / "1"
    version.mkdir(parents=True)
    shutil.copy(definition.model_file, version / "model.py")
    shutil.copytree(folder, version / "model")
    inputs = ", ".join(
        f'{{ name: "{i["name"]}" data_type: TYPE_{i["dtype"]} dims: {i["dims"]}{" optional: true" if i.get("optional") else ""} }}'
        for i in definition.inputs
    )
    outputs = ", ".join(
        f'{{ name: "{o["name"]}" data_type: TYPE_{o["dtype"]} dims: {o["dims"]} }}'
        for o in definition.outputs
    )
    parameters = ", ".join(
        f"{{ key: {json.dumps(k)} value: {{ string_value: {json.dumps(v)} }} }}"
        for k, v in definition.parameters.items()
    )
    (version.parent / "config.pbtxt").write_text(
        f'name: "gen"\nbackend: "python"\nmax_batch_size: 0\ninput [ {inputs} ]\noutput [ {outputs} ]\n'
        "model_transaction_policy { decoupled: true }\ninstance_group [ { count: 1 kind: KIND_CPU } ]\n"
        f"parameters [ {parameters} ]\n"
    )
    ports = {"http_port": find_free_port(), "grpc_port": find_free_port(), "metrics_port": find_free_port()}
    server = EmbeddedServer(workdir / "repo", **ports).__enter__()
    client = grpcclient.InferenceServerClient(server.endpoints.grpc)
    results: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: results.put((time.perf_counter(), result, error)))
    prompt = grpcclient.InferInput("text_input", [1], "BYTES")
    prompt.set_data_from_numpy(np.array([PROMPT.encode()], dtype=object))

    def run(emit: Callable[[int], None]) -> None:
        client.async_stream_infer(
            "gen", [prompt], parameters={"max_new_tokens": tokens}, enable_empty_final_response=True
        )
        while True:
            _, result, error = results.get(timeout=300)
            if error is not None:
                raise error
            response = result.get_response()
            if response.outputs:
                emit(int(result.as_numpy("token_id")[0]))
            if response.parameters["triton_final_response"].bool_param:
                return

    def close() -> None:
        client.stop_stream()
        client.close()
        server.__exit__(None, None, None)

    return run, close


def measure(ways: dict[str, Callable], rounds: int) -> dict[str, dict[str, float]]:
    """Each way once to warm up, then ``rounds`` rounds of every way in turn (so the machine's other load
    falls on all of them alike); the medians."""
    for run in ways.values():
        timed(run)
    found: dict[str, list[dict[str, float]]] = {name: [] for name in ways}
    for _ in range(rounds):
        for name, run in ways.items():
            found[name].append(timed(run))
    figures = {name: median(values) for name, values in found.items()}
    for name, value in figures.items():
        if name == "generate (no streamer)":  # every token arrives at the end: no decode rate to speak of
            value.pop("tokens_per_s")
        decode = f"{value['tokens_per_s']:7.0f}" if "tokens_per_s" in value else "      -"
        print(
            f"  {name:<24} TTFT {value['ttft_ms']:8.2f} ms   decode {decode} tokens/s   "
            f"overall {value['overall_tokens_per_s']:7.0f} tokens/s",
            flush=True,
        )
    return figures


def bench_size(size: str, tokens: int, rounds: int, threads: int, work: Path) -> dict[str, Any]:
    folder = make_model(work / size / "lm", size)
    streamed, alone, expected = transformers_way(folder, tokens)
    path = work / size / "model.onnx"
    export_seconds = export_onnx(folder, path)
    onnx_run = onnx_way(folder, path, tokens, threads)
    served, close = served_way(folder, tokens, threads, work / size)
    try:
        equal = {}
        for name, run in (("onnx", onnx_run), ("served", served)):
            got: list[int] = []
            run(got.append)
            equal[name] = got == expected
        print(f"{size}: ONNX export {export_seconds:.1f} s; tokens equal transformers': {equal}", flush=True)
        ways = {
            "transformers (the step)": streamed,
            "generate (no streamer)": alone,
            "onnx + numpy loop": onnx_run,
        }
        figures = measure({**ways, "served (gRPC stream)": served}, rounds)
    finally:
        close()
    return {"onnx_export_s": export_seconds, "tokens_equal": equal, **figures}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="tiny,small")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("perf/results/bench_generate.json"))
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    results: dict[str, Any] = {
        "tokens": args.tokens,
        "rounds": args.rounds,
        "threads": args.threads,
        "sizes": {},
    }
    with tempfile.TemporaryDirectory() as scratch:
        for size in args.sizes.split(","):
            results["sizes"][size] = bench_size(size, args.tokens, args.rounds, args.threads, Path(scratch))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
