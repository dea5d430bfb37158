"""Speculative steps (SPECULATIVE) against plain decoding, side by side in one process.

Two workloads, each at 1 and 16 questions in flight, every setting measured in interleaved rounds:

- 맞춤법 교정: a ~400-token Korean text with spelling and spacing mistakes, to be returned corrected (the
  answer copies its 맥락 but for the edits): plain decoding (SPECULATIVE=off) against prompt-lookup
  drafts (auto: a task's requests say they copy). The model is the architecture's shape with random
  weights whose output layer is fit (least squares on the hidden states of the prompt and its corrected
  text) to answer exactly that text, then eos, under the seed's sampling: it decodes the answer a real
  proofreader would, at the cost of the real shape, so the speed-up measured is the one this text's
  edits allow. Its answer is checked before anything is timed.
- plain questions (the engine benchmark's prompts, 128 new tokens each): off against auto (they do not
  copy, so they do not draft) and against on (they draft wherever their text repeats itself, until their
  guesses fail): what speculative steps cost the questions that gain nothing from them.

    python -m bench.speculative                                  # mid-size GPT-NeoX on the CPU, 2 rounds
    python -m bench.speculative --architecture polyglot-ko-12.8b --device cuda --dtype float16

Only one engine exists at a time; all share the one model. Each row gives every round's tokens/s; a ratio's
range is over the rounds (each round's two settings measured one after the other).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from inference.engine import GenerationRequest, Sampling
from inference.engines.builtin import BuiltinEngine
from inference.engines.builtin.engine import Speculation
from inference.model import resolve_device, resolve_dtype
from inference.prompt import render_kullm_v1
from inference.tasks import PROOFREAD
from testkit.random_weights import ARCHITECTURES, random_model, random_model_tokenizer

# A text with the mistakes 맞춤법 교정 is asked to fix (되/돼, 안/않, 띄어쓰기, 몇일, 어의없다 …) and the
# corrected text the fitted model answers.
TEXT = (
    "오늘 회의에서 결정된 내용을 정리해서 공유 드립니다. 다음주 부터 새 일정이 적용 되니 확인 부탁 드려요. "
    "첫째, 매주 월요일 오전 열시에 하던 회의는 화요일 오후 두시로 바뀝니다. 회의실이 안 되면 온라인으로 "
    "진행할께요. 둘째, 보고서 제출 기한은 몇일 늦춰져서 금요일 까지 입니다. 늦게 내도 괜찮치만 미리 "
    "말해주세요. 셋째, 새로 오신 분들은 이번주 안에 계정 신청을 해야되요. 신청 방법은 공지 게시판에 "
    "올려 놨습니다. 혹시 모르는게 있으면 언제든지 물어 봐주세요. 어의없는 실수가 없도록 다들 한번 더 "
    "확인해 주시길 바랍니다. 그리고 지난번에 말씀 드린 설문 조사는 아직 않 하신 분이 많아요. 오늘 안으로 "
    "꼭 참여해 주세요. 결과는 다음 회의때 함께 보겠습니다. 감사합니다."
)
CORRECTED = (
    "오늘 회의에서 결정된 내용을 정리해서 공유드립니다. 다음 주부터 새 일정이 적용되니 확인 부탁드려요. "
    "첫째, 매주 월요일 오전 열 시에 하던 회의는 화요일 오후 두 시로 바뀝니다. 회의실이 안 되면 온라인으로 "
    "진행할게요. 둘째, 보고서 제출 기한은 며칠 늦춰져서 금요일까지입니다. 늦게 내도 괜찮지만 미리 "
    "말해 주세요. 셋째, 새로 오신 분들은 이번 주 안에 계정 신청을 해야 돼요. 신청 방법은 공지 게시판에 "
    "올려놨습니다. 혹시 모르는 게 있으면 언제든지 물어봐 주세요. 어이없는 실수가 없도록 다들 한 번 더 "
    "확인해 주시길 바랍니다. 그리고 지난번에 말씀드린 설문 조사는 아직 안 하신 분이 많아요. 오늘 안으로 "
    "꼭 참여해 주세요. 결과는 다음 회의 때 함께 보겠습니다. 감사합니다."
)
PLAIN_QUESTIONS = [
    "딥러닝이 뭐야?",
    "한국의 수도는 어디야?",
    "좋은 회의를 하려면 무엇을 준비해야 할까?",
    "파이썬으로 리스트를 정렬하는 방법을 알려 줘.",
]
PLAIN_TOKENS = 128
# The fitted answer's logit over every other token's (about 0 there): its probability stays ~1 at temperature 0.7.
MARGIN = 24.0


@dataclass
class Measured:
    """One setting's rounds."""

    tokens_per_s: list[float] = field(default_factory=list)
    speculation: list[Speculation] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)  # decode steps per round
    tokens: list[int] = field(default_factory=list)  # answer tokens per round
    corrected: int = 0  # 맞춤법 교정 answers that were the corrected text

    def shown(self) -> str:
        return " / ".join(f"{value:.1f}" for value in self.tokens_per_s)


