"""Example stateful model: a GRU that reads a sequence of digits, one per request, and answers the largest
digit seen so far in its sequence (a running maximum).

``build()`` is the factory a spec names (``sequence.py:build``): it trains the model from a seed in a few
seconds on a CPU and returns it. The model takes one step at a time and carries its state as ordinary
tensors: ``forward(digit, h_in) -> (logits, h_out)``, with ``digit`` INT64 [batch, 1], ``h_in`` and
``h_out`` FP32 [batch, HIDDEN] and ``logits`` FP32 [batch, 10]. Served with Triton's sequence batcher
and implicit state (``h_in``/``h_out``), a client sends only the digits of a sequence under one
correlation ID and reads the logits; the state never leaves the server. A spec entry:

    - name: running_max
      framework: torch
      source: sequence.py:build
      max_batch_size: 8
      inputs: [{name: digit, dtype: INT64, dims: [1]}]
      outputs: [{name: logits, dtype: FP32, dims: [10]}]
      sequence_batching:
        max_sequence_idle_microseconds: 5000000
        state:
          - {input_name: h_in, output_name: h_out, dtype: FP32, dims: [16]}

Run ``python examples/sequence.py`` to train it and print its accuracy on held-out sequences.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

HIDDEN = 16
DIGITS = 10


class RunningMax(nn.Module):
    """One step of a GRU over digits: the digit's embedding updates the state, a linear head reads it."""

    def __init__(self, hidden: int = HIDDEN) -> None:
        super().__init__()
        self.embed = nn.Embedding(DIGITS, 8)
        self.cell = nn.GRUCell(8, hidden)
        self.head = nn.Linear(hidden, DIGITS)

    def forward(self, digit: torch.Tensor, h_in: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h_out = self.cell(self.embed(digit[:, 0]), h_in)
        return self.head(h_out), h_out


def sequences(count: int, length: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random digit sequences [count, length] and their running maxima (the targets), seeded."""
    rng = np.random.default_rng(seed)
    digits = rng.integers(0, DIGITS, size=(count, length))
    return digits, np.maximum.accumulate(digits, axis=1)


def run_sequence(model: nn.Module, digits: np.ndarray) -> np.ndarray:
    """The model's logits over whole sequences ([count, length] digits -> [count, length, 10]), one step
    at a time from a zero state, as the server runs it."""
    rows, length = digits.shape
    state = torch.zeros(rows, model.cell.hidden_size)
    logits = []
    with torch.no_grad():
        for step in range(length):
            out, state = model(torch.from_numpy(digits[:, step : step + 1]), state)
            logits.append(out)
    return torch.stack(logits, dim=1).numpy()


def train(steps: int = 100, seed: int = 0) -> RunningMax:
    """Train on random sequences of 4 to 12 digits (seeded; about a second on one CPU core: the ops are
    too small to gain from more threads, so training runs on one and gives the others back)."""
    torch.manual_seed(seed)
    model = RunningMax()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    loss_fn = nn.CrossEntropyLoss()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for step in range(steps):
            digits, targets = sequences(64, 4 + step % 9, seed + step)
            state = torch.zeros(64, HIDDEN)
            loss = torch.zeros(())
            for t in range(digits.shape[1]):
                logits, state = model(torch.from_numpy(digits[:, t : t + 1]), state)
                loss = loss + loss_fn(logits, torch.from_numpy(targets[:, t]))
            optimizer.zero_grad()
            (loss / digits.shape[1]).backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()


def accuracy(model: nn.Module, count: int = 256, length: int = 12, seed: int = 12345) -> float:
    """The share of steps whose argmax is the running maximum, on held-out sequences."""
    digits, targets = sequences(count, length, seed)
    return float((run_sequence(model, digits).argmax(-1) == targets).mean())


def build() -> RunningMax:
    """The factory a spec names: the trained model (eval mode)."""
    return train()


if __name__ == "__main__":
    trained = train()
    print(f"running-max accuracy on held-out sequences of 12 digits: {accuracy(trained):.3f}")
