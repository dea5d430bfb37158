"""What QUANTIZATION=int8 changes in a model's output, on the CPU, where the weights are real.

The models are the project's trained tiny models (random weights say nothing about quality): the demo model
(GPT-NeoX, KULLM v1/v2's architecture), its KULLM3-style twin (Llama) and the tiny judge. For each, in full
precision and with its blocks' linear layers in int8 (`inference.quantize`):

- greedy agreement: the full model's greedy answer (GREEDY_TOKENS tokens) to each of the first ITEMS
  instructions of the KULLM evaluation set, in the seed's template; the share of positions where the int8
  model, fed the same tokens, picks the same next token, and the share of answers it reproduces whole;
- perplexity of those greedy answers (given their prompts), under each: how much less likely int8 finds what
  the full model writes. (These models know a few answers by heart; on other text their perplexity runs to
  millions, and its change says little.)

    python -m bench.int8

For your own deployment, compare answers, not tokens: `kullm eval run` against an int8 worker and an fp16
one, then `kullm eval compare` (README, "Evaluating a deployment").
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from inference.prompt import render_kullm_v1
from inference.quantize import quantize_int8, weight_bytes
from kullm.eval.items import load_items
from testkit import judge_model, tiny_model

ITEMS = 100
GREEDY_TOKENS = 32


def greedy(model: Any, ids: list[int], tokens: int) -> list[int]:
    out = model.generate(torch.tensor([ids]), max_new_tokens=tokens, do_sample=False, pad_token_id=0)
    return [int(t) for t in out[0, len(ids) :]]


def answer_logits(model: Any, prompt: list[int], answer: list[int]) -> torch.Tensor:
    """The model's logits for each answer token, fed the prompt and the answer before it."""
    with torch.no_grad():
        logits = model(torch.tensor([prompt + answer])).logits[0].float()
    return logits[len(prompt) - 1 : len(prompt) + len(answer) - 1]


def compare(name: str, directory: Any) -> str:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(directory)
    full = AutoModelForCausalLM.from_pretrained(directory).eval()
    int8 = AutoModelForCausalLM.from_pretrained(directory).eval()
    replaced = quantize_int8(int8)
    agree = positions = whole = 0
    surprise = {"full": 0.0, "int8": 0.0}
    for item in load_items(ITEMS):
        prompt = tokenizer(render_kullm_v1(item.instruction, item.input), add_special_tokens=False).input_ids
        answer = greedy(full, prompt, GREEDY_TOKENS)
        target = torch.tensor(answer)
        for kind, model in (("full", full), ("int8", int8)):
            logits = answer_logits(model, prompt, answer)
            surprise[kind] += float(torch.nn.functional.cross_entropy(logits, target, reduction="sum"))
            if kind == "int8":
                agree += int((logits.argmax(-1) == target).sum())
        positions += len(answer)
        whole += greedy(int8, prompt, GREEDY_TOKENS) == answer
    before, after = math.exp(surprise["full"] / positions), math.exp(surprise["int8"] / positions)
    return (
        f"| {name} | {replaced} | {weight_bytes(full) / 1e6:.1f} → {weight_bytes(int8) / 1e6:.1f} | "
        f"{agree / positions:.1%} | {whole}/{ITEMS} | {before:.2f} → {after:.2f} ({after / before - 1:+.2%}) |"
    )


def main() -> None:
    started = time.perf_counter()
    rows = [
        compare("demo (GPT-NeoX)", tiny_model.build()),
        compare("demo chat (Llama)", tiny_model.build(chat=True)),
        compare("judge (GPT-NeoX)", judge_model.build()),
    ]
    print(
        f"# QUANTIZATION=int8 against full precision (fp32) — CPU, {time.strftime('%Y-%m-%d')}\n\n"
        f"The full model's greedy answers ({GREEDY_TOKENS} tokens) to the first {ITEMS} KULLM evaluation "
        "instructions: how often int8 picks the same next token, whole answers it reproduces, the answers' "
        "perplexity under each.\n\n"
        "| model | linear layers in int8 | MB of weights | next-token agreement | whole answers the same | "
        "perplexity of the answers |\n|---|---|---|---|---|---|\n"
        + "\n".join(rows)
        + f"\n\n({time.perf_counter() - started:.0f} s)"
    )


if __name__ == "__main__":
    main()
