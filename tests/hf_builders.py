"""Tiny Hugging Face model folders made here (seeded random weights, save_pretrained), one per task.

Each builder writes a folder as a user would have it from the hub: ``config.json``, ``model.safetensors``
and the tokenizer's or image processor's files (a sentence-transformers folder adds ``modules.json`` and its
modules). Nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

TOPICS = ["food", "sport", "weather"]
ENTITIES = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
CORPUS = [
    "the cat sat on the mat",
    "a dog ran in the park with anna",
    "rain and wind in paris today",
    "the match ended in a draw",
    "soup with fresh bread and butter",
    "sunny skies all week in london",
    "he scored two goals for the team",
    "pasta with tomato sauce",
    "naïve café in tōkyō",
]


def make_wordpiece_tokenizer(folder: Path, model_max_length: int = 64) -> int:
    """A BERT-style WordPiece tokenizer trained on :data:`CORPUS`, saved as transformers saves one;
    returns its vocabulary size."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertTokenizerFast

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer.train_from_iterator(
        CORPUS * 4, trainers.WordPieceTrainer(vocab_size=150, special_tokens=special)
    )
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    fast = BertTokenizerFast(tokenizer_object=tokenizer, model_max_length=model_max_length)
    fast.save_pretrained(folder)
    return len(fast)


def _bert_config(vocab: int, **extra: object):
    from transformers import BertConfig

    return BertConfig(
        vocab_size=vocab,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=64,
        **extra,
    )


def _labelled(labels: list[str]) -> dict[str, object]:
    return {
        "num_labels": len(labels),
        "id2label": dict(enumerate(labels)),
        "label2id": {label: index for index, label in enumerate(labels)},
    }


def make_text_classifier(folder: Path, labels: list[str] | None = None, **extra: object) -> Path:
    """A tiny BertForSequenceClassification with its tokenizer (``extra`` goes to the config)."""
    import torch
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    vocab = make_wordpiece_tokenizer(folder)
    model = BertForSequenceClassification(_bert_config(vocab, **_labelled(labels or TOPICS), **extra))
    model.save_pretrained(folder)
    return folder


def make_token_classifier(folder: Path) -> Path:
    """A tiny BertForTokenClassification with its tokenizer."""
    import torch
    from transformers import BertForTokenClassification

    torch.manual_seed(1)
    vocab = make_wordpiece_tokenizer(folder)
    BertForTokenClassification(_bert_config(vocab, **_labelled(ENTITIES))).save_pretrained(folder)
    return folder


def make_encoder(folder: Path) -> Path:
    """A tiny BertModel with its tokenizer (feature extraction without sentence-transformers)."""
    import torch
    from transformers import BertModel

    torch.manual_seed(2)
    vocab = make_wordpiece_tokenizer(folder)
    BertModel(_bert_config(vocab)).save_pretrained(folder)
    return folder


def make_sentence_transformer(folder: Path, pooling: str = "mean", normalize: bool = True) -> Path:
    """A tiny sentence-transformers folder: a BertModel, its pooling and (optionally) Normalize."""
    import tempfile

    from sentence_transformers import SentenceTransformer
    from sentence_transformers import models as st

    with tempfile.TemporaryDirectory() as base:
        make_encoder(Path(base))
        modules = [st.Transformer(base, max_seq_length=48), st.Pooling(32, pooling_mode=pooling)]
        if normalize:
            modules.append(st.Normalize())
        SentenceTransformer(modules=modules, device="cpu").save(str(folder))
    return folder


def make_image_classifier(folder: Path, processor: str = "vit") -> Path:
    """A tiny ViTForImageClassification (32x32 inputs) with an image processor: ``vit`` (resize to 32x32)
    or ``crop`` (shortest edge 40, centre crop 32, bicubic, CLIP's mean and std)."""
    import torch
    from transformers import CLIPImageProcessor, ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(3)
    config = ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        **_labelled(["cat", "dog", "bird", "fish"]),
    )
    ViTForImageClassification(config).save_pretrained(folder)
    if processor == "vit":
        ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    else:
        CLIPImageProcessor(size={"shortest_edge": 40}, crop_size={"height": 32, "width": 32}).save_pretrained(
            folder
        )
    return folder
