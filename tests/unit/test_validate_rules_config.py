"""Triton's warm-up rules in validate, as Triton 2.51 runs a model's warm-up samples when it loads it.

Each verdict was taken from the embedded tritonserver (Python-backend models, so it is Triton core's); the
served test keeps the warm-up case checked against the server.
"""

from __future__ import annotations

import pytest

from .test_validate_rules_tensors import config, judge


def warmup(body: str, max_batch_size: int = 8, serving: str = 'backend: "python"', inputs: str = "") -> str:
    tensors = {"inputs": inputs} if inputs else {}
    return config(max_batch_size=max_batch_size, serving=serving, extra=f"model_warmup [ {body} ]", **tensors)


def sample(batch_size: int = 1, **feeds: str) -> str:
    """One warm-up sample; each feed is ``name=dims``, zeros of TYPE_FP32."""
    listed = " ".join(
        f'inputs {{ key: "{name}" value: {{ data_type: TYPE_FP32 dims: {dims} zero_data: true }} }}'
        for name, dims in feeds.items()
    )
    return f'{{ name: "w" batch_size: {batch_size} {listed} }}'


def test_a_python_model_takes_an_unknown_warm_up_input() -> None:
    """Triton hands a warm-up input the config does not declare to the model as an extra input: the Python
    backend loads the model; other backends refuse it."""
    errors, warnings = judge(warmup(sample(x="[ 4 ]", q="[ 4 ]")))
    assert errors == []
    assert warnings == [
        "model_warmup 'w' feeds 'q', which is not an input; Triton hands it to the Python model as an extra "
        "input (other backends refuse the model): the model has: x"
    ]
    errors, _ = judge(warmup(sample(x="[ 4 ]", q="[ 4 ]"), serving='platform: "onnxruntime_onnx"'))
    assert errors == ["model_warmup 'w' feeds 'q', which is not an input; the model has: x"]


def test_a_python_model_still_needs_every_required_warm_up_input() -> None:
    two = '{ name: "x" data_type: TYPE_FP32 dims: [ 4 ] }, { name: "x2" data_type: TYPE_FP32 dims: [ 4 ] }'
    errors, _ = judge(warmup(sample(x="[ 4 ]", X2="[ 4 ]"), inputs=two))
    assert errors == ["model_warmup 'w' does not feed input(s) x2; add them to its inputs"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            warmup(sample(16, x="[ 4 ]")),
            "model_warmup 'w' batch_size 16 exceeds max_batch_size 8: Triton 2.51 fails the warm-up sample (and "
            "at times crashes running it); lower it",
        ),
        (
            warmup(sample(2, x="[ 4 ]"), max_batch_size=0),
            "model_warmup 'w' batch_size 2 must be 1 for a model without batching (Triton 2.51 fails a larger "
            "warm-up sample, and at times crashes running it)",
        ),
    ],
)
def test_a_warm_up_batch_triton_fails_or_crashes_on(text: str, expected: str) -> None:
    errors, _ = judge(text)
    assert errors == [expected]


@pytest.mark.parametrize(
    "text",
    [
        warmup(sample(x="[ 4 ]").replace('name: "w" ', "")),  # a sample without a name
        warmup(sample(x="[ 4 ]").replace("batch_size: 1", "batch_size: 1 count: 3")),
        warmup(
            sample(x="[ 4 ]"),
            inputs='{ name: "x" data_type: TYPE_FP32 dims: [ 4 ] }, '
            '{ name: "x2" data_type: TYPE_FP32 dims: [ 4 ] optional: true }',
        ),
    ],
)
def test_warm_ups_triton_runs(text: str) -> None:
    assert judge(text) == ([], [])
