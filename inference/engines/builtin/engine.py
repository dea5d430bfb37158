"""`BuiltinEngine` (`ENGINE=builtin`, the default): a causal LM from transformers behind the `Engine` protocol.

It batches at the iteration level. Every `step()` decodes one token for every running
question, then spends up to `prefill_chunk` prompt tokens on newcomers: short prompts are
prefilled together as one left-padded batch, a long one a chunk per step, so a newcomer never
waits for a whole padded wave and the running questions never wait for a long prompt. Short
prompts queued behind a long one go past it with half a step's budget (the long one keeps the
rest): a question asked while a summary's long parts are read starts within a step or two. Prefill
computes logits for the last position only.

The running batch's keys and values live in a `SlotCache` (`kv_cache`), written in
place: a decode step writes one column, a newcomer copies in only its own tokens, a finished
question's row is refilled by the last row. A question that finishes or is cancelled leaves
the batch at once, so its slot is free for the next step.

With `fixed_shapes` (CUDA_GRAPHS=1) decode steps run at bucketed shapes, captured and replayed as
CUDA graphs on a GPU (`decode_graphs`); prefill stays eager.

Speculative steps (`speculative`, SPECULATIVE): a row whose answer copies its prompt (`drafts`) is fed its
next token and up to `draft_tokens` guessed ones in one step, rows without guesses alongside; each row keeps
its guesses up to the first the model would not have produced, plus the model's own token there. Sampling
decides each guess exactly as plain decoding would: the step samples a token at every fed position from
the model's filtered distribution p (temperature, top-p), and a guess x is kept when that sample is x —
which happens with probability p(x); when it is not, the sample is distributed as p with x removed and
renormalised, and it is the row's next token (speculative sampling with a draft that is sure of its guess).
Greedy rows keep a guess when it is the argmax. So answers follow exactly today's distribution (greedy:
the same text), in fewer steps. Rows gain different numbers of tokens, so a row's next column may lie left
of the cache's `end` (its lag); the columns a refused guess wrote are overwritten by the row's next step.
"""

from __future__ import annotations

import inspect
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from chatbus.messages import LOGPROB_FLOOR, TokenLogprob, TopLogprob
from inference.engine import GenerationRequest, GenerationUpdate, Sampling
from inference.engines.answer import Answer
from inference.engines.builtin.decode_graphs import FixedShapeDecoder, padded_queries
from inference.engines.builtin.drafts import COPYING_KEPT, FIRST_KEPT, Drafter
from inference.engines.builtin.kv_cache import SlotCache, Window, attending
from inference.engines.builtin.sampling import sample_top_p
from inference.errors import EngineOutOfMemory, GraphsUnavailable

log = logging.getLogger(__name__)

# Prompt tokens prefilled per step, newcomers together (PREFILL_CHUNK_TOKENS).
DEFAULT_PREFILL_CHUNK = 512
# SPECULATIVE: which rows draft. auto: those whose requests say their answers copy the prompt (the tasks).
SPECULATIVE_MODES = ("auto", "on", "off")
# Guessed tokens fed per row and step, at most (SPECULATIVE_TOKENS).
DEFAULT_DRAFT_TOKENS = 16
# Tokens a speculative step may feed in all (rows × (1 + guesses)) by default, per device (SPECULATIVE_STEP_TOKENS):
# past it a step costs more than the steps it saves. A GPU reads a 12.8B model's weights in about the time it
# computes a few hundred tokens. On 2 CPU cores the mid-size model's 맞춤법 교정 at 16 in flight gained 1.04x with
# 32, 1.58x with 64 and with 128 (bench/RESULTS.md, "Speculative steps").
DEFAULT_STEP_TOKENS = {"cuda": 256, "cpu": 64}
# A step guesses when the guesses its rows are expected to keep (`Drafter.expected`) are at least this share of the
# tokens it feeds beyond one per row (every row is fed as many as the longest guess): a row alone guesses (it guesses
# at most three tokens per token it expects to keep), but a few rows trying their luck do not make a full batch pay
# for their guesses.
GUESS_WORTH = 0.25


