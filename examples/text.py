"""The text example: a topic classifier (food, sport, weather) behind a tokenizer, trained offline.

Everything is made at build time from the sentences shipped beside this file (``text_topics.tsv``):
``tokenizer()`` trains a small word-level tokenizer with Hugging Face ``tokenizers`` (the spec's
tokenizer step names it), and ``build()`` trains the classifier on the same sentences encoded by that
tokenizer (the spec's torch model). Both are deterministic and take about a second. (A word-level
vocabulary comes out the same on every run; the WordPiece trainer breaks ties in a different order
from run to run, so a model trained in another process could not share its ids.)

The classifier is an embedding table averaged over the real tokens (``attention_mask``) and a linear
layer: ``input_ids``, ``attention_mask`` (INT64, ``[batch, length]``, any length) -> ``logits``
(``[batch, 3]``). Its embedding submodule is called ``embedding``, as in most text models.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "text_topics.tsv"
LABELS = HERE / "text_labels.txt"
#: The tokenizer step pads and truncates to this many tokens (the spec's step.max_length).
MAX_LENGTH = 32


def corpus() -> tuple[list[str], list[str]]:
    """The shipped sentences and their topics."""
    sentences, topics = [], []
    for line in CORPUS.read_text(encoding="utf-8").splitlines():
        topic, _, sentence = line.partition("\t")
        if sentence:
            topics.append(topic)
            sentences.append(sentence)
    return sentences, topics


def held_out() -> tuple[list[str], list[str]]:
    """Sentences the classifier never saw, and their topics (the demo asks the served pipeline)."""
    pairs = [
        ("Strong winds and heavy rain are expected along the coast tomorrow", "weather"),
        ("The goalkeeper saved two penalties and the team won the cup", "sport"),
        ("Stir the garlic into the butter and serve the pasta warm", "food"),
        ("A cold and foggy morning will turn into a sunny afternoon", "weather"),
        ("The striker signed for the club after the final match of the season", "sport"),
        ("Bake the bread until golden and serve it with soup", "food"),
        ("Snow and frost will make the roads icy tonight", "weather"),
        ("The runners warmed up on the track before the race", "sport"),
        ("The chef roasted the chicken with lemon and fresh herbs", "food"),
    ]
    return [sentence for sentence, _ in pairs], [topic for _, topic in pairs]


def labels() -> list[str]:
    """The class labels in the classifier's output order."""
    return LABELS.read_text(encoding="utf-8").split()


def tokenizer():
    """A lower-casing word-level tokenizer trained on the shipped sentences ([CLS] text [SEP], [PAD] = 0)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    result = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    result.normalizer = normalizers.BertNormalizer(lowercase=True)
    result.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    result.train_from_iterator(
        corpus()[0], trainers.WordLevelTrainer(special_tokens=special, show_progress=False)
    )
    result.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        special_tokens=[("[CLS]", result.token_to_id("[CLS]")), ("[SEP]", result.token_to_id("[SEP]"))],
    )
    result.enable_padding(pad_id=result.token_to_id("[PAD]"), pad_token="[PAD]")
    result.enable_truncation(MAX_LENGTH)
    return result


def encode(texts: list[str], length: int = MAX_LENGTH) -> tuple[np.ndarray, np.ndarray]:
    """``input_ids`` and ``attention_mask`` of ``texts``, padded to ``length`` (as the tokenizer step does)."""
    tok = tokenizer()
    tok.enable_padding(pad_id=tok.token_to_id("[PAD]"), pad_token="[PAD]", length=length)
    encodings = tok.encode_batch(texts)
    ids = np.array([e.ids for e in encodings], dtype=np.int64)
    mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
    return ids, mask


def _classifier(vocab_size: int, classes: int):
    import torch
    from torch import nn

    class TextClassifier(nn.Module):
        """Mean of the token embeddings under the attention mask, then a linear layer."""

        def __init__(self) -> None:
            super().__init__()
            self.embedding = nn.Embedding(vocab_size, 32, padding_idx=0)
            self.classifier = nn.Linear(32, classes)

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            mask = attention_mask.unsqueeze(-1).to(torch.float32)
            summed = (self.embedding(input_ids) * mask).sum(dim=1)
            return self.classifier(torch.tanh(summed / mask.sum(dim=1).clamp(min=1.0)))

    return TextClassifier()


def train(epochs: int = 60, seed: int = 0):
    """Train the classifier on the shipped sentences (full batch, Adam, seeded)."""
    import torch

    torch.manual_seed(seed)
    sentences, topics = corpus()
    names = labels()
    ids, mask = encode(sentences)
    targets = torch.tensor([names.index(t) for t in topics])
    model = _classifier(tokenizer().get_vocab_size(), len(names))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    x, m = torch.from_numpy(ids), torch.from_numpy(mask)
    for _ in range(epochs):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x, m), targets).backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = float((model(x, m).argmax(1) == targets).float().mean())
    return model, accuracy


def build():
    """The factory the spec names: the trained classifier and two encoded example sentences."""
    import torch

    model, _ = train()
    ids, mask = encode(corpus()[0][:2])
    return model, (torch.from_numpy(ids), torch.from_numpy(mask))


if __name__ == "__main__":
    trained, train_accuracy = train()
    print(
        f"vocabulary {tokenizer().get_vocab_size()} tokens; accuracy on the shipped sentences {train_accuracy:.3f}"
    )
