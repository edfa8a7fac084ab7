"""Example models trained on scikit-learn's 8x8 handwritten digits (ships offline with scikit-learn).

``build()`` is the factory the example spec names (``digits.py:build``): it returns the small CNN with
the trained weights committed beside this file (``digits_cnn.pt``) and an example input batch.

Run ``python examples/digits.py`` to retrain both example models from scratch (seeded, a few
seconds on a laptop CPU): it rewrites ``digits_cnn.pt`` and ``digits_linear.onnx`` (a multinomial
logistic regression written as an ONNX graph, the example of a model that arrives as ONNX).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

HERE = Path(__file__).resolve().parent
WEIGHTS = HERE / "digits_cnn.pt"
LINEAR_ONNX = HERE / "digits_linear.onnx"


class DigitsCNN(nn.Module):
    """Two 3x3 convolutions, a 2x2 max-pool and a linear classifier: [N, 1, 8, 8] -> [N, 10] logits."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Linear(32 * 4 * 4, 10)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(image).flatten(1))


def load_data(test_fraction: float = 0.25, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Digits as float32 images in [0, 1], shape [N, 1, 8, 8]; a fixed train/test split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    return tuple(
        train_test_split(
            images, digits.target, test_size=test_fraction, random_state=seed, stratify=digits.target
        )
    )


def build() -> tuple[nn.Module, torch.Tensor]:
    """The factory the spec names: the trained CNN and an example batch of two test images."""
    model = DigitsCNN()
    model.load_state_dict(torch.load(WEIGHTS, map_location="cpu", weights_only=True))
    _, x_test, _, _ = load_data()
    return model.eval(), torch.from_numpy(x_test[:2])


def train_cnn(epochs: int = 30, seed: int = 0) -> tuple[DigitsCNN, float]:
    """Train the CNN with Adam; return it and its held-out accuracy."""
    torch.manual_seed(seed)
    x_train, x_test, y_train, y_test = load_data()
    model = DigitsCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    xs, ys = torch.from_numpy(x_train), torch.from_numpy(y_train).long()
    for _ in range(epochs):
        order = torch.randperm(len(xs))
        for start in range(0, len(xs), 64):
            batch = order[start : start + 64]
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(xs[batch]), ys[batch]).backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(torch.from_numpy(x_test)).argmax(1).numpy() == y_test).mean()
    return model, float(accuracy)


def write_linear_onnx(path: Path = LINEAR_ONNX) -> float:
    """Fit a logistic regression on flattened digits and write it as ONNX: pixels [N, 64] -> probabilities."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from sklearn.linear_model import LogisticRegression

    x_train, x_test, y_train, y_test = load_data()
    classifier = LogisticRegression(max_iter=2000).fit(x_train.reshape(len(x_train), -1), y_train)
    accuracy = float(classifier.score(x_test.reshape(len(x_test), -1), y_test))
    weights = numpy_helper.from_array(classifier.coef_.T.astype(np.float32), "weights")
    bias = numpy_helper.from_array(classifier.intercept_.astype(np.float32), "bias")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["pixels", "weights"], ["scores"]),
            helper.make_node("Add", ["scores", "bias"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
        ],
        "digits_linear",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 10])],
        initializer=[weights, bias],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="tritongen-examples"
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return accuracy


if __name__ == "__main__":
    cnn, cnn_accuracy = train_cnn()
    torch.save(cnn.state_dict(), WEIGHTS)
    linear_accuracy = write_linear_onnx()
    print(f"digits_cnn: held-out accuracy {cnn_accuracy:.3f} -> {WEIGHTS.name}")
    print(f"digits_linear: held-out accuracy {linear_accuracy:.3f} -> {LINEAR_ONNX.name}")
