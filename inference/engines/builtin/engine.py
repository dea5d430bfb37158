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

Speculative steps (SPECULATIVE; `speculation` picks who guesses and what is kept, `drafts` guesses): a row
whose answer copies its prompt is fed its next token and guessed ones in one step, rows without guesses
alongside. The step samples a token at every fed position from the model's filtered distribution p
(temperature, top-p); a guess x is kept when that sample is x, which happens with probability p(x), and
otherwise the sample, distributed as p without x renormalised, is the row's next token (speculative
sampling with a draft sure of its guess; greedy: the argmax). So answers follow exactly today's
distribution, in fewer steps. Rows gain different numbers of tokens, so a row's next column may lie left
of the cache's `end` (its lag); the columns of a refused guess are overwritten by the row's next step.
"""

from __future__ import annotations

import inspect
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

import torch

from chatbus.messages import TokenLogprob
from inference.engine import GenerationRequest, GenerationUpdate, Sampling
from inference.engines.answer import Answer
from inference.engines.builtin.decode_graphs import FixedShapeDecoder, fixed_decoder, padded_queries
from inference.engines.builtin.kv_cache import SlotCache, Window, attending
from inference.engines.builtin.newcomers import Newcomer, group, short_behind
from inference.engines.builtin.sampling import TokenLogprobs, sample
from inference.engines.builtin.speculation import DEFAULT_DRAFT_TOKENS, Speculation, Speculator
from inference.errors import EngineOutOfMemory, GraphsUnavailable

log = logging.getLogger(__name__)

# Prompt tokens prefilled per step, newcomers together (PREFILL_CHUNK_TOKENS).
DEFAULT_PREFILL_CHUNK = 512


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
        compiled: bool = False,
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
        self._waiting: deque[Newcomer] = deque()
        # The running batch. Row i has positions[i] tokens in the cache, in the columns ending at cache.end - lags[i],
        # where its next token (next[i], position positions[i]) goes. Lags are 0 but after speculative steps.
        self._rows: list[Answer] = []
        self._cache = SlotCache(self._layers)
        self._positions = torch.zeros(0, dtype=torch.long, device=self.device)
        self._next = torch.zeros(0, dtype=torch.long, device=self.device)
        self._lags = torch.zeros(0, dtype=torch.long, device=self.device)
        self.speculator = Speculator(speculative, draft_tokens, step_tokens, self.device.type)
        if self.device.type == "cuda":
            # cuDNN's attention builds an execution plan per new shape, and the attended length grows by one
            # column every step, so it planned on every step (several times the step's own time, bench/RESULTS.md).
            # The other SDPA kernels (flash, memory-efficient) need no plan.
            torch.backends.cuda.enable_cudnn_sdp(False)
        self._fixed = (
            fixed_decoder(model, self._cache_name, self._last_only, self.pad_token_id, compiled)
            if fixed_shapes or compiled
            else None
        )
        self._logprobs = TokenLogprobs(tokenizer)
        self._generator = torch.Generator(device=self.device)
        if sampling.seed is not None:
            self._generator.manual_seed(sampling.seed)
        else:
            self._generator.seed()

    @property
    def active(self) -> int:
        """Requests waiting for prefill plus rows decoding (a cancelled row leaves at the next step, uncounted)."""
        return len(self._waiting) + sum(not row.cancelled for row in self._rows)

    @property
    def graphs(self) -> FixedShapeDecoder | None:
        """The fixed-shape decoder (CUDA_GRAPHS=1), until a capture fails; None when decoding eagerly."""
        return self._fixed

    @property
    def speculation(self) -> Speculation:
        """What the speculative steps did so far."""
        return self.speculator.stats

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
        self._waiting.append(Newcomer(request))

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
        self.speculator.clear()
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
        drafts = self.speculator.guesses(self._rows)
        queries = 1 + max(map(len, drafts), default=0)
        if self._fixed is not None:
            queries = padded_queries(queries)  # a graph per padded count, not per count
        tokens = self._next[:, None]
        if queries > 1:
            fed = [[self.pad_token_id] * (queries - 1 - len(d)) for d in drafts]  # padded to the longest, ignored
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
        gained, kept = self.speculator.keep(rows, drafts, sampled)
        self.last_tokens += sum(map(len, gained))
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
            logprobs = self._logprobs.of(
                owners, torch.tensor([sampled[k] for k in kept], device=self.device), fed[index]
            )
        return self._advance_many(gained, logprobs)

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
                joining = group(self._waiting, budget, self.max_batch_size - len(self._rows), self._read)
                budget -= len(joining) * max(n.left for n in joining)
                updates += self._prefill(joining)
            elif passing := short_behind(  # short prompts go past a long one, with half the budget
                self._waiting, budget // 2, self.max_batch_size - len(self._rows), self._read
            ):
                budget -= len(passing) * max(n.left for n in passing)
                updates += self._prefill(passing)
            else:  # a long prompt: the next chunk of it, on its own
                chunk = min(head.left, budget)
                budget -= chunk
                updates += self._prefill_chunk(head, chunk)
        return updates

    def _prefill(self, group: list[Newcomer]) -> list[GenerationUpdate]:
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

    def _prefill_chunk(self, newcomer: Newcomer, size: int) -> list[GenerationUpdate]:
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
        self, group: list[Newcomer], prefilled: Any, tokens: torch.Tensor, logits: torch.Tensor
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
        for newcomer in group:
            self.speculator.joined(newcomer.request, self._read(newcomer))
        return self._advance(rows, tokens, logits)

    def _read(self, newcomer: Newcomer) -> list[int]:
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
            self.speculator.left(self._rows[i].id)
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
        # `end` moves back to the column of the row nearest it, when that row left (one read back from the device).
        nearest, reach = torch.stack([self._lags.min(), (self._positions + self._lags).max()]).tolist()
        if nearest:
            self._cache.advance(-nearest)
            self._lags -= nearest
        self._cache.truncate(kept, self._cache.end - (reach - nearest))

    def _sample(self, logits: torch.Tensor, requests: list[GenerationRequest]) -> torch.Tensor:
        return sample(logits, requests, self.sampling, self._generator)

    def _advance(self, rows: list[Answer], tokens: torch.Tensor, logits: torch.Tensor) -> list[GenerationUpdate]:
        """One token per row: into its answer, and its drafter's tokens when it drafts."""
        logprobs = self._logprobs.of(rows, tokens, logits)
        updates = []
        for row, token, logprob in zip(rows, tokens.tolist(), logprobs, strict=True):
            self.speculator.gained(row.id, token)
            updates.append(row.add_token(token, logprob))
        return [update for update in updates if update is not None]
