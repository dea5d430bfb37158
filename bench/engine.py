"""Engine benchmark: the seed's `pipeline` loop against every engine the worker has, in one run.

Baseline: the KULLM README's code path — `pipeline("text-generation")` called once per
question, one after another, with the seed's prompt and sampling. Then, at each concurrency, the
engines ENGINE names called directly with N questions in flight — `builtin` (ours), `paged`
(transformers' continuous batching through our adapter), `transformers serve` streamed over HTTP
(what ENGINE=openai talks to) — and the same three behind the real worker and Redis; plus plain
static `generate` and transformers' own `generate_batch`. Same model, prompts and sampling, and the
same forced number of new tokens per question, so the token counts compare (a server cannot be
told to ignore eos: its tokens are what it sent).

    python -m bench.engine                              # tiny model on CPU (built if needed)
    python -m bench.engine --suite                      # tiny, mid-size and their Llama twins (RESULTS.md)
    python -m bench.engine --model DIR --concurrency 1,8
    python -m bench.engine --architecture polyglot-ko-12.8b --random-weights   # GPU, no download

Every torch call runs on one thread, the one each queue setting's worker steps on, as in a worker
process (`inference.engine.new_engine_thread`). Only the engine being measured computes while its rows run: the
`transformers serve` server is started for its rows at each concurrency and stopped after them (a server left
running kept its batching thread busy on the same cores while the other engines were measured). Threads: every
engine here runs on torch's threads of this process (the count heads the table), and the server is given the same
count (OMP_NUM_THREADS), so none is measured with more cores than another. `--repeat N` measures every setting N
times, in rounds: a table row is the round with the median tokens/s and shows every
round's figure; a row whose rounds differ by more than UNRELIABLE_SPREAD is marked unreliable, not averaged, and so
is every ratio taken from it.

A worker can serve the same random-weight shapes (the GPU check's end-to-end run does):
`ENGINE=testkit.random_weights:random_weights_engine MODEL_ID=random:polyglot-ko-12.8b kullm worker`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch

from inference import quantize
from inference.engine import DelegatingEngine, GenerationRequest, Loaded, Sampling, new_engine_thread
from inference.engines import builtin, paged
from inference.engines.builtin import BuiltinEngine
from inference.engines.paged import PAGE_SIZE
from inference.model import resolve_device, resolve_dtype
from inference.prompt import render_kullm_v1
from inference.settings import WorkerSettings
from testkit.random_weights import (
    ARCHITECTURES,
    random_model,
    random_model_tokenizer,
)

QUESTIONS = [
    "딥러닝이 뭐야?",
    "한국의 수도는 어디야?",
    "고려대학교는 어디에 있어?",
    "인공지능이 사람의 일자리를 대체할까요? 찬성과 반대 의견을 모두 설명해 주세요.",
    "파이썬으로 리스트를 정렬하는 방법을 알려줘",
    "서울에서 부산까지 기차로 얼마나 걸려?",
    "좋은 습관을 만드는 방법 세 가지를 알려줘",
    "다음 문장을 영어로 번역해줘: 오늘은 날씨가 맑고 따뜻합니다.",
]
SUITE = ["tiny", "llama-tiny", "polyglot-ko-mid", "llama-mid"]
# transformers' continuous batching: tokens per forward pass (as our engine's default prefill chunk, so both read
# prompts at the same pace).
PREFILL_BUDGET = 512


# Rounds of one setting whose fastest is more than this much above its slowest: the row is marked unreliable.
UNRELIABLE_SPREAD = 0.25


@dataclass
class Result:
    """One benchmark setting."""

    name: str
    questions: int
    tokens: int
    wall_s: float
    first_token_s: list[float]
    latency_s: list[float]
    peak_memory_mb: float
    memory: str = ""  # builtin: where its memory went at the end of the run (`engine_memory`)
    rounds: tuple[float, ...] = ()  # with --repeat: every round's tokens/s (this result is the median round)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall_s

    @property
    def spread(self) -> float:
        """How far the fastest round is above the slowest (0 with one round)."""
        return max(self.rounds) / min(self.rounds) - 1 if len(self.rounds) > 1 and min(self.rounds) > 0 else 0.0

    @property
    def unreliable(self) -> bool:
        return self.spread > UNRELIABLE_SPREAD

    def rounds_shown(self) -> str:
        if len(self.rounds) < 2:
            return "–"
        each = " / ".join(f"{r:,.1f}" for r in self.rounds)
        return f"{each} (spread {self.spread:.0%})" + (" **unreliable**" if self.unreliable else "")


T = TypeVar("T")
_torch_thread: ThreadPoolExecutor | None = None


def torch_thread() -> ThreadPoolExecutor:
    """The benchmark's one thread for torch work: model loads, direct runs, and the steps of every worker it starts.

    As in a worker process (`new_engine_thread`): a second thread doing torch work would give the process a
    second OpenMP team and slow both, and the queue settings would be measured against a handicap.
    """
    global _torch_thread
    if _torch_thread is None:
        _torch_thread = new_engine_thread()
    return _torch_thread


def on_torch_thread(call: Callable[..., T], *args: Any) -> T:
    """`call(*args)` on the torch thread, waited for."""
    return torch_thread().submit(call, *args).result()


def prompts(count: int) -> list[str]:
    """Korean prompts of varied length in the seed's template."""
    return [render_kullm_v1(QUESTIONS[i % len(QUESTIONS)]) for i in range(count)]


def run_baseline(model: Any, tokenizer: Any, count: int, new_tokens: int, device: torch.device) -> Result:
    """The seed's loop: one `pipeline` call per question, sequentially."""
    from transformers import pipeline

    pipe = pipeline("text-generation", model=model, tokenizer=tokenizer, device=device)
    _reset_peak(device)
    started = time.perf_counter()
    latencies = []
    for prompt in prompts(count):
        pipe(
            prompt,
            do_sample=True,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            temperature=0.7,
            top_p=0.9,
            return_full_text=False,
            eos_token_id=2,
            pad_token_id=tokenizer.pad_token_id,
        )
        latencies.append(time.perf_counter() - started)  # nothing streams: the first token arrives with the last
    wall = time.perf_counter() - started
    return Result("seed pipeline (sequential)", count, count * new_tokens, wall, latencies, latencies, _peak(device))


