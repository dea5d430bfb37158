"""Tiny KULLM stand-ins, trained on a few Korean answers: KULLM v1/v2's and KULLM3's architectures.

Built by the tests themselves (no download): a byte-level BPE tokenizer trained on Korean
text, and a short training run on question/answer pairs rendered with the KULLM templates, so
that greedy decoding reproduces the answers in `trained.py` exactly:

- `build()`: Polyglot-ko's GPT-NeoX shape scaled down (its vocabulary size, eos id and rotary
  fraction), on the kullm-v1 and kullm-v2 templates;
- `build(chat=True)`: KULLM3's Llama architecture scaled down, with a KULLM3-style chat template
  (system prompt, `[INST]`, eos `</s>` = 2), on KULLM3's system prompt.

Saved with `save_pretrained` and loaded by the worker through `MODEL_ID=<dir>` like the real
models. Cached by a hash of this file and `trained.py`.

    python -m tests.support.tiny_model [DIR]     # build both (or reuse them); print the GPT-NeoX one's directory
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
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch and transformers load only to train: finding the cached model stays instant
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerFast

from tests.support import trained
from tests.support.trained import CHAT_EXAMPLES, EOS_ID, EXAMPLES, Example

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CACHE = ROOT / ".cache" / "tiny-kullm"
SPECIAL_TOKENS = ["<|pad|>", "<|unk|>", "<|endoftext|>"]
CHAT_SPECIAL_TOKENS = ["<unk>", "<s>", "</s>"]  # Llama's (and KULLM3's): eos `</s>` is id 2
# KULLM3's layout (`trained.render_kullm3_style` renders the same): the system prompt inside the first [INST].
KULLM3_STYLE_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{% set system = messages[0]['content'] %}"
    "{% set turns = messages[1:] %}{% else %}{% set system = '' %}{% set turns = messages %}{% endif %}"
    "{% for m in turns %}{% if m['role'] == 'user' %}[INST] {% if loop.first and system %}"
    "<<SYS>>\n{{ system }}\n<</SYS>>\n\n{% endif %}{{ m['content'] }} [/INST]"
    "{% else %} {{ m['content'] }} {{ eos_token }}{% endif %}{% endfor %}"
)
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
# KULLM3's (Llama, grouped-query attention) shape at the GPT-NeoX one's scale; its vocabulary is the tokenizer's.
CHAT_CONFIG = {
    "hidden_size": 96,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 256,
    "max_position_embeddings": 4096,
    "bos_token_id": 1,
    "eos_token_id": EOS_ID,
    "pad_token_id": 0,
    "tie_word_embeddings": False,
}
TRAIN_STEPS_MAX = 600
LEARNING_RATE = 5e-3
TARGET_LOSS = 0.005


def cache_dir(base: Path = DEFAULT_CACHE, *, chat: bool = False) -> Path:
    """Where the model built by this exact file (and its training examples) lives."""
    sources = Path(__file__).read_bytes() + Path(trained.__file__).read_bytes()
    digest = hashlib.sha256(sources).hexdigest()[:12]
    return base / f"{digest}{'-chat' if chat else ''}-torch{version('torch').split('+')[0]}"


def build(target: Path | None = None, *, chat: bool = False) -> Path:
    """Return a directory holding the trained tiny model (`chat`: the KULLM3 stand-in), building it when missing.

    `KULLM_TINY_MODEL` names a GPT-NeoX one built earlier (the GPU bundle carries one), used as it is.
    """
    prebuilt = os.environ.get("KULLM_TINY_MODEL")
    if target is None and prebuilt and not chat:
        if not (Path(prebuilt) / "ready.json").exists():
            raise RuntimeError(f"KULLM_TINY_MODEL={prebuilt} holds no built tiny model (no ready.json)")
        return Path(prebuilt)
    target = target or cache_dir(chat=chat)
    if (target / "ready.json").exists():
        return target
    started = time.monotonic()
    # Written aside and renamed into place: parallel test workers that all found no model never see half of one.
    building = target.with_name(f"{target.name}.building-{os.getpid()}")
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    examples = CHAT_EXAMPLES if chat else EXAMPLES
    tokenizer = train_tokenizer(chat=chat)
    model = train_model(tokenizer, examples, chat=chat)
    tokenizer.save_pretrained(building)
    model.save_pretrained(building)
    (building / "ready.json").write_text(json.dumps({"built_s": round(time.monotonic() - started, 1)}))
    try:
        building.rename(target)
    except OSError:  # another process finished first (the target exists now): use its model
        shutil.rmtree(building, ignore_errors=True)
    return target


def train_tokenizer(*, chat: bool = False) -> PreTrainedTokenizerFast:
    """A byte-level BPE over the training text, with eos at id 2 like Polyglot-ko (`<|endoftext|>`) and KULLM3
    (`</s>`)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = CHAT_SPECIAL_TOKENS if chat else SPECIAL_TOKENS
    unk = specials[0] if chat else "<|unk|>"
    bpe = Tokenizer(models.BPE(unk_token=unk))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1200,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = [e.prompt + e.answer + e.continues for e in (CHAT_EXAMPLES if chat else EXAMPLES)]
    bpe.train_from_iterator(corpus * 4, trainer=trainer)
    if chat:
        tokenizer = PreTrainedTokenizerFast(
            tokenizer_object=bpe, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<unk>"
        )
        tokenizer.chat_template = KULLM3_STYLE_TEMPLATE
    else:
        tokenizer = PreTrainedTokenizerFast(
            tokenizer_object=bpe, pad_token="<|pad|>", unk_token="<|unk|>", eos_token="<|endoftext|>"
        )
        tokenizer.chat_template = CHAT_TEMPLATE
    assert tokenizer.eos_token_id == EOS_ID
    return tokenizer


