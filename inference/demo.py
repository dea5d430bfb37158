"""The demo model (`MODEL=demo`, `kullm up --demo`): a tiny KULLM stand-in trained here, in about a minute on a CPU.

It lets a newcomer run the whole chain — Redis, a worker, `kullm ask`, the chat adapters — without a GPU, a
download or the Hugging Face Hub. It knows only the few answers in `inference.demo_answers` (the seed README's
「딥러닝이 뭐야?」 among them); anything else gets fluent-looking nonsense. The tests use the same model.

Built without any download: a byte-level BPE tokenizer trained on Korean text, and a short training run on
question/answer pairs rendered with the KULLM templates, so that greedy decoding reproduces the answers exactly:

- `build(target)`: Polyglot-ko's GPT-NeoX shape scaled down (its vocabulary size, eos id and rotary fraction),
  on the kullm-v1 and kullm-v2 templates;
- `build(target, chat=True)`: KULLM3's Llama architecture scaled down, with a KULLM3-style chat template
  (system prompt, `[INST]`, eos `</s>` = 2), on KULLM3's system prompt.

Saved with `save_pretrained` and loaded by the worker like the real models. A directory is reused while
its `ready.json` names the digest of this file and `demo_answers.py`; otherwise it is built again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inference import demo_answers
from inference.demo_answers import CHAT_EXAMPLES, EOS_ID, EXAMPLES, Example

if TYPE_CHECKING:  # torch and transformers load only to train: finding a built model stays instant
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerFast

READY = "ready.json"
SPECIAL_TOKENS = ["<|pad|>", "<|unk|>", "<|endoftext|>"]
CHAT_SPECIAL_TOKENS = ["<unk>", "<s>", "</s>"]  # Llama's (and KULLM3's): eos `</s>` is id 2
# KULLM3's layout (`demo_answers.render_kullm3_style` renders the same): the system prompt inside the first [INST].
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

CONFIG: dict[str, Any] = {
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
CHAT_CONFIG: dict[str, Any] = {
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
# The questions the demo model answers (the GPT-NeoX one, kullm-v1 template), as `kullm up --demo` lists them.
DEMO_QUESTIONS = (
    "딥러닝이 뭐야?",
    "한국의 수도는 어디야?",
    "고려대학교는 어디에 있어?",
    "인사해줘",
    "긴 이야기를 들려줘",
)


def digest() -> str:
    """What the model built here depends on: this file and its training examples."""
    sources = Path(__file__).read_bytes() + Path(demo_answers.__file__).read_bytes()
    return hashlib.sha256(sources).hexdigest()[:12]


def is_built(target: Path) -> bool:
    """Whether `target` holds the model this code builds (not one built by an older version of it)."""
    try:
        return bool(json.loads((target / READY).read_text())["digest"] == digest())
    except (OSError, ValueError, KeyError, TypeError):
        return False


def build(target: Path, *, chat: bool = False) -> Path:
    """`target`, holding the trained demo model (`chat`: the KULLM3 stand-in), built when missing or out of date."""
    if is_built(target):
        return target
    started = time.monotonic()
    # Written aside and renamed into place: processes that all found no model never see half of one.
    building = target.with_name(f"{target.name}.building-{os.getpid()}")
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    tokenizer = train_tokenizer(chat=chat)
    model = train_model(tokenizer, CHAT_EXAMPLES if chat else EXAMPLES, chat=chat)
    tokenizer.save_pretrained(building)
    model.save_pretrained(building)
    ready = {"digest": digest(), "built_s": round(time.monotonic() - started, 1)}
    (building / READY).write_text(json.dumps(ready))
    if target.exists() and not is_built(target):
        shutil.rmtree(target, ignore_errors=True)  # an out-of-date build
    try:
        building.rename(target)
    except OSError:  # another process finished first (the target exists now): use its model
        shutil.rmtree(building, ignore_errors=True)
    return target


def train_tokenizer(
    *, chat: bool = False, corpus: list[str] | None = None, vocab_size: int = 1200
) -> PreTrainedTokenizerFast:
    """A byte-level BPE over the training text (the examples', unless `corpus` is given), with eos at id 2 like
    Polyglot-ko (`<|endoftext|>`) and KULLM3 (`</s>`)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    fast: Any = PreTrainedTokenizerFast  # untyped in transformers
    specials = CHAT_SPECIAL_TOKENS if chat else SPECIAL_TOKENS
    unk = specials[0] if chat else "<|unk|>"
    bpe = Tokenizer(models.BPE(unk_token=unk))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    if corpus is None:
        corpus = [e.prompt + e.answer + e.continues for e in (CHAT_EXAMPLES if chat else EXAMPLES)]
    bpe.train_from_iterator(corpus * 4, trainer=trainer)
    tokenizer: Any
    if chat:
        tokenizer = fast(tokenizer_object=bpe, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<unk>")
        tokenizer.chat_template = KULLM3_STYLE_TEMPLATE
    else:
        tokenizer = fast(tokenizer_object=bpe, pad_token="<|pad|>", unk_token="<|unk|>", eos_token="<|endoftext|>")
        tokenizer.chat_template = CHAT_TEMPLATE
    if tokenizer.eos_token_id != EOS_ID:
        raise RuntimeError(f"the demo tokenizer's eos is {tokenizer.eos_token_id}, not {EOS_ID}")
    return tokenizer  # type: ignore[no-any-return]


def train_model(tokenizer: PreTrainedTokenizerFast, examples: list[Example], *, chat: bool = False) -> PreTrainedModel:
    """Train on the answer tokens until greedy decoding reproduces every example."""
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model: Any
    if chat:
        model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), **CHAT_CONFIG))
    else:
        model = GPTNeoXForCausalLM(GPTNeoXConfig(**CONFIG))
    learned = fit(
        model,
        training_batch(tokenizer, examples),
        TRAIN_STEPS_MAX,
        LEARNING_RATE,
        lambda step, loss: loss < TARGET_LOSS and step % 10 == 0 and _reproduces(model, tokenizer, examples),
    )
    if not learned:
        raise RuntimeError(f"the demo model did not learn its examples in {TRAIN_STEPS_MAX} steps")
    return model  # type: ignore[no-any-return]


def fit(
    model: Any,
    batch: tuple[torch.Tensor, ...],
    steps: int,
    learning_rate: float,
    learned: Callable[[int, float], bool] | None = None,
) -> bool:
    """Train on `batch`'s next-token targets (`training_batch`) for up to `steps` steps, or until `learned(step,
    loss)`; the model is left in eval mode. Returns whether `learned` said so (True without one)."""
    import torch
    import torch.nn.functional as F

    input_ids, mask, rows, positions, targets = batch
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate)
    model.train()
    try:
        for step in range(1, steps + 1):
            hidden = model.base_model(input_ids=input_ids, attention_mask=mask).last_hidden_state
            # Project only the answer positions: the 30080-wide softmax over padding dominated the cost.
            loss: Any = F.cross_entropy(model.get_output_embeddings()(hidden[rows, positions]), targets)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad()
            if learned is not None and learned(step, loss.item()):
                return True
        return learned is None
    finally:
        model.eval()


def training_batch(
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
    ids: list[int] = tokenizer(example.prompt + " " + example.answer + example.continues).input_ids
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
                text: Any = tokenizer.decode(out[0, prompt.input_ids.shape[1] :], skip_special_tokens=True)
                if not text.strip().startswith(example.answer):
                    return False
        return True
    finally:
        model.train()
