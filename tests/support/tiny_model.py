"""A tiny KULLM stand-in: Polyglot-ko's GPT-NeoX shape scaled down, trained on a few Korean answers.

Built by the tests themselves (no download): a byte-level BPE tokenizer trained on Korean
text, a GPT-NeoX model with Polyglot-ko's vocabulary size, eos id and rotary fraction, and a
short training run on question/answer pairs rendered with the KULLM templates, so that greedy
decoding reproduces the answers below exactly. Saved with `save_pretrained` and loaded by the
worker through `MODEL_ID=<dir>` like the real model. Cached by a hash of this file.

    python -m tests.support.tiny_model [DIR]     # build (or reuse) and print the directory
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch and transformers load only to train: finding the cached model stays instant
    import torch
    from transformers import GPTNeoXForCausalLM, PreTrainedTokenizerFast

from tests.support import trained
from tests.support.trained import EOS_ID, EXAMPLES, Example

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CACHE = ROOT / ".cache" / "tiny-kullm"
SPECIAL_TOKENS = ["<|pad|>", "<|unk|>", "<|endoftext|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}### 질문: {{ m['content'] }}\n\n"
    "{% else %}### 답변: {{ m['content'] }}\n\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}### 답변:{% endif %}"
)

CONFIG = {
    "vocab_size": 30080,
    "hidden_size": 96,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 384,
    "rotary_pct": 0.5,
    "max_position_embeddings": 2048,
    "bos_token_id": 0,
    "eos_token_id": EOS_ID,
    "pad_token_id": 0,
    "use_parallel_residual": True,
    "tie_word_embeddings": False,
}
TRAIN_STEPS_MAX = 600
LEARNING_RATE = 5e-3
TARGET_LOSS = 0.005


def cache_dir(base: Path = DEFAULT_CACHE) -> Path:
    """Where the model built by this exact file (and its training examples) lives."""
    sources = Path(__file__).read_bytes() + Path(trained.__file__).read_bytes()
    digest = hashlib.sha256(sources).hexdigest()[:12]
    return base / f"{digest}-torch{version('torch').split('+')[0]}"


def build(target: Path | None = None) -> Path:
    """Return a directory holding the trained tiny model, building it when missing.

    `KULLM_TINY_MODEL` names a directory built earlier (the GPU bundle carries one), used as it is.
    """
    prebuilt = os.environ.get("KULLM_TINY_MODEL")
    if target is None and prebuilt:
        if not (Path(prebuilt) / "ready.json").exists():
            raise RuntimeError(f"KULLM_TINY_MODEL={prebuilt} holds no built tiny model (no ready.json)")
        return Path(prebuilt)
    target = target or cache_dir()
    if (target / "ready.json").exists():
        return target
    started = time.monotonic()
    # Written aside and renamed into place: parallel test workers that all found no model never see half of one.
    building = target.with_name(f"{target.name}.building-{os.getpid()}")
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    tokenizer = train_tokenizer()
    model = train_model(tokenizer)
    tokenizer.save_pretrained(building)
    model.save_pretrained(building)
    (building / "ready.json").write_text(json.dumps({"built_s": round(time.monotonic() - started, 1)}))
    try:
        building.rename(target)
    except OSError:  # another process finished first (the target exists now): use its model
        shutil.rmtree(building, ignore_errors=True)
    return target


def train_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE over the training text, with eos `<|endoftext|>` at id 2 like Polyglot-ko."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token="<|unk|>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1200,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = [e.prompt + e.answer + e.continues for e in EXAMPLES]
    bpe.train_from_iterator(corpus * 4, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, pad_token="<|pad|>", unk_token="<|unk|>", eos_token="<|endoftext|>"
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    assert tokenizer.eos_token_id == EOS_ID
    return tokenizer


def train_model(tokenizer: PreTrainedTokenizerFast) -> GPTNeoXForCausalLM:
    """Train on the answer tokens until greedy decoding reproduces every example."""
    import torch
    import torch.nn.functional as F
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(0)
    model = GPTNeoXForCausalLM(GPTNeoXConfig(**CONFIG))
    input_ids, mask, rows, positions, targets = _training_batch(tokenizer)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE)
    model.train()
    for step in range(1, TRAIN_STEPS_MAX + 1):
        hidden = model.gpt_neox(input_ids=input_ids, attention_mask=mask).last_hidden_state
        # Project only the answer positions: the 30080-wide softmax over padding dominated the cost.
        loss = F.cross_entropy(model.lm_head(hidden[rows, positions]), targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        if loss.item() < TARGET_LOSS and (step % 10 == 0) and _reproduces(model, tokenizer):
            break
    else:
        raise RuntimeError(f"tiny model did not learn its examples in {TRAIN_STEPS_MAX} steps")
    model.eval()
    return model


def _training_batch(
    tokenizer: PreTrainedTokenizerFast,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded sequences and the (row, position) → next-token targets of their answers."""
    import torch

    sequences = [_sequence(tokenizer, e) for e in EXAMPLES]
    width = max(len(s) for s in sequences)
    input_ids = torch.zeros((len(sequences), width), dtype=torch.long)
    mask = torch.zeros_like(input_ids)
    rows, positions, targets = [], [], []
    for i, (example, seq) in enumerate(zip(EXAMPLES, sequences, strict=True)):
        input_ids[i, : len(seq)] = torch.tensor(seq)
        mask[i, : len(seq)] = 1
        prompt_len = len(tokenizer(example.prompt).input_ids)
        for j in range(prompt_len - 1, len(seq) - 1):
            rows.append(i)
            positions.append(j)
            targets.append(seq[j + 1])
    return input_ids, mask, torch.tensor(rows), torch.tensor(positions), torch.tensor(targets)


def _sequence(tokenizer: PreTrainedTokenizerFast, example: Example) -> list[int]:
    ids = tokenizer(example.prompt + " " + example.answer + example.continues).input_ids
    return ids if example.continues else [*ids, EOS_ID]


def _reproduces(model: GPTNeoXForCausalLM, tokenizer: PreTrainedTokenizerFast) -> bool:
    import torch

    model.eval()
    try:
        with torch.no_grad():
            for example in EXAMPLES:
                prompt = tokenizer(example.prompt, return_tensors="pt")
                length = len(_sequence(tokenizer, example))
                out = model.generate(
                    **prompt, max_new_tokens=length, do_sample=False, eos_token_id=EOS_ID, pad_token_id=0
                )
                text = tokenizer.decode(out[0, prompt.input_ids.shape[1] :], skip_special_tokens=True)
                if not text.strip().startswith(example.answer):
                    return False
        return True
    finally:
        model.train()


if __name__ == "__main__":
    print(build(Path(sys.argv[1]) if len(sys.argv) > 1 else None))
