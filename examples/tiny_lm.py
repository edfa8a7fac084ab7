"""A tiny causal language model, made at build time, for the bundled example's streaming generation step.

``build()`` trains a byte-level BPE tokenizer and a GPT-2-like model (one layer, 64 wide, a 64-token
context) on 24 sentences of ``text_topics.tsv`` (every third) for a few seconds on one CPU thread, and
returns the model and its tokenizer; the build saves both as a Hugging Face model folder (``save_pretrained``) for the
``builtin:generate`` step (``step: {model: tiny_lm.py:build}``). Seeded and run on one thread, the same
machine makes the same folder every time. It learns the sentences well enough to continue their openings
("The curry tastes" -> "better the next day after the spices"). ``python examples/tiny_lm.py [FOLDER]`` makes
the folder and prints a few greedy completions.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SENTENCES = HERE / "text_topics.tsv"
END = "<|endoftext|>"
CONTEXT = 64


def sentences() -> list[str]:
    """The training sentences: every third of ``text_topics.tsv`` (its second column), 24 of them."""
    lines = SENTENCES.read_text(encoding="utf-8").splitlines()
    return [line.split("\t", 1)[1].strip() for line in lines if "\t" in line][::3][:24]


def tokenizer(texts: list[str], vocab_size: int = 400) -> Any:
    """A GPT-2-like byte-level BPE tokenizer trained on ``texts`` (``<|endoftext|>`` starts and ends)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2TokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[END], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    backend.train_from_iterator(texts, trainer)
    return GPT2TokenizerFast(
        tokenizer_object=backend, bos_token=END, eos_token=END, unk_token=END, model_max_length=CONTEXT
    )


def build(steps: int = 100, seed: int = 0) -> tuple[Any, Any]:
    """Train the model on the sentences; return ``(model, tokenizer)``."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    texts = sentences()
    tok = tokenizer(texts)
    end = tok.eos_token_id
    rows = [[end, *tok(text)["input_ids"][: CONTEXT - 2], end] for text in texts]
    width = max(len(row) for row in rows)
    ids = torch.tensor([row + [end] * (width - len(row)) for row in rows])
    labels = torch.tensor([row + [-100] * (width - len(row)) for row in rows])
    mask = (labels != -100).long()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: the same sums in the same order, so the same weights
    try:
        torch.manual_seed(seed)
        config = GPT2Config(
            vocab_size=len(tok),
            n_positions=CONTEXT,
            n_embd=64,
            n_layer=1,
            n_head=4,
            bos_token_id=end,
            eos_token_id=end,
        )
        model = GPT2LMHeadModel(config)
        model.loss_type = "ForCausalLM"  # transformers' causal LM loss, named (it warns when left to guess)
        optimizer = torch.optim.AdamW(model.parameters(), lr=8e-3)
        model.train()
        for _ in range(steps):
            optimizer.zero_grad()
            model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    model.generation_config.pad_token_id = end
    return model.eval(), tok


def make(folder: Path, steps: int = 100, seed: int = 0) -> Path:
    """Train and save the model folder (config.json, model.safetensors, tokenizer files)."""
    model, tok = build(steps, seed)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return folder


if __name__ == "__main__":
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = make(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "tiny_lm")
    lm, tok = AutoModelForCausalLM.from_pretrained(str(target)), AutoTokenizer.from_pretrained(str(target))
    for prompt in ("The striker scored", "The curry tastes", "A heat wave is"):
        out = lm.generate(**tok(prompt, return_tensors="pt"), max_new_tokens=16, do_sample=False)
        print(f"{prompt!r} -> {tok.decode(out[0], skip_special_tokens=True)!r}")
