"""`TransformersEngine`: a causal LM from transformers behind the `Engine` protocol.

It batches at the iteration level: every `step()` decodes one token for every running
question and prefills newcomers in the same step, merging their KV cache into the running
batch (left-padded). A question that finishes or is cancelled leaves the batch at once, so
its slot is free for the next step.
"""

from __future__ import annotations

import inspect
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import DynamicCache

from chatbus.messages import FinishReason
from inference.detokenize import IncrementalDecoder
from inference.engine import GenerationRequest, GenerationUpdate, Sampling
from inference.errors import EngineOutOfMemory
from inference.prompt import visible_answer

log = logging.getLogger(__name__)

# Candidates sorted for top-p before falling back to the whole vocabulary.
TOP_P_HEAD = 64


@dataclass
class _Row:
    request: GenerationRequest
    prompt_tokens: int
    decoder: IncrementalDecoder
    shown: str = ""
    finish_reason: FinishReason | None = None
    cancelled: bool = False

    @property
    def completion_tokens(self) -> int:
        return len(self.decoder.ids)


@dataclass
class _Batch:
    """The running batch: rows plus their left-padded attention mask and KV cache."""

    rows: list[_Row] = field(default_factory=list)
    cache: DynamicCache | None = None
    mask: torch.Tensor | None = None  # [rows, cached tokens]
    positions: torch.Tensor | None = None  # [rows] position id of the next token
    next_tokens: torch.Tensor | None = None  # [rows] last sampled token, fed at the next step


