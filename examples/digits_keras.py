"""A Keras CNN trained on scikit-learn's 8x8 digits: the TensorFlow example (needs the tensorflow extra).

``build()`` is the factory a spec names (``digits_keras.py:build``): it returns the Keras model with the
trained weights committed beside this file (``digits_keras.weights.h5``) and an example input batch.
The model takes ``image`` [N, 8, 8, 1] (channels last, as Keras prefers on CPUs) and gives ``logits``
[N, 10]; it is trained on the same split as the PyTorch CNN in ``digits.py``.

Run ``python examples/digits_keras.py`` to retrain it from scratch (seeded and deterministic, seconds on
a laptop CPU): it rewrites ``digits_keras.weights.h5`` and prints the held-out accuracy.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

# The sibling module: this file's directory is on sys.path when it runs as a script, and while the
# exporter imports it as a factory.
from digits import load_data

HERE = Path(__file__).resolve().parent
WEIGHTS = HERE / "digits_keras.weights.h5"


def make_model() -> Any:
    """Two 3x3 convolutions, a 2x2 max-pool and a dense classifier: ``image`` -> ``logits``."""
    import keras

    image = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1")(image)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.MaxPooling2D(2, name="pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    logits = keras.layers.Dense(10, name="logits")(x)
    return keras.Model(image, logits, name="digits_keras")


def load_nhwc() -> tuple[np.ndarray, ...]:
    """``digits.load_data()`` with the images as [N, 8, 8, 1] (channels last)."""
    x_train, x_test, y_train, y_test = load_data()
    return x_train.transpose(0, 2, 3, 1), x_test.transpose(0, 2, 3, 1), y_train, y_test


def build() -> tuple[Any, np.ndarray]:
    """The factory the spec names: the trained model and an example batch of two test images."""
    model = make_model()
    model.load_weights(WEIGHTS)
    _, x_test, _, _ = load_nhwc()
    return model, x_test[:2]


def train(epochs: int = 30, seed: int = 0) -> tuple[Any, float]:
    """Train with Adam (seeded, deterministic ops); return the model and its held-out accuracy."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    x_train, x_test, y_train, y_test = load_nhwc()
    model = make_model()
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x_train, y_train, batch_size=64, epochs=epochs, shuffle=True, verbose=0)
    accuracy = float((model.predict(x_test, verbose=0).argmax(1) == y_test).mean())
    return model, accuracy


if __name__ == "__main__":
    # tf.data logs harmless C++ "NodeDef mentions attribute" errors during fit; keep the output readable.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    trained, held_out = train()
    trained.save_weights(WEIGHTS)
    print(f"digits_keras: held-out accuracy {held_out:.3f} -> {WEIGHTS.name}")