@dataclass
class Speculation:
    """What the speculative steps did: the benchmarks' and the metrics' counters."""

    steps: int = 0  # steps that fed guesses
    guesses: int = 0  # rows that guessed, summed over those steps
    drafted: int = 0  # guessed tokens fed
    accepted: int = 0  # guessed tokens kept
    tokens: int = 0  # tokens the rows that guessed gained in those steps (kept guesses and the model's own)

    @property
    def acceptance(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0


@dataclass
class _Newcomer:
    """A request waiting for, or part way through, its prefill."""

    request: GenerationRequest
    ids: list[int] | None = None  # the prompt's tokens, read on the engine's thread at its first prefill
    done: int = 0  # tokens already in `cache` (a long prompt is prefilled a chunk per step)
    cache: Any = None  # its own KV cache until it joins the running batch

    @property
    def left(self) -> int:
        assert self.ids is not None
        return len(self.ids) - self.done


class BuiltinEngine:
    """A causal LM from transformers, batched at the iteration level."""

    logprobs = True  # from the logits each step computes anyway, for the rows that ask

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        model_id: str,
        sampling: Sampling,
        max_batch_size: int,
        prefill_chunk: int = DEFAULT_PREFILL_CHUNK,
        fixed_shapes: bool = False,
        speculative: str = "off",
        draft_tokens: int = DEFAULT_DRAFT_TOKENS,
        step_tokens: int | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.sampling = sampling
        self.max_batch_size = max_batch_size
        self.prefill_chunk = prefill_chunk
        self.device = next(model.parameters()).device
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else sampling.eos_token_id
        self.last_batch = self.last_tokens = 0
        # transformers 5.24 renamed `past_key_values` to `cache` (argument and output); speak what the model takes.
        forward_params = inspect.signature(model.forward).parameters
        self._cache_name = "cache" if "cache" in forward_params else "past_key_values"
        self._last_only = {"logits_to_keep": 1} if "logits_to_keep" in forward_params else {}
        self._layers = int(model.config.num_hidden_layers)
        self._waiting: deque[_Newcomer] = deque()
        # The running batch. Row i has positions[i] tokens in the cache, right-aligned: they fill the columns
        # [cache.end - positions[i], cache.end), and its next token (next[i], position positions[i]) goes to cache.end.
        self._rows: list[Answer] = []
        self._cache = SlotCache(self._layers)
        self._positions = torch.zeros(0, dtype=torch.long, device=self.device)
        self._next = torch.zeros(0, dtype=torch.long, device=self.device)
        # How far left of `end` each row's next column is (rows gain different numbers of tokens in speculative steps).
        self._lags = torch.zeros(0, dtype=torch.long, device=self.device)
        if speculative not in SPECULATIVE_MODES:
            raise ValueError(f"speculative={speculative!r}: expected one of {', '.join(SPECULATIVE_MODES)}")
        self.speculative = speculative
        self.draft_tokens = draft_tokens
        self.step_tokens = step_tokens or DEFAULT_STEP_TOKENS.get(self.device.type, DEFAULT_STEP_TOKENS["cuda"])
        self.speculation = Speculation()
        self._drafters: dict[str, Drafter] = {}  # the rows that draft, by request id
        if self.device.type == "cuda":
            # cuDNN's attention builds an execution plan per new shape, and the attended length grows by one
            # column every step, so it planned on every step (several times the step's own time, bench/RESULTS.md).
            # The other SDPA kernels (flash, memory-efficient) need no plan.
            torch.backends.cuda.enable_cudnn_sdp(False)
        self._fixed = self._fixed_decoder() if fixed_shapes else None
        self._token_texts: dict[int, str] = {}  # each token id's own text, for log-probabilities
        self._generator = torch.Generator(device=self.device)
        if sampling.seed is not None:
            self._generator.manual_seed(sampling.seed)
        else:
            self._generator.seed()

    def _fixed_decoder(self) -> FixedShapeDecoder | None:
        """CUDA_GRAPHS=1: the fixed-shape decoder, unless the model spans several devices (a graph records one
        device's stream: the other devices' work would be lost)."""
        devices = {parameter.device for parameter in self.model.parameters()}
        if len(devices) > 1:
            log.warning("CUDA_GRAPHS=1 needs the model on one device; it spans %d: decoding eagerly", len(devices))
            return None
        decoder = FixedShapeDecoder(
            self.model, cache_name=self._cache_name, forward_options=self._last_only, pad_token_id=self.pad_token_id
        )
        if decoder.capture:
            log.info("CUDA graphs on: each decode shape is captured when it first occurs, then replayed")
        else:
            log.warning("CUDA_GRAPHS=1 on %s: decode steps run at fixed shapes, with no graph to replay", self.device)
        return decoder

    @property
    def active(self) -> int:
        """Requests waiting for prefill plus rows decoding (a cancelled row leaves at the next step, uncounted)."""
        return len(self._waiting) + sum(not row.cancelled for row in self._rows)

    @property
    def graphs(self) -> FixedShapeDecoder | None:
        """The fixed-shape decoder (CUDA_GRAPHS=1), until a capture fails; None when decoding eagerly."""
        return self._fixed

    @property
    def running(self) -> tuple[Answer, ...]:
        """The rows decoding now (tests read their tokens)."""
        return tuple(self._rows)

    @property
    def cache(self) -> SlotCache:
        """The running batch's KV cache (benchmarks and tests read its geometry and `copies`)."""
        return self._cache

    def count_tokens(self, text: str) -> int:
        """Prompt length in this model's tokens."""
        return len(self.tokenizer(text, add_special_tokens=False).input_ids)

    def add(self, request: GenerationRequest) -> None:
        """Queue a request for prefill at the next steps."""
        self._waiting.append(_Newcomer(request))

    def cancel(self, request_id: str) -> None:
        """Drop a waiting request (its partial prefill too), or mark a running row to leave at the next step."""
        self._waiting = deque(n for n in self._waiting if n.request.id != request_id)
        for row in self._rows:
            if row.request.id == request_id:
                row.cancelled = True

    def reset(self) -> list[str]:
        """Forget every request and the KV cache; the batch's ids come first, then those still waiting."""
        ids = [row.request.id for row in self._rows] + [n.request.id for n in self._waiting]
        self._waiting.clear()
        self._rows = []
        self._cache = SlotCache(self._layers)  # the buffers go too: a reset often follows running out of memory
        if self._fixed is not None:
            self._fixed.clear()  # so do the graphs that point into them
        self._positions = torch.zeros(0, dtype=torch.long, device=self.device)
        self._next = torch.zeros(0, dtype=torch.long, device=self.device)
        self._lags = torch.zeros(0, dtype=torch.long, device=self.device)
        self._drafters.clear()
        return ids

    def close(self) -> None:
        """Nothing to release: the model and its cache are freed with the engine."""

    def step(self) -> list[GenerationUpdate]:
        """Decode one token for running rows, prefill newcomers, then drop finished rows.

        Running out of memory (CUDA's or the host's) is raised as `EngineOutOfMemory`, so the
        worker that drives this engine never needs to know torch.
        """
        try:
            return self._step()
        except (torch.OutOfMemoryError, MemoryError) as exc:
            raise EngineOutOfMemory(str(exc)) from exc

    @torch.inference_mode()
    def _step(self) -> list[GenerationUpdate]:
        self._leave(lambda row: row.cancelled)
        self.last_tokens = 0
        updates = self._decode() if self._rows else []
        updates += self._prefill_newcomers()
        self.last_batch = len(self._rows)
        self._leave(lambda row: row.finish_reason is not None)
        return updates

    def _decode(self) -> list[GenerationUpdate]:
        """One step of the running rows: their next tokens, and the guesses of the rows that draft."""
        drafts = self._drafts()
        queries = 1 + max(map(len, drafts), default=0)
        if self._fixed is not None:
            queries = padded_queries(queries)  # a graph per padded count, not per count
        tokens = self._next[:, None]
        if queries > 1:
            fed = [[0] * (queries - 1 - len(d)) for d in drafts]  # guesses padded to the longest (ignored after)
            padded = torch.tensor([d + pad for d, pad in zip(drafts, fed, strict=True)], dtype=torch.long)
            tokens = torch.cat([tokens, padded.to(self.device)], dim=1)
        self._cache.make_room(queries)
        logits = self._decode_fixed(tokens) if self._fixed is not None else None
        if logits is None:
            logits = self._decode_eager(tokens)
        if queries > 1:
            return self._verify(drafts, logits)
        self._cache.advance()
        self._positions = self._positions + 1
        self._next = self._sample(logits[:, 0], [row.request for row in self._rows])
        self.last_tokens += len(self._rows)
        return self._advance(self._rows, self._next, logits[:, 0])

    def _decode_eager(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed each row `tokens` [rows, queries] at its own columns: the logits [rows, queries, vocabulary]."""
        cache, queries = self._cache, tokens.shape[1]
        columns = torch.arange(cache.start, cache.end + queries, device=self.device)
        mask, index = attending(columns, cache.end - self._lags, self._positions, queries)
        cache.window = Window(cache.rows, cache.start, cache.end + queries, index)
        try:
            logits, _ = self._forward(
                keep=queries,
                input_ids=tokens,
                attention_mask=mask,
                position_ids=self._positions[:, None] + torch.arange(queries, device=self.device),
                **{self._cache_name: cache},
            )
        finally:
            cache.window = None
        return logits[:, -queries:, :]

    def _decode_fixed(self, tokens: torch.Tensor) -> torch.Tensor | None:
        """The running rows' logits from the fixed-shape decoder; None (and eager decoding from now on) when
        capturing a CUDA graph failed."""
        assert self._fixed is not None
        try:
            return self._fixed.step(self._cache, tokens, self._positions, self._lags)
        except GraphsUnavailable as exc:
            log.warning("CUDA graphs are off for this worker, decoding eagerly: %s", exc)
            self._fixed = None
            return None

    def _drafts(self) -> list[list[int]]:
        """Each running row's guesses for this step (empty for most), or no list at all when none guesses. The
        guesses are fewer as the batch grows, and none past `step_tokens` tokens in all."""
        if not self._drafters:
            return []
        limit = min(self.draft_tokens, self.step_tokens // len(self._rows) - 1)
        if limit < 1:
            return []
        drafts, expected = [], 0.0
        for row in self._rows:
            drafter = self._drafters.get(row.id)
            room = row.request.max_new_tokens - row.completion_tokens - 1  # guesses past the answer's end are waste
            draft = drafter.draft(min(limit, room)) if drafter is not None and room > 0 else []
            if draft:
                assert drafter is not None
                expected += min(len(draft), drafter.expected)
            drafts.append(draft)
        longest = max(map(len, drafts))
        return drafts if longest and expected >= GUESS_WORTH * longest * len(drafts) else []

    def _verify(self, drafts: list[list[int]], logits: torch.Tensor) -> list[GenerationUpdate]:
        """Keep each row's guesses up to the first its sampled token refuses, and that token (module docstring)."""
        rows = self._rows
        picks = [(i, q) for i, draft in enumerate(drafts) for q in range(len(draft) + 1)]
        if len(picks) == logits.shape[0] * logits.shape[1]:  # every row guessed as many as were fed: no copy
            fed = logits.reshape(len(picks), -1)
        else:
            at = [i for i, _ in picks], [q for _, q in picks]
            fed = logits[torch.tensor(at[0], device=self.device), torch.tensor(at[1], device=self.device)]
        sampled = self._sample(fed, [rows[i].request for i, _ in picks]).tolist()
        gained: list[list[int]] = []
        kept: list[int] = []  # indices into `picks` of the positions whose tokens the rows keep
        first = 0
        for draft in drafts:
            own = sampled[first : first + len(draft) + 1]
            accepted = 0
            while accepted < len(draft) and own[accepted] == draft[accepted]:
                accepted += 1
            gained.append(own[: accepted + 1])
            kept.extend(range(first, first + accepted + 1))
            first += len(draft) + 1
        self._account(drafts, gained)
        # The cache holds each row's fed next token and its kept guesses; the model's own token is the next one.
        lags = self._lags.tolist()
        ends = [len(tokens) - lag for tokens, lag in zip(gained, lags, strict=True)]  # relative to `end`
        moved = max(ends)
        self._cache.advance(moved)
        self._lags = torch.tensor([moved - e for e in ends], dtype=torch.long, device=self.device)
        self._positions = self._positions + torch.tensor([len(t) for t in gained], device=self.device)
        self._next = torch.tensor([t[-1] for t in gained], dtype=torch.long, device=self.device)
        logprobs: list[TokenLogprob | None] = [None] * len(kept)
        if any(row.request.logprobs is not None for row in rows):
            index = torch.tensor(kept, device=self.device)
            owners = [rows[picks[k][0]] for k in kept]
            logprobs = self._logprobs(owners, torch.tensor([sampled[k] for k in kept], device=self.device), fed[index])
        return self._advance_many(gained, logprobs)

    def _account(self, drafts: list[list[int]], gained: list[list[int]]) -> None:
        """Count a speculative step; tell each drafting row's drafter what it gained and how its guesses fared."""
        stats = self.speculation
        stats.steps += 1
        for row, draft, tokens in zip(self._rows, drafts, gained, strict=True):
            self.last_tokens += len(tokens)
            drafter = self._drafters.get(row.id)
            if drafter is not None:
                drafter.extend(tokens)
            if draft:
                assert drafter is not None
                drafter.judged(len(draft), len(tokens) - 1)
                stats.guesses += 1
                stats.drafted += len(draft)
                stats.accepted += len(tokens) - 1
                stats.tokens += len(tokens)

    def _advance_many(self, gained: list[list[int]], logprobs: list[TokenLogprob | None]) -> list[GenerationUpdate]:
        """Each row's tokens of a speculative step, in order, until its answer ends; its last update."""
        updates: list[GenerationUpdate] = []
        told = iter(logprobs)
        for row, tokens in zip(self._rows, gained, strict=True):
            last = None
            for token, logprob in zip(tokens, told, strict=False):
                if row.finish_reason is None:
                    last = row.add_token(token, logprob) or last
            if last is not None:
                updates.append(last)
        return updates

    def _prefill_newcomers(self) -> list[GenerationUpdate]:
        """Spend up to `prefill_chunk` prompt tokens on newcomers, in order, while the batch has room."""
        updates: list[GenerationUpdate] = []
        budget = self.prefill_chunk
        while self._waiting and budget > 0 and len(self._rows) < self.max_batch_size:
            head = self._waiting[0]
            self._read(head)
            if head.done == 0 and head.left <= budget:
                group = self._group(budget)
                budget -= len(group) * max(n.left for n in group)
                updates += self._prefill(group)
            elif passing := self._short_behind(budget // 2):  # short prompts go past a long one, with half the budget
                budget -= len(passing) * max(n.left for n in passing)
                updates += self._prefill(passing)
            else:  # a long prompt: the next chunk of it, on its own
                chunk = min(head.left, budget)
                budget -= chunk
                updates += self._prefill_chunk(head, chunk)
        return updates

    def _short_behind(self, budget: int) -> list[_Newcomer]:
        """Newcomers queued behind a long prompt whose whole prompts fit `budget` together, shortest first: a
        question must not wait for every chunk of a long summary part (or a long 맥락) ahead of it. The long
        prompt still gets the rest of each step's budget, so it is never starved."""
        room = self.max_batch_size - len(self._rows)
        short = sorted((n for n in list(self._waiting)[1:] if n.done == 0), key=lambda n: len(self._read(n)))
        group: list[_Newcomer] = []
        for newcomer in short:
            width = len(self._read(newcomer))
            if len(group) == room or (len(group) + 1) * width > budget:
                break
            group.append(newcomer)
        return group

    def _group(self, budget: int) -> list[_Newcomer]:
        """The oldest newcomer and, shortest first, the others whose whole prompts fit the budget with it as one
        left-padded batch: short prompts pad little, so more of a burst starts in one step, and the oldest is
        always in (none waits behind later ones for more than its turn at the head)."""
        room = self.max_batch_size - len(self._rows)
        head, *others = self._waiting
        group, width = [head], len(self._read(head))
        for newcomer in sorted(others, key=lambda n: len(self._read(n))):
            wider = max(width, len(self._read(newcomer)))
            if len(group) == room or (len(group) + 1) * wider > budget:
                break  # sorted: every later one is as long or longer
            group.append(newcomer)
            width = wider
        return group

    def _prefill(self, group: list[_Newcomer]) -> list[GenerationUpdate]:
        """Prefill whole prompts as one left-padded batch; they join the running batch."""
        encoded = [self._read(n) for n in group]
        width = max(len(ids) for ids in encoded)
        input_ids = torch.full((len(group), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(group), width), dtype=torch.long)
        for i, ids in enumerate(encoded):
            input_ids[i, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            mask[i, width - len(ids) :] = 1
        input_ids, mask = input_ids.to(self.device), mask.to(self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits, cache = self._forward(input_ids=input_ids, attention_mask=mask, position_ids=positions)
        self._waiting = deque(n for n in self._waiting if not any(n is joining for joining in group))
        last = logits[:, -1, :]
        return self._join(group, cache, self._sample(last, [n.request for n in group]), last)

    def _prefill_chunk(self, newcomer: _Newcomer, size: int) -> list[GenerationUpdate]:
        """The next `size` tokens of one long prompt into its own cache; it joins when the prompt is read."""
        done = newcomer.done
        input_ids = torch.tensor([self._read(newcomer)[done : done + size]], dtype=torch.long, device=self.device)
        logits, newcomer.cache = self._forward(
            input_ids=input_ids,
            attention_mask=torch.ones((1, done + size), dtype=torch.long, device=self.device),
            position_ids=torch.arange(done, done + size, device=self.device)[None, :],
            **{self._cache_name: newcomer.cache},
        )
        newcomer.done = done + size
        if newcomer.left:
            return []
        self._waiting.popleft()
        last = logits[:, -1, :]
        return self._join([newcomer], newcomer.cache, self._sample(last, [newcomer.request]), last)

    def _join(
        self, group: list[_Newcomer], prefilled: Any, tokens: torch.Tensor, logits: torch.Tensor
    ) -> list[GenerationUpdate]:
        """Copy prefilled rows into the running batch's cache; they decode from the next step on."""
        lengths = [len(self._read(n)) for n in group]
        self._cache.place(prefilled, lengths, self.max_batch_size)
        eos = self.sampling.eos_token_id
        rows = [Answer(n.request, length, eos, self.tokenizer) for n, length in zip(group, lengths, strict=True)]
        self._rows.extend(rows)
        self._positions = torch.cat([self._positions, torch.tensor(lengths, dtype=torch.long, device=self.device)])
        self._next = torch.cat([self._next, tokens])
        self._lags = torch.cat([self._lags, self._lags.new_zeros(len(rows))])  # placed ending at `end`
        for newcomer, row in zip(group, rows, strict=True):
            if self._drafts_for(row.request):
                expected = COPYING_KEPT if row.request.copies else FIRST_KEPT
                self._drafters[row.id] = Drafter(self._read(newcomer), expected)
        return self._advance(rows, tokens, logits)

    def _drafts_for(self, request: GenerationRequest) -> bool:
        """Whether a request's row drafts (SPECULATIVE): all with `on`, those whose answers copy with `auto`."""
        return self.speculative == "on" or (self.speculative == "auto" and request.copies)

    def _read(self, newcomer: _Newcomer) -> list[int]:
        """The newcomer's prompt tokens, read once, on the engine's thread (not the worker loop's)."""
        if newcomer.ids is None:
            newcomer.ids = self.tokenizer(newcomer.request.prompt, add_special_tokens=False).input_ids
        return newcomer.ids

    def _forward(self, keep: int = 1, **inputs: Any) -> tuple[torch.Tensor, Any]:
        """One forward pass with the KV cache on; returns the last `keep` positions' logits and the cache."""
        options = {"logits_to_keep": keep} if self._last_only else {}
        result = self.model(**inputs, **options, use_cache=True)
        return result.logits, getattr(result, self._cache_name)

    def _leave(self, leaves: Callable[[Answer], bool]) -> None:
        """Remove rows for which `leaves(row)` holds: the last row moves into each freed slot."""
        gone = [i for i, row in enumerate(self._rows) if leaves(row)]
        if not gone:
            return
        for i in gone:
            self._drafters.pop(self._rows[i].id, None)
        last = len(self._rows) - 1
        for i in reversed(gone):  # from the back, so `last` is always a row that stays
            if i != last:
                self._cache.move_row(last, i)
                self._rows[i] = self._rows[last]
                for tensor in (self._positions, self._next, self._lags):
                    tensor[i] = tensor[last]
            last -= 1
        kept = last + 1
        del self._rows[kept:]
        self._positions, self._next, self._lags = self._positions[:kept], self._next[:kept], self._lags[:kept]
        if not kept:
            self._cache.truncate(0, 0)
            return
        nearest = int(self._lags.min())  # `end` moves back to the column of the row nearest it, when that row left
        if nearest:
            self._cache.advance(-nearest)
            self._lags -= nearest
        self._cache.truncate(kept, self._cache.end - int((self._positions + self._lags).max()))

    def _sample(self, logits: torch.Tensor, requests: list[GenerationRequest]) -> torch.Tensor:
        """One token per row: greedy with DO_SAMPLE=false, else each request's temperature and top-p (the worker's
        unless the request brings its own; temperature 0 is greedy for that row)."""
        if not self.sampling.do_sample:
            return logits.argmax(dim=-1)
        temperatures = [r.temperature if r.temperature is not None else self.sampling.temperature for r in requests]
        if not any(temperatures):
            return logits.argmax(dim=-1)
        top_ps = [r.top_p if r.top_p is not None else self.sampling.top_p for r in requests]
        # One temperature for all (the common case) is a number: no tensor to copy to the GPU, and wait for, each step.
        scale: float | torch.Tensor = max(temperatures[0], 1e-4)
        if len(set(temperatures)) > 1:
            scale = torch.tensor(temperatures, dtype=torch.float32, device=logits.device).clamp(min=1e-4)[:, None]
        probs = torch.softmax(logits.float() / scale, dim=-1)
        nucleus = top_ps[0] if len(set(top_ps)) == 1 else torch.tensor(top_ps, device=logits.device)
        sampled = sample_top_p(probs, nucleus, self._generator)
        if all(temperatures):
            return sampled
        return torch.where(torch.tensor(temperatures, device=logits.device) == 0, logits.argmax(dim=-1), sampled)

    def _advance(self, rows: list[Answer], tokens: torch.Tensor, logits: torch.Tensor) -> list[GenerationUpdate]:
        """One token per row: into its answer, and its drafter's tokens when it drafts."""
        logprobs = self._logprobs(rows, tokens, logits)
        updates = []
        for row, token, logprob in zip(rows, tokens.tolist(), logprobs, strict=True):
            drafter = self._drafters.get(row.id)
            if drafter is not None:
                drafter.extend([token])
            updates.append(row.add_token(token, logprob))
        return [update for update in updates if update is not None]

    def _logprobs(self, rows: list[Answer], tokens: torch.Tensor, logits: torch.Tensor) -> list[TokenLogprob | None]:
        """Each sampled token's log-probability under the model (the logits' own distribution: before temperature
        and top-p, as OpenAI and vLLM report it) and its row's `logprobs` most likely tokens', for the rows that
        asked; None for the others. Computed only for those rows: nothing is spent when none asks."""
        wanted = [i for i, row in enumerate(rows) if row.request.logprobs is not None]
        found: list[TokenLogprob | None] = [None] * len(rows)
        if not wanted:
            return found
        index = torch.tensor(wanted, device=logits.device)
        table = torch.log_softmax(logits[index].float(), dim=-1).clamp_(min=LOGPROB_FLOOR, max=0.0)
        chosen = table.gather(1, tokens[index][:, None].to(logits.device))[:, 0].tolist()
        most = max(rows[i].request.logprobs or 0 for i in wanted)
        top_values, top_ids = table.topk(most, dim=-1) if most else (table[:, :0], table[:, :0].long())
        for j, i in enumerate(wanted):
            count = rows[i].request.logprobs or 0
            top = tuple(
                TopLogprob(token=self._token_text(token), logprob=value)
                for token, value in zip(top_ids[j, :count].tolist(), top_values[j, :count].tolist(), strict=True)
            )
            found[i] = TokenLogprob(token=self._token_text(int(tokens[i])), logprob=chosen[j], top=top)
        return found

    def _token_text(self, token: int) -> str:
        """A token's own text (a byte of a longer character decodes to U+FFFD, as vLLM reports it)."""
        text = self._token_texts.get(token)
        if text is None:
            text = self._token_texts[token] = str(self.tokenizer.decode([token]))
        return text