def train_model(tokenizer: PreTrainedTokenizerFast, examples: list[Example], *, chat: bool = False) -> PreTrainedModel:
    """Train on the answer tokens until greedy decoding reproduces every example."""
    import torch
    import torch.nn.functional as F
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model: Any
    if chat:
        model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), **CHAT_CONFIG))
    else:
        model = GPTNeoXForCausalLM(GPTNeoXConfig(**CONFIG))
    input_ids, mask, rows, positions, targets = _training_batch(tokenizer, examples)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE)
    model.train()
    for step in range(1, TRAIN_STEPS_MAX + 1):
        hidden = model.base_model(input_ids=input_ids, attention_mask=mask).last_hidden_state
        # Project only the answer positions: the 30080-wide softmax over padding dominated the cost.
        loss = F.cross_entropy(model.get_output_embeddings()(hidden[rows, positions]), targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        if loss.item() < TARGET_LOSS and (step % 10 == 0) and _reproduces(model, tokenizer, examples):
            break
    else:
        raise RuntimeError(f"tiny model did not learn its examples in {TRAIN_STEPS_MAX} steps")
    model.eval()
    return model


def _training_batch(
    tokenizer: PreTrainedTokenizerFast, examples: list[Example]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded sequences and the (row, position) → next-token targets of their answers."""
    import torch

    sequences = [_sequence(tokenizer, e) for e in examples]
    width = max(len(s) for s in sequences)
    input_ids = torch.zeros((len(sequences), width), dtype=torch.long)
    mask = torch.zeros_like(input_ids)
    rows, positions, targets = [], [], []
    for i, (example, seq) in enumerate(zip(examples, sequences, strict=True)):
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


def _reproduces(model: Any, tokenizer: PreTrainedTokenizerFast, examples: list[Example]) -> bool:
    import torch

    model.eval()
    try:
        with torch.no_grad():
            for example in examples:
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
    if len(sys.argv) == 1:
        build(chat=True)