def make_engine(kind: str, model: Any, tokenizer: Any, count: int, seed: int = 0) -> Any:
    """`builtin` or `paged`, as the worker builds them, with room for `count` questions; `+graphs` after either
    is CUDA_GRAPHS=1."""
    base, graphs = engine_kind(kind)
    common: dict[str, Any] = {"model_id": "bench", "sampling": Sampling(seed=seed), "max_batch_size": max(count, 1)}
    if base == "paged":
        window = int(model.config.max_position_embeddings)
        return paged.PagedEngine(
            model, tokenizer, **common, prefill_chunk=PREFILL_BUDGET, context_window=window, cuda_graphs=graphs
        )
    return BuiltinEngine(model, tokenizer, **common, fixed_shapes=graphs, compiled=compiled_kind(kind))


def engine_kind(kind: str) -> tuple[str, bool]:
    """`builtin+graphs` → (`builtin`, CUDA_GRAPHS=1); `builtin+compile` is builtin+graphs with its step compiled
    (COMPILE_DECODE=1, `compiled_kind`)."""
    base, _, graphs = kind.partition("+")
    if graphs not in ("", "graphs", "compile") or (graphs == "compile" and base != "builtin"):
        raise ValueError(f"unknown engine {kind!r}: an engine name, optionally followed by +graphs (builtin: +compile)")
    return base, bool(graphs)


def compiled_kind(kind: str) -> bool:
    """`builtin+compile`: the fixed-shape decode step compiled by torch.compile (COMPILE_DECODE=1)."""
    return kind.endswith("+compile")


def run_engine(
    model: Any, tokenizer: Any, count: int, new_tokens: int, device: torch.device, kind: str = "builtin"
) -> Result:
    """An engine (`builtin` or `paged`, either `+graphs`) with `count` questions in flight at once."""
    engine = make_engine(kind, model, tokenizer, count)
    if compiled_kind(kind):  # compile first, as a worker does on its first questions: the row is the steady state,
        for i, prompt in enumerate(prompts(count)):  # and what compiling took is on the memory line
            engine.add(GenerationRequest(f"warm-up {i}", prompt, 4, ignore_eos=True))
        while engine.active:
            engine.step()
    for i, prompt in enumerate(prompts(count)):
        engine.add(GenerationRequest(str(i), prompt, new_tokens, ignore_eos=True))
    _reset_peak(device)
    started = time.perf_counter()
    first: dict[str, float] = {}
    finished: dict[str, float] = {}
    tokens = 0
    try:
        while engine.active:
            for update in engine.step():
                now = time.perf_counter() - started
                first.setdefault(update.id, now)
                if update.finished:
                    finished[update.id] = now
                    tokens += update.completion_tokens
        _sync(device)
        wall = time.perf_counter() - started
        memory = engine_memory(engine, device)
    finally:
        engine.close()
    return Result(
        f"{kind}, {count} in flight",
        count,
        tokens,
        wall,
        list(first.values()),
        list(finished.values()),
        _peak(device),
        memory,
    )


def engine_memory(engine: Any, device: torch.device) -> str:
    """A builtin engine's KV cache buffers and CUDA graphs after a run, and on a GPU the allocator's reserve: what
    the peak memory column is made of."""
    if not isinstance(engine, BuiltinEngine) or not engine.cache.slot_capacity:
        return ""
    cache = engine.cache
    buffers = 2 * len(cache.layers) * cache.buffers.numel() * cache.buffers.element_size()  # keys and values
    parts = [f"KV cache {buffers / 2**20:,.1f} MB ({cache.slot_capacity} rows × {cache.column_capacity} columns)"]
    if engine.graphs is not None:
        parts.append(f"{engine.graphs.captured} graphs captured, {engine.graphs.alive} shapes kept")
        if engine.graphs.compiled is not None:
            compiled = engine.graphs.compiled
            if not compiled.compiled:
                parts.append("compiling failed: the step ran uncompiled")
            elif compiled.graphs:
                parts.append(f"{compiled.graphs} step graphs compiled in {compiled.seconds:.1f} s")
            else:
                parts.append("its step graphs were compiled earlier in this process")
        if engine.graphs.held:
            held = ", ".join(
                f"{rows}×{width} {held / 2**20:,.0f} MB in {seconds * 1000:,.0f} ms"
                for rows, width, held, seconds in engine.graphs.held
            )
            parts.append(f"allocated after each capture (rows × columns), and its time: {held}")
    if device.type == "cuda":
        parts.append(f"reserved {torch.cuda.memory_reserved(device) / 2**20:,.0f} MB")
    return ", ".join(parts)


def run_served(url: str, model_name: str, count: int, new_tokens: int) -> Result:
    """`count` concurrent streams of `/v1/completions` straight to an OpenAI-compatible server."""
    return asyncio.run(_served(url, model_name, count, new_tokens))


async def _served(url: str, model_name: str, count: int, new_tokens: int) -> Result:
    import aiohttp

    first: dict[int, float] = {}
    finished: dict[int, float] = {}
    tokens = 0

    async def stream(session: aiohttp.ClientSession, i: int, prompt: str, started: float) -> None:
        nonlocal tokens
        body = {"model": model_name, "prompt": prompt, "max_tokens": new_tokens, "stream": True}
        body |= {"temperature": 0.7, "top_p": 0.9, "stream_options": {"include_usage": True}}
        async with session.post(f"{url}/completions", json=body) as response:
            response.raise_for_status()
            async for raw in response.content:
                data = raw.decode().strip().removeprefix("data:").strip()
                if not raw.startswith(b"data:") or data == "[DONE]":
                    continue
                chunk = json.loads(data)
                if "error" in chunk:
                    raise RuntimeError(f"the server failed: {chunk['error']}")
                if any(choice.get("text") for choice in chunk.get("choices") or []):
                    first.setdefault(i, time.perf_counter() - started)
                if chunk.get("usage"):
                    tokens += int(chunk["usage"]["completion_tokens"])
        finished[i] = time.perf_counter() - started

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
        started = time.perf_counter()
        await asyncio.gather(*(stream(session, i, p, started) for i, p in enumerate(prompts(count))))
        wall = time.perf_counter() - started
    name = f"transformers serve, {count} streams"
    return Result(name, count, tokens, wall, list(first.values()), list(finished.values()), 0.0)


