"""A TorchScript model (platform pytorch_libtorch) built by tritongen and served unchanged by the
embedded Triton through its Python-based ``pytorch`` backend."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient

from generator.build.exporters.base import load_factory
from generator.build.run import build
from generator.serve.server import EmbeddedServer

from ..conftest import EXAMPLE_SPEC, free_ports

pytestmark = pytest.mark.integration


def test_torchscript_repository_is_served_and_matches_pytorch(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        json.dumps(
            {
                "models": [
                    {
                        "name": "digits_ts",
                        "framework": "torch",
                        "format": "torchscript",
                        "source": f"{EXAMPLE_SPEC.parent / 'digits.py'}:build",
                        "max_batch_size": 16,
                        "inputs": [{"name": "image", "dtype": "FP32", "dims": [1, 8, 8]}],
                        "outputs": [{"name": "logits", "dtype": "FP32", "dims": [10]}],
                    }
                ]
            }
        )
    )
    build(spec, tmp_path / "repo")
    module, _ = load_factory(EXAMPLE_SPEC.parent / "digits.py", "build", "ts")()
    images = np.random.default_rng(0).random((5, 1, 8, 8), dtype=np.float32)
    import torch

    with torch.no_grad():
        expected = module(torch.from_numpy(images)).numpy()
    with (
        EmbeddedServer(tmp_path / "repo", **free_ports()) as server,
        httpclient.InferenceServerClient(server.endpoints.http) as client,
    ):
        tensor = httpclient.InferInput("image__0", list(images.shape), "FP32")
        tensor.set_data_from_numpy(images)
        served = client.infer("digits_ts", [tensor]).as_numpy("logits__0")
    np.testing.assert_allclose(served, expected, atol=1e-5, rtol=1e-5)
