"""Tiny Hugging Face tokenizers and models made here, for tests that compare with transformers.

Nothing is fetched from a hub: tokenizers are trained with the ``tokenizers`` library on a few sentences
and wrapped in transformers' tokenizer classes; models are built from small configs with seeded random
weights. Each ``make_*`` function writes a folder as ``save_pretrained`` writes it and returns the folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: The sentences the tokenizers are trained on (some accents, CJK and an emoji among them).
CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "hello world, triton serves models",
    "a tokenizer trained in a test on a few sentences",
    "pipelines chain a tokenizer, a model and a post-processor",
    "Paris and Berlin are cities; Ada Lovelace wrote programs",
    "héllo wörld, café crème, naïve façade",
    "日本語のテキスト と 中文 文本",
    "emoji 🙂 and symbols © ™ ½",
]

#: Texts a tokenizer step is checked on: unicode, empty, blank, one word, and longer than any max_length.
TEXTS = [
    "hello world",
    "",
    "   ",
    "triton",
    "Héllo WÖRLD, café!",
    "日本語 テキスト 中文",
    "emoji 🙂🙂 ½ ©",
    "unknownwordthatnobodyknows xyzzy",
    "the lazy dog jumps over the quick brown fox again and again and again",
    " ".join(CORPUS) * 3,
]


def make_bert_tokenizer(folder: Path, model_max_length: int = 32, **options) -> Path:
    """A BERT-like WordPiece tokenizer (lower-casing, accents stripped), saved by ``BertTokenizerFast``.

    Args:
        folder: Where to save it (created).
        model_max_length: The tokenizer's bound, written to tokenizer_config.json.
        options: More ``BertTokenizerFast`` arguments (``padding_side``, ``truncation_side``, ...).
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertTokenizerFast

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.train_from_iterator(CORPUS, trainers.WordPieceTrainer(vocab_size=200, special_tokens=special))
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[(t, tokenizer.token_to_id(t)) for t in ("[CLS]", "[SEP]")],
    )
    wrapped = BertTokenizerFast(tokenizer_object=tokenizer, model_max_length=model_max_length, **options)
    folder.mkdir(parents=True, exist_ok=True)
    wrapped.save_pretrained(str(folder))
    return folder


def make_slow_bert_tokenizer(folder: Path, model_max_length: int = 32) -> Path:
    """The BERT-like tokenizer as a slow tokenizer's files only: ``vocab.txt`` and tokenizer_config.json
    (no tokenizer.json), as older model folders hold it."""
    import json

    from tokenizers import Tokenizer

    made = make_bert_tokenizer(folder / "_fast", model_max_length)
    vocab = Tokenizer.from_file(str(made / "tokenizer.json")).get_vocab()
    (folder / "vocab.txt").write_text("".join(f"{token}\n" for token in sorted(vocab, key=vocab.get)))
    config = {"tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": model_max_length}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    for path in made.iterdir():
        path.unlink()
    made.rmdir()
    return folder


def make_roberta_tokenizer(folder: Path, model_max_length: int = 24, **options) -> Path:
    """A RoBERTa-like byte-level BPE tokenizer (``<s> ... </s>``, pad ``<pad>``), saved by
    ``RobertaTokenizerFast``; ``options`` such as ``padding_side="left"`` go to its constructor."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import RobertaTokenizerFast

    special = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(CORPUS, trainer)
    tokenizer.post_processor = processors.RobertaProcessing(
        ("</s>", tokenizer.token_to_id("</s>")), ("<s>", tokenizer.token_to_id("<s>"))
    )
    names = dict(bos_token="<s>", eos_token="</s>", sep_token="</s>", cls_token="<s>", unk_token="<unk>")
    wrapped = RobertaTokenizerFast(
        tokenizer_object=tokenizer,
        model_max_length=model_max_length,
        pad_token="<pad>",
        mask_token="<mask>",
        **names,
        **options,
    )
    folder.mkdir(parents=True, exist_ok=True)
    wrapped.save_pretrained(str(folder))
    return folder


def _tiny_bert_config(vocab_size: int, labels: list[str], **extra):
    from transformers import BertConfig

    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=64,
        id2label=dict(enumerate(labels)),
        label2id={label: index for index, label in enumerate(labels)},
        **extra,
    )


def make_bert_text_classifier(
    folder: Path, labels: list[str], problem_type: str | None = None, seed: int = 0, **config
) -> Path:
    """A tiny BertForSequenceClassification (seeded random weights) with the BERT-like tokenizer.

    Args:
        folder: Where to save model and tokenizer.
        labels: The class labels (config.id2label); one label makes a single-logit model.
        problem_type: config.problem_type (``multi_label_classification`` for sigmoid scores).
        seed: torch's seed for the weights.
        config: More BertConfig settings (``initializer_range=0.5`` spreads the scores apart).
    """
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    make_bert_tokenizer(folder)
    vocab_size = len(AutoTokenizer.from_pretrained(str(folder)))
    torch.manual_seed(seed)
    extra = {"problem_type": problem_type} if problem_type else {}
    model = BertForSequenceClassification(_tiny_bert_config(vocab_size, labels, **extra, **config)).eval()
    model.save_pretrained(str(folder))
    return folder


def make_bert_token_classifier(folder: Path, labels: list[str], seed: int = 0, **config) -> Path:
    """A tiny BertForTokenClassification (seeded random weights, more BertConfig settings in ``config``)
    with the BERT-like tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertForTokenClassification

    make_bert_tokenizer(folder)
    vocab_size = len(AutoTokenizer.from_pretrained(str(folder)))
    torch.manual_seed(seed)
    model = BertForTokenClassification(_tiny_bert_config(vocab_size, labels, **config)).eval()
    model.save_pretrained(str(folder))
    return folder