def proofreader(architecture: str, dtype: torch.dtype, device: torch.device) -> tuple[Any, Any, str]:
    """The shape with random weights, its output layer fit to answer TEXT's proofreading with CORRECTED: the model,
    its tokenizer and the prompt."""
    torch.manual_seed(0)
    model = random_model(architecture, dtype, device).eval()
    tokenizer = random_model_tokenizer()
    prompt = render_kullm_v1(PROOFREAD, TEXT)
    prompt_ids = tokenizer(prompt, add_special_tokens=False).input_ids
    answer_ids = [*tokenizer(" " + CORRECTED, add_special_tokens=False).input_ids, Sampling.eos_token_id]
    sequence = torch.tensor([prompt_ids + answer_ids], device=device)
    with torch.no_grad():
        hidden = model.base_model(input_ids=sequence).last_hidden_state[0].float()
        # Each answer token (and the final eos) is predicted from the hidden state one position before it.
        before = hidden[len(prompt_ids) - 1 : sequence.shape[1] - 1]
        targets = torch.zeros((before.shape[0], model.config.vocab_size), device=device)
        targets[torch.arange(before.shape[0]), torch.tensor(answer_ids, device=device)] = MARGIN
        # Least squares in float64 on the CPU: the hidden states are ill-conditioned (singular values from about
        # 0.01 to 400 on the mid-size shape), and float32's normal equations lost a third of the answer.
        weight = torch.linalg.lstsq(before.cpu().double(), targets.cpu().double()).solution.T
        model.get_output_embeddings().weight.copy_(weight.to(device=device, dtype=dtype))
    return model, tokenizer, prompt


def measure(
    model: Any, tokenizer: Any, requests: list[GenerationRequest], speculative: str, step_tokens: int | None
) -> tuple[float, Speculation, int, int, list[str]]:
    """Run `requests` together on a fresh engine: tokens/s, its speculation counters, decode steps, answer tokens,
    and the answers."""
    engine = BuiltinEngine(
        model,
        tokenizer,
        model_id="bench",
        sampling=Sampling(seed=0),
        max_batch_size=len(requests),
        prefill_chunk=10**6,  # every prompt read in the first step, for both settings alike
        fixed_shapes=next(model.parameters()).device.type == "cuda",  # CUDA graphs, as CUDA_GRAPHS=auto has them
        speculative=speculative,
        step_tokens=step_tokens,
    )
    _sync(model)
    started = time.perf_counter()
    for request in requests:
        engine.add(request)
    answers: dict[str, Any] = {}
    steps = 0
    while engine.active:
        for update in engine.step():
            if update.finished:
                answers[update.id] = update
        steps += 1
    _sync(model)
    took = time.perf_counter() - started
    tokens = sum(update.completion_tokens for update in answers.values())
    return tokens / took, engine.speculation, steps - 1, tokens, [answers[r.id].text for r in requests]


