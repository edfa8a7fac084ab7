"""How ``examples/hf_topics/`` was made: a tiny BERT topic classifier as a Hugging Face model folder.

The bundled example serves that folder with a four-line spec entry (``framework: huggingface``,
``task: text-classification``), as a user would serve a model from the hub: tritongen reads the tokenizer
and the labels from the folder, exports the model and builds the pipeline around it. This script is not
run by the build; it documents the folder and remakes it (``python examples/hf_topics.py``): a WordPiece
tokenizer trained on ``text_topics.tsv``, and a 2-layer BERT (hidden size 64) trained on the same
sentences for a few seconds on a CPU, saved with ``save_pretrained``. (The WordPiece trainer breaks ties
differently from run to run, so a remade folder is equivalent, not byte-identical.)
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
FOLDER = HERE / "hf_topics"


def make(folder: Path = FOLDER, steps: int = 300) -> float:
    """Train and save the folder; return the accuracy on the held-out sentences of ``text.py``."""
    import text
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    sentences, topics = text.corpus()
    labels = text.labels()
    backend = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    backend.train_from_iterator(sentences, trainers.WordPieceTrainer(vocab_size=600, special_tokens=special))
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", backend.token_to_id("[CLS]")), ("[SEP]", backend.token_to_id("[SEP]"))],
    )
    tokenizer = BertTokenizerFast(tokenizer_object=backend, model_max_length=64)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=64,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: index for index, label in enumerate(labels)},
    )
    model = BertForSequenceClassification(config)
    batch = tokenizer(sentences, padding=True, truncation=True, return_tensors="pt")
    targets = torch.tensor([labels.index(topic) for topic in topics])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(**batch).logits, targets)
        loss.backward()
        optimizer.step()
    model.eval()
    held_texts, held_topics = text.held_out()
    with torch.no_grad():
        predicted = model(**tokenizer(held_texts, padding=True, return_tensors="pt")).logits.argmax(-1)
    tokenizer.save_pretrained(folder)
    model.save_pretrained(folder)
    return float(
        sum(labels[int(p)] == t for p, t in zip(predicted, held_topics, strict=True)) / len(held_topics)
    )


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(HERE))
    print(f"held-out accuracy {make():.3f}; wrote {FOLDER}")