def make_bert_encoder(folder: Path, seed: int = 2) -> Path:
    """A tiny BertModel (no head) with the BERT-like tokenizer: feature extraction without
    sentence-transformers."""
    import torch
    from transformers import AutoTokenizer, BertModel

    make_bert_tokenizer(folder)
    vocab_size = len(AutoTokenizer.from_pretrained(str(folder)))
    torch.manual_seed(seed)
    BertModel(_tiny_bert_config(vocab_size, ["LABEL_0", "LABEL_1"])).eval().save_pretrained(str(folder))
    return folder


def make_sentence_transformer(folder: Path, pooling: str = "mean", normalize: bool = True) -> Path:
    """A tiny sentence-transformers folder: a BertModel, its Pooling and (optionally) Normalize, saved by
    sentence-transformers (modules.json and the modules' folders)."""
    import tempfile

    from sentence_transformers import SentenceTransformer
    from sentence_transformers import models as st

    with tempfile.TemporaryDirectory() as base:
        make_bert_encoder(Path(base))
        modules = [st.Transformer(base, max_seq_length=48), st.Pooling(32, pooling_mode=pooling)]
        if normalize:
            modules.append(st.Normalize())
        SentenceTransformer(modules=modules, device="cpu").save(str(folder))
    return folder


def make_image_classifier(folder: Path, processor: str = "vit") -> Path:
    """A tiny ViTForImageClassification (32x32 inputs, labels cat/dog/bird/fish) with an image processor:
    ``vit`` (resize to 32x32) or ``crop`` (CLIP's: shortest edge 40, centre crop 32, bicubic)."""
    import torch
    from transformers import CLIPImageProcessor, ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(3)
    labels = ["cat", "dog", "bird", "fish"]
    config = ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        id2label=dict(enumerate(labels)),
        label2id={label: index for index, label in enumerate(labels)},
    )
    ViTForImageClassification(config).eval().save_pretrained(str(folder))
    if processor == "vit":
        ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(str(folder))
    else:
        size = {"shortest_edge": 40}
        CLIPImageProcessor(size=size, crop_size={"height": 32, "width": 32}).save_pretrained(str(folder))
    return folder


def make_gpt2_tokenizer(folder: Path, model_max_length: int = 128) -> Path:
    """A GPT-2-like byte-level BPE tokenizer (``<|endoftext|>`` its start, end and unknown token, no pad
    token, no special tokens added to a text), saved by ``GPT2TokenizerFast``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2TokenizerFast

    end = "<|endoftext|>"
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=[end], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(CORPUS, trainer)
    wrapped = GPT2TokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=end,
        eos_token=end,
        unk_token=end,
        model_max_length=model_max_length,
    )
    folder.mkdir(parents=True, exist_ok=True)
    wrapped.save_pretrained(str(folder))
    return folder


def make_gpt2_lm(folder: Path, seed: int = 0, **config) -> Path:
    """A tiny GPT2LMHeadModel (2 layers, 64 wide, a 128-token context; seeded random weights, more
    GPT2Config settings in ``config``) with the GPT-2-like tokenizer: a causal LM folder for generation."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    make_gpt2_tokenizer(folder)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    settings = dict(n_positions=128, n_embd=64, n_layer=2, n_head=2, initializer_range=0.2)
    settings.update(config)
    end = tokenizer.eos_token_id
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(
        GPT2Config(vocab_size=len(tokenizer), bos_token_id=end, eos_token_id=end, **settings)
    )
    model.eval().save_pretrained(str(folder))
    return folder


class GenerateReference:
    """transformers' own generate on a causal LM folder, in this process: what the generate step is
    compared with."""

    def __init__(self, folder: Path) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        self.model = AutoModelForCausalLM.from_pretrained(str(folder)).eval()
        self.eos = self.tokenizer.eos_token_id

    def __call__(self, prompt: str, seed: int | None = None, **arguments: Any) -> list[int]:
        """The token ids generate adds to the prompt (the start token alone for an empty prompt)."""
        import torch

        ids = self.tokenizer(prompt)["input_ids"] or [self.tokenizer.bos_token_id]
        tensor = torch.tensor([ids])
        if seed is not None:
            torch.manual_seed(seed)
        if "stop_strings" in arguments:
            arguments["tokenizer"] = self.tokenizer
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=tensor, attention_mask=torch.ones_like(tensor), pad_token_id=self.eos, **arguments
            )
        return out[0, len(ids) :].tolist()

    def text(self, ids: list[int]) -> str:
        """The text of ``ids``, special tokens left out."""
        return self.tokenizer.decode(ids, skip_special_tokens=True)
