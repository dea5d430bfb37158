"""The tests' judge: a tiny GPT-NeoX model, trained here, that replies to any `kullm eval` judge prompt of the
kullm-2023 protocol (rendered by the worker's own prompt builder, the rubric as 맥락) with six score lines, and then
ends. Its scores are drawn at random in training, so at each score the model's distribution is spread over the
allowed values: the probability-weighted score differs from the one written, and the tests can check the weighting.

python -m testkit.judge_model    # build it (or reuse it); print its directory
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

from inference import demo, demo_answers
from inference.demo_answers import Example
from inference.prompt import PromptBuilder, Template
from kullm.eval import protocols
from kullm.eval.items import Item, load_items
from kullm.eval.protocols import KULLM_2023, read_reply

ROOT = Path(__file__).resolve().parents[1]
# Each criterion's scores in training, value: weight (so that greedy decoding writes the most likely one).
SCORE_WEIGHTS: dict[str, dict[int, float]] = {
    "understandable": {0: 0.3, 1: 0.7},
    "natural": {1: 0.2, 2: 0.5, 3: 0.3},
    "context": {1: 0.25, 2: 0.45, 3: 0.3},
    "interesting": {1: 0.5, 2: 0.35, 3: 0.15},
    "instruction": {0: 0.35, 1: 0.65},
    "overall": {1: 0.15, 2: 0.35, 3: 0.3, 4: 0.15, 5: 0.05},
}
TRAINED_ITEMS = 12  # judge prompts are built on the first items, each with EXAMPLES_PER_ITEM made-up answers
EXAMPLES_PER_ITEM = 2
CHECKED_ITEMS = range(200, 204)  # prompts it never saw, whose greedy replies must read as six scores
STEPS = 120
LEARNING_RATE = 5e-3
WINDOW = 2048
# Smaller than the demo model (a step over whole judge prompts is most of the build's time), with the tokenizer's
# own vocabulary rather than Polyglot-ko's 30,080 (the output layer was most of a step's work).
SHAPE = {"hidden_size": 64, "intermediate_size": 256}


def digest() -> str:
    sources = b"".join(Path(m.__file__ or "").read_bytes() for m in (sys.modules[__name__], protocols, demo))
    return hashlib.sha256(sources + Path(demo_answers.__file__).read_bytes()).hexdigest()[:12]


def cache_dir() -> Path:
    return ROOT / ".cache" / "tiny-kullm" / f"judge-{digest()}-torch{version('torch').split('+')[0]}"


def _answers() -> list[str]:
    """Made-up answers: pieces of the demo model's trained answers (what the judged tiny model writes from)."""
    texts = [e.answer for e in demo_answers.EXAMPLES]
    return [piece.strip() + "." for text in texts for piece in text.split(".") if piece.strip()]


def _reply(rng: random.Random) -> str:
    lines = []
    for criterion in KULLM_2023.criteria:
        weights = SCORE_WEIGHTS[criterion.key]
        lines.append(f"{criterion.name}: {rng.choices(list(weights), list(weights.values()))[0]}")
    return "\n".join(lines)


def _prompt(builder: PromptBuilder, item: Item, answer: str) -> str:
    """The judge prompt exactly as the worker renders the API's system and user messages."""
    system, user = KULLM_2023.messages(item, answer)
    return builder.build(user["content"], instructions=system["content"], max_new_tokens=64).text


def build(target: Path | None = None) -> Path:
    target = target or cache_dir()
    if (target / demo.READY).exists():
        return target
    started = time.monotonic()
    rng = random.Random(0)
    items, pieces = load_items(), _answers()
    answers = [" ".join(rng.sample(pieces, rng.randint(1, 3))) for _ in range(TRAINED_ITEMS * EXAMPLES_PER_ITEM)]
    corpus = [KULLM_2023.instructions, *(i.instruction + "\n" + i.input for i in items), *pieces]
    tokenizer: Any = demo.train_tokenizer(corpus=corpus, vocab_size=8000)
    builder = PromptBuilder(Template.KULLM_V1, lambda text: len(tokenizer(text).input_ids), WINDOW)
    examples = [
        Example(_prompt(builder, items[n // EXAMPLES_PER_ITEM], answer), _reply(rng))
        for n, answer in enumerate(answers)
    ]
    model = _train(tokenizer, examples)
    checks = [_prompt(builder, items[i], pieces[i % len(pieces)]) for i in CHECKED_ITEMS]
    for prompt in checks:
        reply = _greedy(model, tokenizer, prompt)
        if read_reply(KULLM_2023, reply) is None:
            raise RuntimeError(f"the judge model's reply to an unseen prompt does not read as scores: {reply!r}")
    building = target.with_name(f"{target.name}.building")
    shutil.rmtree(building, ignore_errors=True)
    tokenizer.save_pretrained(building)
    model.save_pretrained(building)
    (building / demo.READY).write_text(json.dumps({"digest": digest(), "built_s": round(time.monotonic() - started)}))
    try:
        building.rename(target)
    except OSError:  # another process built it first
        shutil.rmtree(building, ignore_errors=True)
    return target


def _train(tokenizer: Any, examples: list[Example]) -> Any:
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(0)
    model: Any = GPTNeoXForCausalLM(GPTNeoXConfig(**{**demo.CONFIG, **SHAPE, "vocab_size": len(tokenizer)}))
    demo.fit(model, demo.training_batch(tokenizer, examples), STEPS, LEARNING_RATE)
    return model


def _greedy(model: Any, tokenizer: Any, prompt: str) -> str:
    import torch

    ids = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(
            **ids, max_new_tokens=80, do_sample=False, eos_token_id=demo_answers.EOS_ID, pad_token_id=0
        )
    return str(tokenizer.decode(out[0, ids.input_ids.shape[1] :], skip_special_tokens=True))


if __name__ == "__main__":
    print(build())
