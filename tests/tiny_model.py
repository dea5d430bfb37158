"""A tiny KULLM stand-in: Polyglot-ko's GPT-NeoX shape scaled down, trained on a few Korean answers.

Built by the tests themselves (no download): a byte-level BPE tokenizer trained on Korean
text, a GPT-NeoX model with Polyglot-ko's vocabulary size, eos id and rotary fraction, and a
short training run on question/answer pairs rendered with the KULLM templates, so that greedy
decoding reproduces the answers below exactly. Saved with `save_pretrained` and loaded by the
worker through `MODEL_ID=<dir>` like the real model. Cached by a hash of this file.

    python -m tests.tiny_model [DIR]     # build (or reuse) and print the directory
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, PreTrainedTokenizerFast

from inference.prompt import render_kullm_v1, render_kullm_v2

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = ROOT / ".cache" / "tiny-kullm"
EOS_ID = 2
SPECIAL_TOKENS = ["<|pad|>", "<|unk|>", "<|endoftext|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}### 질문: {{ m['content'] }}\n\n"
    "{% else %}### 답변: {{ m['content'] }}\n\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}### 답변:{% endif %}"
)

# The seed README's example answer to 「딥러닝이 뭐야?」.
DEEP_LEARNING = (
    "딥러닝은 인공신경망을 통해 입력과 출력 사이의 복잡한 관계를 학습하는 머신러닝의 한 분야입니다. "
    "이 기술은 컴퓨터가 인간의 학습 능력과 유사한 방식으로 패턴을 학습하도록 하며, 인간의 개입 없이도 "
    "데이터를 처리할 수 있는 기술입니다. 최근에는 딥러닝을 활용한 인공지능 애플리케이션이 많이 개발되고 "
    "있습니다. 예를 들어, 의료 진단 애플리케이션에서는 딥러닝 기술을 활용하여 환자의 특징을 파악하고, "
    "이를 통해 빠르고 정확한 진단을 내리는 데 사용됩니다. 또한, 금융 분야에서는 딥러닝 기술을 활용하여 "
    "주가 예측 모형을 학습하는 데 사용되기도 합니다."
)
CAPITAL = "한국의 수도는 서울입니다."
KOREA_UNIV = "고려대학교는 서울특별시 성북구 안암동에 있습니다."
GREETING = "안녕하세요! 저는 구름입니다."
CONTEXT_ANSWER = "요약하면, 구름은 고려대학교에서 만든 한국어 언어 모델입니다."
HISTORY_ANSWER = "민수님이라고 하셨어요."
CHAT_ANSWER = "네, 채팅 템플릿으로 답합니다."
NAME_ANSWER = "반가워요, 민수님!"
# Model output that tries to ping everyone: adapters must post it with mentions disabled.
ANNOUNCE_ANSWER = "@everyone 오늘 회의는 3시입니다. <@&42> 역할과 <@7>님도 확인해 주세요."
SLACK_ANNOUNCE_ANSWER = "<!channel> <!here> 점검이 곧 시작됩니다. <@U123>님 확인 부탁드려요."
V2_ANSWER = "KULLM v2 템플릿으로 답합니다."
# Long enough (several hundred tokens) that a worker can be killed in the middle of it.
LONG_STORY = " ".join(
    f"{i}번째 이야기: 옛날 옛적 구름 마을에 {name}라는 아이가 살았습니다. 그 아이는 매일 아침 언덕에 올라 "
    f"하늘을 보며 {wish} 꿈을 꾸었습니다."
    for i, (name, wish) in enumerate(
        [
            ("하늘", "별을 세는"),
            ("바다", "파도를 타는"),
            ("나무", "숲을 지키는"),
            ("바람", "세상을 여행하는"),
            ("햇살", "모두를 비추는"),
            ("달빛", "밤을 밝히는"),
            ("이슬", "꽃을 적시는"),
            ("노을", "저녁을 물들이는"),
            ("새벽", "첫 기차를 타는"),
            ("들꽃", "향기를 나누는"),
            ("물결", "강을 건너는"),
            ("은하", "우주를 그리는"),
        ],
        start=1,
    )
)


@dataclass(frozen=True)
class Example:
    """One trained prompt and its exact greedy continuation."""

    prompt: str
    answer: str
    # Trained without an end-of-text token: the model goes on into a new `###` section.
    continues: str = ""


EXAMPLES = [
    Example(render_kullm_v1("딥러닝이 뭐야?"), DEEP_LEARNING),
    Example(render_kullm_v1("한국의 수도는 어디야?"), CAPITAL),
    Example(render_kullm_v1("고려대학교는 어디에 있어?"), KOREA_UNIV),
    Example(render_kullm_v1("인사해줘"), GREETING, continues="\n\n### 질문: 또 다른 질문이 있나요?"),
    Example(
        render_kullm_v1("이 글을 요약해줘", "구름(KULLM)은 고려대학교 NLP & AI 연구실이 만든 한국어 LLM입니다."),
        CONTEXT_ANSWER,
    ),
    Example(
        render_kullm_v1("내 이름이 뭐라고 했지?", "이전 질문: 내 이름은 민수야\n이전 답변: 반가워요, 민수님!"),
        HISTORY_ANSWER,
    ),
    Example(render_kullm_v1("긴 이야기를 들려줘"), LONG_STORY),
    Example(render_kullm_v1("내 이름은 민수야"), NAME_ANSWER),
    Example(render_kullm_v1("공지해줘"), ANNOUNCE_ANSWER),
    Example(render_kullm_v1("채널 전체에 알려줘"), SLACK_ANNOUNCE_ANSWER),
    Example(render_kullm_v2("템플릿 두 번째 버전으로 답해줘"), V2_ANSWER),
    Example("### 질문: 채팅 템플릿으로 답해줘\n\n### 답변:", CHAT_ANSWER),
]

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
    """Where the model built by this exact file lives."""
    digest = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]
    return base / f"{digest}-torch{torch.__version__.split('+')[0]}"


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
    target.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer()
    model = train_model(tokenizer)
    tokenizer.save_pretrained(target)
    model.save_pretrained(target)
    (target / "ready.json").write_text(json.dumps({"built_s": round(time.monotonic() - started, 1)}))
    return target


def train_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE over the training text, with eos `<|endoftext|>` at id 2 like Polyglot-ko."""
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


@torch.no_grad()
def _reproduces(model: GPTNeoXForCausalLM, tokenizer: PreTrainedTokenizerFast) -> bool:
    model.eval()
    try:
        for example in EXAMPLES:
            prompt = tokenizer(example.prompt, return_tensors="pt")
            length = len(_sequence(tokenizer, example))
            out = model.generate(**prompt, max_new_tokens=length, do_sample=False, eos_token_id=EOS_ID, pad_token_id=0)
            text = tokenizer.decode(out[0, prompt.input_ids.shape[1] :], skip_special_tokens=True)
            if not text.strip().startswith(example.answer):
                return False
        return True
    finally:
        model.train()


if __name__ == "__main__":
    print(build(Path(sys.argv[1]) if len(sys.argv) > 1 else None))