def _sync(model: Any) -> None:
    device = next(model.parameters()).device
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--architecture", default="polyglot-ko-mid", choices=sorted(ARCHITECTURES))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", default="1,16")
    parser.add_argument("--step-tokens", type=int, default=None, help="SPECULATIVE_STEP_TOKENS (default: by device)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    counts = [int(c) for c in args.concurrency.split(",")]
    model, tokenizer, prompt = proofreader(args.architecture, dtype, device)
    check = measure(model, tokenizer, [GenerationRequest("check", prompt, 512, copies=True)], "off", None)[4][0]
    if check != CORRECTED:  # fp16 on a GPU may round a hidden state past the fit: measured anyway, and said so
        same = next((i for i, (a, b) in enumerate(zip(check, CORRECTED, strict=False)) if a != b), len(check))
        print(f"warning: the fitted model's answer leaves the corrected text after {same} of {len(CORRECTED)} chars")

    def proofreading(count: int) -> list[GenerationRequest]:
        return [GenerationRequest(f"p{i}", prompt, 512, copies=True) for i in range(count)]

    def plain(count: int) -> list[GenerationRequest]:
        questions = [render_kullm_v1(PLAIN_QUESTIONS[i % len(PLAIN_QUESTIONS)]) for i in range(count)]
        return [GenerationRequest(f"q{i}", q, PLAIN_TOKENS, ignore_eos=True) for i, q in enumerate(questions)]

    workloads = [("맞춤법 교정", proofreading, ["off", "auto"]), ("plain questions", plain, ["off", "auto", "on"])]
    results: dict[tuple[str, int, str], Measured] = {}
    for _ in range(args.rounds):
        for name, make, modes in workloads:
            for count in counts:
                for mode in modes:
                    rate, stats, steps, tokens, answers = measure(model, tokenizer, make(count), mode, args.step_tokens)
                    row = results.setdefault((name, count, mode), Measured())
                    row.corrected += sum(answer == CORRECTED for answer in answers)
                    row.tokens_per_s.append(rate)
                    row.speculation.append(stats)
                    row.steps.append(steps)
                    row.tokens.append(tokens)
    print(report(results, args, device, len(tokenizer(" " + CORRECTED, add_special_tokens=False).input_ids)))


def report(
    results: dict[tuple[str, int, str], Measured], args: argparse.Namespace, device: torch.device, answer: int
) -> str:
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.processor() or 'CPU'}"
    lines = [
        f"# Speculative steps — {args.architecture} on {device.type} ({where}), torch threads "
        f"{torch.get_num_threads()}, {args.rounds} rounds, {time.strftime('%Y-%m-%d')}",
        "",
        f"맞춤법 교정 answer: {answer} tokens; plain questions: {PLAIN_TOKENS} tokens each.",
        "",
        "| workload | in flight | SPECULATIVE | tokens/s (each round) | × off (range) | kept / guessed | "
        "tokens per guess | steps that guessed | tokens per step |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (name, count, mode), row in results.items():
        base = results[(name, count, "off")]
        ratios = [mine / theirs for mine, theirs in zip(row.tokens_per_s, base.tokens_per_s, strict=True)]
        ratio = "–" if mode == "off" else f"{min(ratios):.2f}–{max(ratios):.2f}×"
        drafted = sum(s.drafted for s in row.speculation)
        kept = f"{sum(s.accepted for s in row.speculation) / drafted:.0%}" if drafted else "–"
        guessing = sum(s.guesses for s in row.speculation)
        per_guessing = f"{sum(s.tokens for s in row.speculation) / guessing:.2f}" if guessing else "–"
        per_step = statistics.mean(t / s / count for t, s in zip(row.tokens, row.steps, strict=True))
        share = f"{sum(s.steps for s in row.speculation) / sum(row.steps):.0%}"
        lines.append(
            f"| {name} | {count} | {mode} | {row.shown()} | {ratio} | {kept} | {per_guessing} | {share} | "
            f"{per_step:.2f} |"
        )
    proofread = [(count, row) for (name, count, _), row in results.items() if name == "맞춤법 교정"]
    corrected, asked = sum(r.corrected for _, r in proofread), sum(c * len(r.tokens) for c, r in proofread)
    lines += [
        "",
        f"맞춤법 교정 answers that were the corrected text: {corrected} of {asked}.",
        "",
        "kept / guessed: the share of guessed tokens the model kept. Tokens per guess: what a row gained in a step "
        "where it guessed (1 without guesses). Steps that guessed: of all decode steps. Tokens per step: answer "
        "tokens per decode step and row.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