class ForcedLength(DelegatingEngine):
    """An engine whose requests all run to their length (no stop at eos or `###`), as the direct runs force it."""

    def add(self, request: GenerationRequest) -> None:
        self.inner.add(dataclasses.replace(request, ignore_eos=True))


def run_through_queue(
    model: Any, tokenizer: Any, count: int, new_tokens: int, redis_url: str, kind: str = "builtin", server: Any = None
) -> Result:
    """An engine behind the real worker loop and Redis: `count` questions enqueued at once, answers followed.

    `kind` is `builtin` or `paged` (either `+graphs`), or `openai` (then `server`, a running `transformers serve`,
    generates).
    """
    return asyncio.run(_through_queue(model, tokenizer, count, new_tokens, redis_url, kind, server))


async def _through_queue(
    model: Any, tokenizer: Any, count: int, new_tokens: int, redis_url: str, kind: str, server: Any
) -> Result:
    from chatbus import Bus, Delta, Done, Keys, Question, connect
    from inference.worker import Worker

    settings = WorkerSettings(  # type: ignore[call-arg]
        _env_file=None,
        redis_url=redis_url,
        max_batch_size=count,
        max_new_tokens=new_tokens,
        seed=0,
        metrics_port=0,
        worker_name=f"bench-{kind}-{count}",
        key_prefix=f"bench-{kind}-{count}:",
    )
    base, graphs = engine_kind(kind)
    settings = settings.model_copy(update={"cuda_graphs": graphs, "compile_decode": compiled_kind(kind)})
    loop = asyncio.get_running_loop()
    if kind == "openai":
        from inference.engines.openai import build as build_openai

        served = {"engine_url": server.url, "model_id": str(server.model_dir), "hf_hub_offline": True, "seed": None}
        loaded = await loop.run_in_executor(torch_thread(), build_openai, settings.model_copy(update=served))
    else:
        loaded = await loop.run_in_executor(
            torch_thread(), lambda: (paged if base == "paged" else builtin).on_model(model, tokenizer, settings)
        )
    redis = connect(redis_url)
    bus = Bus(redis, Keys(settings.key_prefix))
    engine = Loaded(ForcedLength(loaded.engine), loaded.prompts)
    worker = Worker(bus, engine, settings, engine_thread=torch_thread())
    serving = asyncio.create_task(worker.run())
    first: dict[str, float] = {}
    finished: dict[str, float] = {}
    tokens = 0

    async def read_answer(question_id: str, began_ms: float) -> None:
        """Times from the answer stream's own entry ids (Redis' clock, in ms): when the worker wrote each event."""
        nonlocal tokens
        async for entry_id, event in bus.answers.follow(question_id):
            at = (int(entry_id.split("-")[0]) - began_ms) / 1000
            if isinstance(event, Delta):
                first.setdefault(question_id, at)
            elif isinstance(event, Done):
                finished[question_id] = at
                first.setdefault(question_id, at)
                tokens += event.completion_tokens

    async def answered(before: float, count: int) -> None:
        # Nobody follows the answers while they are generated: clients run elsewhere, not in this process,
        # where they would take the GIL from the engine's thread. The worker's own count says when all are done,
        # looked at seldom for the same reason; the times come from the answer streams, not from this loop.
        while worker.metrics.questions.labels("done")._value.get() - before < count:
            await asyncio.sleep(0.25)

    try:
        warm = Question.new("bench", QUESTIONS[0], ttl_s=600, max_new_tokens=2)
        before = worker.metrics.questions.labels("done")._value.get()
        await bus.queue.enqueue(warm)
        await answered(before, 1)
        questions = [Question.new("bench", QUESTIONS[i % len(QUESTIONS)], ttl_s=600) for i in range(count)]
        before = worker.metrics.questions.labels("done")._value.get()
        seconds, micros = await redis.time()
        began_ms = seconds * 1000 + micros / 1000
        async with redis.pipeline(transaction=False) as pipe:  # all at once, as the direct run adds them
            for question in questions:
                pipe.xadd(bus.keys.questions, question.to_fields())  # type: ignore[arg-type]
            await pipe.execute()
        await answered(before, count)
        for question in questions:
            await read_answer(question.id, began_ms)
        wall = max(finished.values())  # when the last `done` was written, on Redis' clock
    finally:
        worker.request_drain()
        await serving
        await redis.aclose()
    label = "openai (transformers serve)" if kind == "openai" else kind
    return Result(
        f"{label} through the queue, {count} in flight",
        count,
        tokens,
        wall,
        list(first.values()),
        list(finished.values()),
        0.0,
    )


def run_static_generate(model: Any, tokenizer: Any, count: int, new_tokens: int, device: torch.device) -> Result:
    """Plain `generate` on all `count` prompts as one left-padded batch: nothing streams, nobody joins."""
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    try:
        batch = tokenizer(prompts(count), return_tensors="pt", padding=True, add_special_tokens=False).to(device)
    finally:
        tokenizer.padding_side = side
    _reset_peak(device)
    started = time.perf_counter()
    with torch.inference_mode():
        model.generate(
            **batch,
            do_sample=True,
            temperature=0.7,
            top_p=0.9,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            pad_token_id=tokenizer.pad_token_id,
        )
    _sync(device)
    wall = time.perf_counter() - started
    ends = [wall] * count  # the first token arrives with the last
    return Result(f"static generate, {count} at once", count, count * new_tokens, wall, ends, ends, _peak(device))