class TransformersEngine:
    """A causal LM from transformers, batched at the iteration level."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        model_id: str,
        sampling: Sampling,
        max_batch_size: int,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.sampling = sampling
        self.max_batch_size = max_batch_size
        self.device = next(model.parameters()).device
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else sampling.eos_token_id
        self.last_batch = 0
        # transformers 5.24 renamed `past_key_values` to `cache` (argument and output); speak what the model takes.
        forward_params = inspect.signature(model.forward).parameters
        self._cache_name = "cache" if "cache" in forward_params else "past_key_values"
        self._waiting: deque[GenerationRequest] = deque()
        self._batch = _Batch()
        self._generator = torch.Generator(device=self.device)
        if sampling.seed is not None:
            self._generator.manual_seed(sampling.seed)
        else:
            self._generator.seed()

    @property
    def active(self) -> int:
        """Requests waiting for prefill plus rows decoding."""
        return len(self._waiting) + len(self._batch.rows)

    def count_tokens(self, text: str) -> int:
        """Prompt length in this model's tokens."""
        return len(self.tokenizer(text, add_special_tokens=False).input_ids)

    def add(self, request: GenerationRequest) -> None:
        """Queue a request for the next step's prefill."""
        self._waiting.append(request)

    def cancel(self, request_id: str) -> None:
        """Drop a waiting request, or mark a running row to leave at the next step."""
        self._waiting = deque(r for r in self._waiting if r.id != request_id)
        for row in self._batch.rows:
            if row.request.id == request_id:
                row.cancelled = True

    def reset(self) -> list[str]:
        """Forget every request and the KV cache; the batch's ids come first, then those still waiting."""
        ids = [row.request.id for row in self._batch.rows] + [r.id for r in self._waiting]
        self._waiting.clear()
        self._batch = _Batch()
        return ids

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
        self._drop(lambda row: row.cancelled)
        updates = self._decode() if self._batch.rows else []
        room = self.max_batch_size - len(self._batch.rows)
        newcomers = [self._waiting.popleft() for _ in range(min(room, len(self._waiting)))]
        if newcomers:
            try:
                updates += self._prefill(newcomers)
            except BaseException:
                # Out of memory or another failure: the newcomers were in the failed batch, in front.
                self._waiting.extendleft(reversed(newcomers))
                raise
        self.last_batch = len(self._batch.rows)
        self._drop(lambda row: row.finish_reason is not None)
        return updates

    def _decode(self) -> list[GenerationUpdate]:
        batch = self._batch
        assert batch.mask is not None and batch.positions is not None and batch.next_tokens is not None
        mask = torch.cat([batch.mask, batch.mask.new_ones((len(batch.rows), 1))], dim=1)
        logits, batch.cache = self._forward(
            input_ids=batch.next_tokens[:, None],
            attention_mask=mask,
            position_ids=batch.positions[:, None],
            **{self._cache_name: batch.cache},
        )
        batch.mask = mask
        batch.positions = batch.positions + 1
        batch.next_tokens = self._sample(logits[:, -1, :])
        return self._advance(batch.rows, batch.next_tokens)

    def _prefill(self, requests: list[GenerationRequest]) -> list[GenerationUpdate]:
        encoded = [self.tokenizer(r.prompt, add_special_tokens=False).input_ids for r in requests]
        width = max(len(ids) for ids in encoded)
        input_ids = torch.full((len(encoded), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(encoded), width), dtype=torch.long)
        for i, ids in enumerate(encoded):
            input_ids[i, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            mask[i, width - len(ids) :] = 1
        input_ids, mask = input_ids.to(self.device), mask.to(self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits, cache = self._forward(input_ids=input_ids, attention_mask=mask, position_ids=positions)
        tokens = self._sample(logits[:, -1, :])
        rows = [
            _Row(request, len(ids), IncrementalDecoder(self.tokenizer))
            for request, ids in zip(requests, encoded, strict=True)
        ]
        self._merge(rows, cache, mask, positions[:, -1] + 1, tokens)
        return self._advance(rows, tokens)

    def _forward(self, **inputs: Any) -> tuple[torch.Tensor, DynamicCache]:
        """One forward pass with the KV cache on; returns the logits and the updated cache."""
        out = self.model(**inputs, use_cache=True)
        return out.logits, getattr(out, self._cache_name)

    def _merge(
        self,
        rows: list[_Row],
        cache: DynamicCache,
        mask: torch.Tensor,
        positions: torch.Tensor,
        tokens: torch.Tensor,
    ) -> None:
        """Append prefilled rows to the running batch, left-padding the shorter KV cache."""
        batch = self._batch
        if not batch.rows:
            self._batch = _Batch(rows, cache, mask, positions, tokens)
            return
        assert batch.cache is not None and batch.mask is not None
        assert batch.positions is not None and batch.next_tokens is not None
        width = max(batch.mask.shape[1], mask.shape[1])
        for old, new in zip(_layers(batch.cache), _layers(cache), strict=True):
            old.keys = torch.cat([_left_pad(old.keys, width), _left_pad(new.keys, width)], dim=0)
            old.values = torch.cat([_left_pad(old.values, width), _left_pad(new.values, width)], dim=0)
        batch.mask = torch.cat([_left_pad(batch.mask, width), _left_pad(mask, width)], dim=0)
        batch.positions = torch.cat([batch.positions, positions])
        batch.next_tokens = torch.cat([batch.next_tokens, tokens])
        batch.rows.extend(rows)

    def _drop(self, leaves: Any) -> None:
        """Remove rows for which `leaves(row)` holds, then trim padding columns nobody needs."""
        batch = self._batch
        keep = [i for i, row in enumerate(batch.rows) if not leaves(row)]
        if len(keep) == len(batch.rows):
            return
        if not keep:
            self._batch = _Batch()
            return
        assert batch.cache is not None and batch.mask is not None
        assert batch.positions is not None and batch.next_tokens is not None
        index = torch.tensor(keep, device=self.device)
        batch.rows = [batch.rows[i] for i in keep]
        batch.mask = batch.mask.index_select(0, index)
        batch.positions = batch.positions.index_select(0, index)
        batch.next_tokens = batch.next_tokens.index_select(0, index)
        first = int(batch.mask.any(dim=0).nonzero()[0])
        batch.mask = batch.mask[:, first:]
        for layer in _layers(batch.cache):
            layer.keys = layer.keys.index_select(0, index)[:, :, first:, :]
            layer.values = layer.values.index_select(0, index)[:, :, first:, :]

    def _sample(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.sampling.do_sample:
            return logits.argmax(dim=-1)
        probs = torch.softmax(logits.float() / self.sampling.temperature, dim=-1)
        return sample_top_p(probs, self.sampling.top_p, self._generator)

    def _advance(self, rows: list[_Row], tokens: torch.Tensor) -> list[GenerationUpdate]:
        updates = []
        for row, token in zip(rows, tokens.tolist(), strict=True):
            if token == self.sampling.eos_token_id and not row.request.ignore_eos:
                row.finish_reason = "stop"
            else:
                row.decoder.push(token)
            final = row.finish_reason is not None or row.completion_tokens >= row.request.max_new_tokens
            text, stopped = visible_answer(row.decoder.text, final=final)
            if stopped and not row.request.ignore_eos:
                row.finish_reason = "stop"
            elif final and row.finish_reason is None:
                row.finish_reason = "length"
            if row.finish_reason is not None:
                text, _ = visible_answer(row.decoder.text, final=True)
            if text != row.shown or row.finish_reason is not None:
                row.shown = text
                updates.append(
                    GenerationUpdate(
                        row.request.id,
                        text,
                        row.finish_reason is not None,
                        row.finish_reason,
                        row.prompt_tokens,
                        row.completion_tokens,
                    )
                )
        return updates


def sample_top_p(probs: torch.Tensor, top_p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Nucleus sampling: draw from the smallest set of most likely tokens whose mass reaches `top_p`.

    Exact, but sorts only the head of the distribution: a full sort of Polyglot-ko's 30080
    logits per row per token cost more than the model itself on small batches.
    """
    for k in (TOP_P_HEAD, probs.shape[-1]):
        head, index = probs.topk(min(k, probs.shape[-1]), dim=-1)
        cumulative = head.cumsum(dim=-1)
        if k >= probs.shape[-1] or bool((cumulative[:, -1] >= top_p).all()):
            break
    keep = (cumulative - head) < top_p  # tokens before which the mass is still short of top_p
    choice = torch.multinomial(head * keep, 1, generator=generator)
    return index.gather(-1, choice).squeeze(1)


def _layers(cache: DynamicCache) -> list[Any]:
    """The cache's per-layer key/value holders (typed loosely: their classes differ across transformers versions)."""
    return list(cache.layers)


def _left_pad(tensor: torch.Tensor, width: int) -> torch.Tensor:
    """Pad a [batch, …, seq(, dim)] mask or KV tensor with zeros on the left of its sequence axis."""
    seq_axis = 1 if tensor.dim() == 2 else 2
    missing = width - tensor.shape[seq_axis]
    if missing == 0:
        return tensor
    shape = list(tensor.shape)
    shape[seq_axis] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=seq_axis)
