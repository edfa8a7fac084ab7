"""Benchmark: export time and parity for each source format and target on the bundled examples.

Each row is one model built from scratch in a fresh repository: the time the exporter took (from the
build manifest), the whole build step for that model (export + parity + config + validation), and
the parity figures against the source framework. Formats whose framework is not installed
(TensorFlow) or whose hardware is missing (TensorRT) are listed as skipped with the reason.
Run: ``python perf/bench_export.py``.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from generator.build.run import build
from generator.core.errors import GeneratorError
from generator.core.repository import MANIFEST
from generator.core.resources import examples_dir

EXAMPLES = examples_dir()
CNN_IO = {
    "inputs": [{"name": "image", "dtype": "FP32", "dims": [1, 8, 8]}],
    "outputs": [{"name": "logits", "dtype": "FP32", "dims": [10]}],
}
CASES = [
    ("torch -> onnx", {"framework": "torch", "source": f"{EXAMPLES / 'digits.py'}:build", **CNN_IO}),
    (
        "torch -> torchscript",
        {
            "framework": "torch",
            "format": "torchscript",
            "source": f"{EXAMPLES / 'digits.py'}:build",
            **CNN_IO,
        },
    ),
    ("onnx (as is)", {"framework": "onnx", "source": str(EXAMPLES / "digits_linear.onnx")}),
    ("keras -> onnx", {"framework": "tensorflow", "source": f"{EXAMPLES / 'digits_keras.py'}:build"}),
    (
        "torch -> tensorrt",
        {"framework": "torch", "format": "tensorrt", "source": f"{EXAMPLES / 'digits.py'}:build", **CNN_IO},
    ),
]


def _skip_reason(entry: dict) -> str | None:
    if entry["framework"] == "tensorflow":
        if importlib.util.find_spec("tensorflow") is None:
            return "TensorFlow not installed (pip install '.[tensorflow]')"
        if not Path(entry["source"].split(":")[0]).exists():
            return "no Keras example in this checkout"
    if entry.get("format") == "tensorrt" and importlib.util.find_spec("tensorrt") is None:
        return "TensorRT not installed (GPU machines: pip install '.[tensorrt]')"
    return None


def main() -> None:
    print(
        f"{'format':22} {'export s':>9} {'build s':>8} {'batches':>9} {'max abs err':>12} {'max rel err':>12}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for index, (label, entry) in enumerate(CASES):
            reason = _skip_reason(entry)
            if reason:
                print(f"{label:22} skipped: {reason}")
                continue
            spec = Path(tmp) / f"spec{index}.yaml"
            spec.write_text(json.dumps({"models": [{"name": "m", "max_batch_size": 64, **entry}]}))
            repo = Path(tmp) / f"repo{index}"
            try:
                report = build(spec, repo, device="gpu" if entry.get("format") == "tensorrt" else "cpu")
            except GeneratorError as exc:
                print(f"{label:22} failed: {exc.problems[0]}")
                continue
            model = report.models[0]
            details = json.loads((repo / MANIFEST).read_text())["models"]["m"]["versions"]["1"]["details"]
            parity = model.parity or {}
            compared = parity.get("compared")
            print(
                f"{label:22} {details.get('export_seconds', 0.0):9.2f} {model.seconds:8.2f} "
                f"{','.join(map(str, parity.get('batch_sizes', []))):>9} "
                f"{parity['max_abs_error'] if compared else float('nan'):12.2e} "
                f"{parity['max_rel_error'] if compared else float('nan'):12.2e}"
                + ("" if compared else "  (no source framework: ran at each batch size)")
            )


if __name__ == "__main__":
    main()