def run_continuous_batching(model: Any, tokenizer: Any, count: int, new_tokens: int, device: torch.device) -> Result:
    """transformers' own continuous batching (`generate_batch`: paged attention) with `count` prompts at once.

    It runs on Llama (KULLM3's architecture); on GPT-NeoX (KULLM v1/v2) transformers fails.
    """
    from transformers import ContinuousBatchingConfig, GenerationConfig

    config = GenerationConfig(
        do_sample=True,
        temperature=0.7,
        top_p=0.9,
        max_new_tokens=new_tokens,
        eos_token_id=-1,  # never sampled: every answer runs to `new_tokens`, as the other settings' do
        pad_token_id=tokenizer.pad_token_id,
    )
    inputs = [tokenizer(p, add_special_tokens=False).input_ids for p in prompts(count)]
    # The paged cache sized for these requests (left to itself, it sizes for the device's free memory: on a
    # CPU that took seconds before the first token).
    # Pages of transformers' default size, PAGE_SIZE (named block_size in 5.17 and page_size in 5.24: left unnamed).
    pages = count * -(-(max(map(len, inputs)) + new_tokens) // PAGE_SIZE)
    sizes = ContinuousBatchingConfig(num_blocks=pages + 1, max_batch_tokens=PREFILL_BUDGET)
    _reset_peak(device)
    started = time.perf_counter()
    outputs = model.generate_batch(
        inputs,
        generation_config=config,
        continuous_batching_config=sizes,
        record_timestamps=True,
        progress_bar=False,
        warmup=False,
    )
    _sync(device)
    wall = time.perf_counter() - started
    done = list(outputs.values())
    failed = [o.error for o in done if o.error]
    if failed or len(done) != count:
        raise RuntimeError(f"{len(failed) or count - len(done)} of {count} requests failed: {failed[:1]}")
    first = [o.timestamps[0] - started for o in done]
    last = [o.timestamps[-1] - started for o in done]
    tokens = sum(len(o.generated_tokens) for o in done)
    return Result(
        f"transformers continuous batching, {count} in flight", count, tokens, wall, first, last, _peak(device)
    )


def idle_ttft(model: Any, tokenizer: Any, device: torch.device, prompt_tokens: int = 200, runs: int = 5) -> str:
    """Time to first token for one question alone with a prompt of about `prompt_tokens` tokens."""
    filler = "고려대학교 자연어처리 연구실에서 만든 한국어 언어 모델 구름에 대해 자세히 설명해 주세요. "
    question = filler
    while len(tokenizer(render_kullm_v1(question), add_special_tokens=False).input_ids) < prompt_tokens:
        question += filler
    prompt = render_kullm_v1(question)
    length = len(tokenizer(prompt, add_special_tokens=False).input_ids)
    times = []
    for run in range(runs + 1):  # the first run warms this prompt length up and is not counted
        engine = BuiltinEngine(model, tokenizer, model_id="bench", sampling=Sampling(seed=run), max_batch_size=1)
        engine.add(GenerationRequest(str(run), prompt, 1, ignore_eos=True))
        _sync(device)
        started = time.perf_counter()
        engine.step()  # prefill and the first sampled token
        _sync(device)
        times.append(time.perf_counter() - started)
    return (
        f"time to first token at idle: {length}-token prompt, p50 {statistics.median(times[1:]) * 1000:,.1f} ms "
        f"over {runs} runs"
    )


def decode_steps(
    model: Any, tokenizer: Any, device: torch.device, kinds: list[str], steps: int = 24, label: str = "decode step"
) -> str:
    """One question's decode step for each builtin kind: its wall time and, on a GPU, how much of it the GPU spent in
    kernels (the rest is Python launching them, or waiting). Where one question falls short of the bandwidth bound,
    this says which of the two to work on."""
    parts = []
    for kind in kinds:
        engine = make_engine(kind, model, tokenizer, 1)
        engine.add(GenerationRequest("0", prompts(1)[0], 2 * steps + 8, ignore_eos=True))
        for _ in range(8):  # the prefill, then steps that capture what they need
            engine.step()
        walls = []
        for _ in range(steps):
            _sync(device)
            started = time.perf_counter()
            engine.step()
            _sync(device)
            walls.append(time.perf_counter() - started)
        part = f"{kind} {statistics.median(walls) * 1000:,.2f} ms"
        if device.type == "cuda":
            part += _kernel_share(engine, device, steps, statistics.median(walls))
        parts.append(part)
        engine.close()
    return f"{label}, one question alone, median of {steps}: " + "; ".join(parts)


# Events CUDA's allocator keeps while recording the memory-sources pass (a ring: the oldest go first).
TRACE_ENTRIES = 200_000


def graph_memory_sources(model: Any, tokenizer: Any, count: int, new_tokens: int, device: torch.device) -> str:
    """builtin+graphs with `count` in flight once more, with CUDA's allocator recording where each allocation came
    from: what was allocated at the pass's peak, by line; the lines that allocated most while graphs were captured
    (warm-ups and captures run off the default stream); and what is still allocated in the graphs' pools at the end.
    A GPU's answer to where graphs' memory goes; a failing recorder costs this line only."""
    try:
        torch.cuda.memory._record_memory_history(stacks="python", max_entries=TRACE_ENTRIES)
        try:
            result = run_engine(model, tokenizer, count, new_tokens, device, "builtin+graphs")
            snapshot = torch.cuda.memory._snapshot(device)
        finally:
            torch.cuda.memory._record_memory_history(enabled=None)
        traces = snapshot["device_traces"][device.index if device.index is not None else torch.cuda.current_device()]
        cut = f" (only the last {TRACE_ENTRIES:,} events kept)" if len(traces) >= TRACE_ENTRIES else ""
        return (
            f"memory sources, {result.name}{cut}: peak {result.peak_memory_mb:,.0f} MB; {peak_holders(traces)}; "
            + allocation_sources(traces, snapshot["segments"])
        )
    except Exception as exc:  # a diagnostic: whatever breaks, the benchmark's figures stand
        return f"memory sources: not recorded ({type(exc).__name__}: {str(exc)[:200]})"


def allocation_sources(traces: list[dict[str, Any]], segments: list[dict[str, Any]], top: int = 5) -> str:
    """From a CUDA memory snapshot: bytes allocated off the default stream by allocating line (the innermost frame in
    transformers or this project), and what the graphs' private pools hold at the end."""
    by_line: dict[str, list[int]] = {}
    for entry in traces:
        if entry.get("action") == "alloc" and entry.get("stream", 0) != 0:
            line = _allocating_line(entry.get("frames", []))
            by_line.setdefault(line, []).append(int(entry["size"]))
    ranked = sorted(by_line.items(), key=lambda item: -sum(item[1]))[:top]
    sources = "; ".join(
        f"{line}: {sum(sizes) / 2**20:,.0f} MB in {len(sizes)} (largest {max(sizes) / 2**20:,.1f} MB)"
        for line, sizes in ranked
    )
    pools = [s for s in segments if tuple(s.get("segment_pool_id", (0, 0))) != (0, 0)]
    reserved = sum(int(s["total_size"]) for s in pools)
    in_use = sum(int(s["allocated_size"]) for s in pools)
    held = f"graph pools at the end: {reserved / 2**20:,.0f} MB reserved, {in_use / 2**20:,.0f} MB allocated"
    return f"off the default stream, {sources or 'nothing'}; {held}"


def peak_holders(traces: list[dict[str, Any]], top: int = 5) -> str:
    """From a CUDA memory snapshot's trace: the moment the most memory allocated during the recording was in use
    (a block counts from its `alloc` to its `free_requested`, as `torch.cuda.memory_allocated` counts it), and the
    lines whose blocks were alive then. Blocks allocated before the recording began (the weights) are not in it."""
    total = peak = peak_at = 0
    allocated: dict[int, int] = {}  # address → size of the blocks allocated since the recording began
    for index, entry in enumerate(traces):
        if entry.get("action") == "alloc":
            allocated[entry["addr"]] = int(entry["size"])
            total += int(entry["size"])
            if total > peak:
                peak, peak_at = total, index
        elif entry.get("action") == "free_requested":
            total -= allocated.pop(entry["addr"], 0)
    live: dict[int, dict[str, Any]] = {}
    for entry in traces[: peak_at + 1]:
        if entry.get("action") == "alloc":
            live[entry["addr"]] = entry
        elif entry.get("action") == "free_requested":
            live.pop(entry["addr"], None)
    by_line: dict[str, list[int]] = {}
    for entry in live.values():
        by_line.setdefault(_allocating_line(entry.get("frames", [])), []).append(int(entry["size"]))
    ranked = sorted(by_line.items(), key=lambda item: -sum(item[1]))[:top]
    holders = "; ".join(f"{line}: {sum(sizes) / 2**20:,.0f} MB in {len(sizes)}" for line, sizes in ranked)
    return f"alive at the recorded peak, {peak / 2**20:,.0f} MB over the recording's start: {holders or 'nothing'}"


def _allocating_line(frames: list[dict[str, Any]]) -> str:
    """`file:line function` of the innermost frame in transformers or this project (torch's own frames say less),
    else of the innermost frame there is."""
    named = [f for f in frames if any(part in str(f.get("filename", "")) for part in ("/transformers/", "/inference/"))]
    frame = next(iter(named or frames), None)
    if frame is None:
        return "no Python frame"
    return f"{Path(str(frame.get('filename', ''))).name}:{frame.get('line')} {frame.get('name')}"


def _kernel_share(engine: Any, device: torch.device, steps: int, wall_s: float) -> str:
    """How long the GPU ran kernels per step, and in which kinds of kernel, from torch's profiler; a failing profiler
    costs this note only."""
    try:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as profile:
            for _ in range(steps):
                engine.step()
            _sync(device)
        kinds: dict[str, list[float]] = {}
        for event in profile.key_averages():
            if event.self_device_time_total:
                spent = kinds.setdefault(kernel_kind(event.key), [0.0, 0.0])
                spent[0] += event.self_device_time_total / steps / 1000
                spent[1] += event.count / steps
    except Exception as exc:  # CUPTI missing or refused: the step times above still stand
        return f" (no kernel times: {type(exc).__name__})"
    busy_ms = sum(ms for ms, _ in kinds.values())
    if not busy_ms:
        return " (the profiler saw no kernels)"
    split = ", ".join(f"{kind} {ms:,.2f} ms in {count:,.0f}" for kind, (ms, count) in sorted(kinds.items()))
    return f" (kernels {busy_ms:,.2f} ms, {busy_ms / (wall_s * 1000):.0%}: {split})"


def kernel_kind(name: str) -> str:
    """A CUDA kernel's kind by its name: `matmul` (cuBLAS/cuBLASLt/CUTLASS GEMM and GEMV), `attention` (SDPA's
    flash and memory-efficient kernels) or `other` (norms, activations, copies, sampling)."""
    lowered = name.lower()
    if any(mark in lowered for mark in ("fmha", "flash", "attention", "attn")):  # before matmul: fmha_cutlassF…
        return "attention"
    if any(mark in lowered for mark in ("gemm", "gemv", "nvjet", "cutlass", "xmma", "splitk")):
        return "matmul"
    return "other"


def load(args: argparse.Namespace) -> tuple[Any, Any, torch.device]:
    """The model under test: a directory, or an architecture with random weights."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    if args.architecture:
        tokenizer = random_model_tokenizer()
        model = random_model(args.architecture, dtype, device)
    else:
        model_dir = args.model or _tiny_model()
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(device)
    model.eval()
    return model, tokenizer, device


def copy_bandwidth(device: torch.device, megabytes: int = 512, repeats: int = 5) -> float:
    """The device's memory bandwidth in bytes/s, from large tensor copies (read + write counted)."""
    source = torch.empty(megabytes * 2**20, dtype=torch.uint8, device=device)
    target = torch.empty_like(source)
    target.copy_(source)
    _sync(device)
    started = time.perf_counter()
    for _ in range(repeats):
        target.copy_(source)
    _sync(device)
    return 2 * source.numel() * repeats / (time.perf_counter() - started)


def bandwidth_line(model: Any, single: Result, bandwidth: float, who: str = "", weights: int | None = None) -> str:
    """Single-question decode against the bound set by reading every weight once per token (`who`: the engine, when
    not the default one; `weights`: the bytes to read, when not the parameters', e.g. int8 buffers)."""
    weight_bytes = weights or sum(p.numel() * p.element_size() for p in model.parameters())
    bound = bandwidth / weight_bytes
    decode_s = single.latency_s[0] - single.first_token_s[0]
    decode_rate = (single.tokens - 1) / decode_s if decode_s > 0 else float("nan")
    engine = f"{who}: " if who else ""
    return (
        f"bandwidth bound: copy bandwidth {bandwidth / 1e9:,.1f} GB/s, weights {weight_bytes / 1e9:,.2f} GB → "
        f"{bound:,.1f} tokens/s; {engine}one question decodes at {decode_rate:,.1f} tokens/s = "
        f"{decode_rate / bound:.0%} of the bound"
    )


def report(baseline: Result, results: list[Result], args: argparse.Namespace, device: torch.device) -> str:
    """A Markdown table with ratios against the baseline measured in this run."""
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU ({platform.processor() or 'x86_64'}, {torch.get_num_threads()} threads)"
    )
    lines = [
        f"model: {args.architecture or args.model or 'tiny test model'} · device: {name} · "
        f"torch {torch.__version__} · {args.new_tokens} new tokens per question · do_sample, T=0.7, top_p=0.9",
        "",
        "| setting | questions | tokens/s | rounds (tokens/s) | ratio | TTFT p50 | latency p50 | latency p95 "
        "| peak MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for result in [baseline, *results]:
        peak = f"{result.peak_memory_mb:,.0f}" if result.peak_memory_mb else "–"  # the queue's: the worker's own
        lines.append(
            f"| {result.name} | {result.questions} | {result.tokens_per_s:,.1f} | {result.rounds_shown()} | "
            f"{result.tokens_per_s / baseline.tokens_per_s:.2f}× | {_pct(result.first_token_s, 50):.3f}s | "
            f"{_pct(result.latency_s, 50):.3f}s | {_pct(result.latency_s, 95):.3f}s | {peak} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Run the baseline and every setting at each concurrency once per model, print a table per model."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model directory (default: the tiny test model, built if needed)")
    parser.add_argument("--architecture", choices=sorted(ARCHITECTURES))
    parser.add_argument("--random-weights", action="store_true", help="required with --architecture")
    parser.add_argument(
        "--suite", action="store_true", help=f"every model of {SUITE}, one after another (random weights but tiny)"
    )
    parser.add_argument("--concurrency", default="1,8,16,32")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--baseline-questions", type=int, default=8)
    parser.add_argument(
        "--repeat", type=int, default=1, help="measure every setting this many times, in rounds (rows: the median)"
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument(
        "--engines",
        default="builtin,paged,serve",
        help="engines called directly: builtin, paged (transformers' continuous batching through our adapter), "
        "serve (transformers serve over HTTP: ENGINE=openai's server); builtin+graphs, paged+graphs: CUDA_GRAPHS=1; "
        "builtin+compile: builtin+graphs with COMPILE_DECODE=1",
    )
    parser.add_argument(
        "--int8",
        action="store_true",
        help="then QUANTIZATION=int8 in place, and the builtin engines again, each against its fp16 row",
    )
    parser.add_argument(
        "--compare",
        default="static,cb,queue",
        help="also: static (plain generate), cb (transformers' generate_batch), queue (each engine behind the "
        "worker and Redis); empty for none",
    )
    args = parser.parse_args(argv)
    if args.architecture and not args.random_weights:
        parser.error("--architecture builds random weights: pass --random-weights to confirm")
    targets = SUITE if args.suite else [args.architecture or args.model or "tiny"]
    for number, target in enumerate(targets):
        if number:
            print()
        print(bench_model(target, args))


def bench_model(target: str, args: argparse.Namespace) -> str:
    """One model's table and notes: `target` is an architecture (random weights), `tiny` or a directory."""
    engines = [e for e in args.engines.split(",") if e]
    compare = {c for c in args.compare.split(",") if c}
    wanted = argparse.Namespace(
        architecture=target if target in ARCHITECTURES else None,
        model=None if target in ARCHITECTURES or target == "tiny" else target,
        device=args.device,
        dtype=args.dtype,
    )
    model, tokenizer, device = on_torch_thread(load, wanted)
    on_torch_thread(run_engine, model, tokenizer, 2, 4, device)  # warm-up: first-call allocations and kernels
    baseline = on_torch_thread(run_baseline, model, tokenizer, args.baseline_questions, args.new_tokens, device)
    notes: list[str] = []
    results: list[Result] = []
    shares: list[str] = []
    repeat = max(1, getattr(args, "repeat", 1))
    with (
        _private_redis("queue" in compare) as redis_url,
        _transformers_serve("serve" in engines, model, tokenizer, target, device, notes) as serving,
    ):
        for n in (int(c) for c in args.concurrency.split(",")):
            rounds = [
                _settings_at(n, model, tokenizer, device, args.new_tokens, engines, compare, redis_url, serving)
                for _ in range(repeat)
            ]
            results += [_median_round(same) for same in zip(*rounds, strict=True)]
            shares += _queue_shares(rounds)
    label = "tiny test model" if target == "tiny" else target
    lines = [
        report(
            baseline, results, argparse.Namespace(architecture=label, model=None, new_tokens=args.new_tokens), device
        )
    ]
    lines += ["", *notes, *shares, *comparisons(results)]
    lines += [f"memory, {r.name}: {r.memory}" for r in results if r.memory]
    single = next((r for r in results if r.questions == 1 and r.name.startswith("builtin,")), None)
    single = single or on_torch_thread(run_engine, model, tokenizer, 1, args.new_tokens, device)
    bandwidth = on_torch_thread(copy_bandwidth, device)
    lines.append(bandwidth_line(model, single, bandwidth))
    for fixed in ("builtin+graphs", "builtin+compile"):
        graphed = next((r for r in results if r.questions == 1 and r.name.startswith(f"{fixed},")), None)
        if graphed:
            lines.append(bandwidth_line(model, graphed, bandwidth, fixed))
    lines.append(on_torch_thread(idle_ttft, model, tokenizer, device))
    builtins = [kind for kind in engines if engine_kind(kind)[0] == "builtin"]
    if builtins:
        lines.append(on_torch_thread(decode_steps, model, tokenizer, device, builtins))
    if device.type == "cuda" and "builtin+graphs" in engines:
        most = max(int(n) for n in args.concurrency.split(","))
        lines.append(on_torch_thread(graph_memory_sources, model, tokenizer, most, args.new_tokens, device))
    if getattr(args, "int8", False):  # last: it quantises the model in place
        lines += int8_rows(model, tokenizer, device, args, baseline, results, builtins)
    return "\n".join(lines)


def int8_rows(
    model: Any,
    tokenizer: Any,
    device: torch.device,
    args: argparse.Namespace,
    baseline: Result,
    fp16: list[Result],
    kinds: list[str],
) -> list[str]:
    """`--int8`: QUANTIZATION=int8 applied to the model in place, the builtin engines measured again at each
    concurrency, and each compared with its row above, measured in this same run before quantising."""
    before = quantize.weight_bytes(model)
    replaced = on_torch_thread(quantize.quantize_int8, model)
    after = quantize.weight_bytes(model)
    results: list[Result] = []
    for n in (int(c) for c in args.concurrency.split(",")):
        rounds = [
            [
                dataclasses.replace(r, name=r.name.replace(", ", " int8, ", 1))
                for r in _settings_at(n, model, tokenizer, device, args.new_tokens, kinds, set(), None, None)
            ]
            for _ in range(max(1, getattr(args, "repeat", 1)))
        ]
        results += [_median_round(same) for same in zip(*rounds, strict=True)]
    table = argparse.Namespace(architecture="the same weights, int8", model=None, new_tokens=args.new_tokens)
    lines = ["", f"QUANTIZATION=int8: {replaced} layers, weights {before / 1e9:,.2f} GB → {after / 1e9:,.2f} GB", ""]
    lines += [report(baseline, results, table, device), ""]
    by_name = {r.name: r for r in fp16}
    for row in results:
        plain = by_name.get(row.name.replace(" int8, ", ", "))
        if plain:
            lines.append(
                f"{row.questions} in flight: {row.name.split(', ')[0]} {row.tokens_per_s / plain.tokens_per_s:.2f}× "
                f"fp16; peak {row.peak_memory_mb:,.0f} MB against {plain.peak_memory_mb:,.0f} MB" + _doubt(row, plain)
            )
    bandwidth = on_torch_thread(copy_bandwidth, device)
    for kind in kinds:
        single = next((r for r in results if r.questions == 1 and r.name.startswith(f"{kind} int8,")), None)
        if single:
            lines.append(bandwidth_line(model, single, bandwidth, f"{kind} int8", weights=after))
    lines.append(on_torch_thread(decode_steps, model, tokenizer, device, kinds, 24, "int8 decode step"))
    return lines


def _settings_at(
    n: int,
    model: Any,
    tokenizer: Any,
    device: torch.device,
    new_tokens: int,
    engines: list[str],
    compare: set[str],
    redis_url: str | None,
    serving: Serving | None,
) -> list[Result]:
    results: list[Result] = []

    def measured(result: Result) -> None:  # on stderr at once: a run cut short by a time limit keeps what it measured
        results.append(result)
        p50 = _pct(result.first_token_s, 50)
        print(f"measured {result.name}: {result.tokens_per_s:,.1f} tokens/s, TTFT p50 {p50:.3f}s", file=sys.stderr)

    for kind in engines:
        if kind == "serve":
            if serving is None:
                continue
            with serving.started() as server:  # running only while its own rows are measured
                if server is not None:
                    measured(run_served(server.url, str(server.model_dir), n, new_tokens))
                    if redis_url:
                        measured(run_through_queue(model, tokenizer, n, new_tokens, redis_url, "openai", server))
            continue
        measured(on_torch_thread(run_engine, model, tokenizer, n, new_tokens, device, kind))
        if redis_url:
            measured(run_through_queue(model, tokenizer, n, new_tokens, redis_url, kind))
    if "static" in compare:
        measured(on_torch_thread(run_static_generate, model, tokenizer, n, new_tokens, device))
    if "cb" in compare and model.config.model_type != "gpt_neox":  # transformers' own path fails on GPT-NeoX
        measured(on_torch_thread(run_continuous_batching, model, tokenizer, n, new_tokens, device))
    return results


# Each engine called directly, and behind the worker and Redis: the pairs the queue shares compare.
QUEUE_PAIRS = [
    ("builtin", "builtin through the queue"),
    ("builtin+graphs", "builtin+graphs through the queue"),
    ("builtin+compile", "builtin+compile through the queue"),
    ("paged", "paged through the queue"),
    ("paged+graphs", "paged+graphs through the queue"),
    ("transformers serve", "openai (transformers serve) through the queue"),
]


def _median_round(measured: tuple[Result, ...]) -> Result:
    """One setting measured in several rounds: the round with the median tokens/s (the lower middle one), holding
    every round's tokens/s in the order they ran."""
    ranked = sorted(measured, key=lambda r: r.tokens_per_s)
    rounds = tuple(r.tokens_per_s for r in measured) if len(measured) > 1 else ()
    return dataclasses.replace(ranked[(len(ranked) - 1) // 2], rounds=rounds)


def _queue_shares(rounds: list[list[Result]]) -> list[str]:
    """Per engine: through the queue as a share of called directly, side by side in each round; the range."""
    lines = []
    n = rounds[0][0].questions if rounds and rounds[0] else 0
    for direct_name, queued_name in QUEUE_PAIRS:
        shares = []
        for results in rounds:
            by_name = {r.name.rsplit(", ", 1)[0]: r for r in results}
            direct, queued = by_name.get(direct_name), by_name.get(queued_name)
            if direct and queued:
                shares.append(queued.tokens_per_s / direct.tokens_per_s)
        if len(shares) == 1:
            lines.append(f"{n} in flight: {queued_name} {shares[0]:.0%} of {direct_name} called directly")
        elif shares:
            each = ", ".join(f"{share:.0%}" for share in shares)
            lines.append(
                f"{n} in flight: {queued_name} {min(shares):.0%}–{max(shares):.0%} of {direct_name} called directly, "
                f"median {statistics.median(shares):.0%} over {len(shares)} rounds ({each})"
            )
    return lines


def comparisons(results: list[Result]) -> list[str]:
    """Ratios the targets are stated in, each between settings measured in this run at the same concurrency."""
    lines = []
    by_name = {r.name: r for r in results}
    for row in (r for r in results if r.name.startswith(("builtin, ", "builtin+graphs, ", "builtin+compile, "))):
        n, ours = row.questions, row.name.split(", ")[0]
        for label, other in [
            ("transformers' continuous batching", by_name.get(f"transformers continuous batching, {n} in flight")),
            ("paged", by_name.get(f"paged, {n} in flight")),
            ("transformers serve", by_name.get(f"transformers serve, {n} streams")),
        ]:
            if other:
                lines.append(
                    f"{n} in flight: {ours} {row.tokens_per_s / other.tokens_per_s:.2f}× {label}; TTFT p50 "
                    f"{_pct(row.first_token_s, 50):.3f}s against {_pct(other.first_token_s, 50):.3f}s"
                    + _doubt(row, other)
                )
    for graphs in (r for r in results if "+graphs, " in r.name):
        base, rest = graphs.name.split("+graphs, ")
        eager = by_name.get(f"{base}, {rest}")
        if eager:
            lines.append(
                f"{rest}: {base}+graphs {graphs.tokens_per_s / eager.tokens_per_s:.2f}× {base}; TTFT p50 "
                f"{_pct(graphs.first_token_s, 50):.3f}s against {_pct(eager.first_token_s, 50):.3f}s"
                + _doubt(graphs, eager)
            )
    for compiled in (r for r in results if r.name.startswith("builtin+compile, ")):
        graphs = by_name.get(compiled.name.replace("+compile, ", "+graphs, "))
        if graphs:
            lines.append(
                f"{compiled.questions} in flight: builtin+compile {compiled.tokens_per_s / graphs.tokens_per_s:.2f}× "
                f"builtin+graphs; TTFT p50 {_pct(compiled.first_token_s, 50):.3f}s against "
                f"{_pct(graphs.first_token_s, 50):.3f}s" + _doubt(compiled, graphs)
            )
    return lines


def _doubt(*rows: Result) -> str:
    """A ratio taken from a row whose rounds disagree says so."""
    doubtful = [r.name for r in rows if r.unreliable]
    return (
        f" — unreliable: the rounds of {' and '.join(doubtful)} differ by more than {UNRELIABLE_SPREAD:.0%}"
        if doubtful
        else ""
    )


@dataclass
class Serving:
    """`transformers serve` for this model, ready to start: its folder saved once (when its weights are random), the
    server itself started only for its rows (`started`). Its continuous batching on Llama; plain mode on GPT-NeoX,
    where its continuous batching fails."""

    folder: Path
    log_path: Path
    device: torch.device
    continuous: bool
    notes: list[str]
    began: float = dataclasses.field(default_factory=time.perf_counter)

    def progress(self, what: str) -> None:  # on stderr as it happens: a step that times out still says how far it got
        print(f"transformers serve: {what} at {time.perf_counter() - self.began:.1f} s", file=sys.stderr, flush=True)

    @contextlib.contextmanager
    def started(self) -> Iterator[Any]:
        """The server, running and past its first request, while the caller measures it; stopped after. None when
        it did not start (said in the notes)."""
        from testkit.processes import ServeProcess

        server = ServeProcess(
            self.folder,
            self.log_path,
            device=self.device.type,
            continuous_batching=self.continuous,
            threads=torch.get_num_threads(),  # the same threads as the engines measured in this process
        )
        try:
            server.start()
        except (AssertionError, OSError) as exc:
            self.notes.append(f"transformers serve: did not start ({str(exc)[:200]})")
            yield None
            return
        try:
            mode = f"transformers serve: {'--continuous-batching' if server.continuous_batching else 'plain mode'}, "
            mode += f"{self.device.type}, {torch.get_num_threads()} threads, started for its rows, stopped after them"
            if mode not in self.notes:
                self.notes.append(mode)
            run_served(server.url, str(server.model_dir), 1, 2)  # it loads the model on a first request: not timed
            self.progress("started, model loaded by a first request")
            yield server
        finally:
            server.stop()
            self.progress("stopped")


@contextlib.contextmanager
def _transformers_serve(
    wanted: bool, model: Any, tokenizer: Any, target: str, device: torch.device, notes: list[str]
) -> Iterator[Serving | None]:
    """What starts `transformers serve` on this model for its rows (None when not wanted)."""
    if not wanted:
        yield None
        return
    with tempfile.TemporaryDirectory() as directory:
        folder = Path(directory) / "model"
        serving = Serving(
            folder,
            Path(os.environ.get("KULLM_BENCH_SERVE_LOG") or Path(directory) / "serve.log"),
            device,
            model.config.model_type != "gpt_neox",
            notes,
        )
        if target in ARCHITECTURES:
            on_torch_thread(model.save_pretrained, folder)
            tokenizer.save_pretrained(folder)
            serving.progress("model saved")
        else:
            serving.folder = Path(_tiny_model() if target == "tiny" else target)
        yield serving


@contextlib.contextmanager
def _private_redis(wanted: bool) -> Iterator[str | None]:
    """A redis-server of the benchmark's own for the queue settings (None when not wanted or not installed)."""
    if not wanted or not shutil.which("redis-server"):
        yield None
        return
    from testkit.redis_server import RedisServer

    with tempfile.TemporaryDirectory() as directory:
        server = RedisServer(Path(directory))
        server.start()
        try:
            yield server.url
        finally:
            server.stop()


def _tiny_model() -> str:
    from testkit.tiny_model import build

    return str(build())


def _pct(values: list[float], pct: int) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[pct - 1]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process peak RSS (KiB on Linux)


if __name__ == "__main__":
    main()
