"""The example repository's answers, asked of any server: used to show a repository served from object
storage answers exactly as the local one does."""

from __future__ import annotations

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

TEXTS = ["a great movie", "terrible", ""]


def digits_logits(client_module: object, url: str, images: np.ndarray) -> np.ndarray:
    """``digits_cnn``'s logits for ``images`` from the server at ``url``."""
    with client_module.InferenceServerClient(url) as client:
        tensor = client_module.InferInput("image", list(images.shape), "FP32")
        tensor.set_data_from_numpy(images)
        return client.infer("digits_cnn", [tensor]).as_numpy("logits")


def pipeline_outputs(client_module: object, url: str, texts: list[str]) -> dict[str, np.ndarray]:
    """``text_pipeline``'s labels and scores for ``texts`` from the server at ``url``."""
    words = np.array([[t.encode("utf-8")] for t in texts], dtype=object)
    with client_module.InferenceServerClient(url) as client:
        tensor = client_module.InferInput("TEXT", list(words.shape), "BYTES")
        tensor.set_data_from_numpy(words)
        result = client.infer("text_pipeline", [tensor])
        return {name: result.as_numpy(name) for name in ("LABELS", "SCORES")}


def assert_same_answers(local: object, remote: object) -> None:
    """Both embedded servers give equal ``digits_cnn`` and ``text_pipeline`` outputs over HTTP and gRPC."""
    images = np.random.default_rng(0).random((5, 1, 8, 8), dtype=np.float32) * 16
    for module, endpoint in ((httpclient, "http"), (grpcclient, "grpc")):
        here, there = getattr(local.endpoints, endpoint), getattr(remote.endpoints, endpoint)
        np.testing.assert_array_equal(
            digits_logits(module, there, images), digits_logits(module, here, images)
        )
        served, expected = pipeline_outputs(module, there, TEXTS), pipeline_outputs(module, here, TEXTS)
        assert served["LABELS"].tolist() == expected["LABELS"].tolist()
        np.testing.assert_array_equal(served["SCORES"], expected["SCORES"])
