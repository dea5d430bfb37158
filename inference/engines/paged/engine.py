"""`PagedEngine`: transformers' continuous batching behind the `Engine` protocol (`ENGINE=paged`).

transformers runs the batch on its own thread with a paged KV cache (CUDA_GRAPHS=true: and CUDA graphs
on a GPU, slower than without in our measurements, bench/RESULTS.md; left to itself, transformers turns
them off for SDPA, the attention a bare install has);
this engine hands it at most `max_batch_size` requests at a time, so the worker's governor still
sizes the batch, and turns the tokens it streams back into `Answer`s, so stops, cancels and
updates behave as in the builtin engine. A step waits up to `STEP_WAIT_S` for tokens.

GPT-NeoX (KULLM v1/v2): transformers 5.17–5.24's GPT-NeoX attention calls the paged cache without
the keyword arguments the cache fills in for the attention kernel, and fails with a TypeError.
`adapt_gpt_neox` gives each attention layer of the loaded model a forward that passes them, the
way Llama's attention does; nothing changes for the other engines or for other models.
"""

from __future__ import annotations

import inspect
import logging
import math
import types
from typing import Any

import torch

from inference.engine import GenerationRequest, GenerationUpdate, Sampling
from inference.engines.answer import Answer
from inference.engines.handoff import HandOff
from inference.errors import EngineLoadError, EngineOutOfMemory

log = logging.getLogger(__name__)

# How long a step waits for the first token to come back (then it takes whatever else has arrived).
STEP_WAIT_S = 0.05
# The paged cache's page, in tokens: transformers' default (5.17 calls it block_size, 5.24 page_size).
PAGE_SIZE = 256
_DEFECT = "layer_past.update(key_states, value_states, self.layer_idx)"


class PagedEngine(HandOff):
    """transformers' `ContinuousBatchingManager`, fed and read by the worker's steps."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        model_id: str,
        sampling: Sampling,
        max_batch_size: int,
        prefill_chunk: int,
        context_window: int,
        cuda_graphs: bool = False,
    ) -> None:
        super().__init__("r")
        self.model = model
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.sampling = sampling
        self.max_batch_size = max_batch_size
        self.last_batch = self.last_tokens = 0
        self._prefill_chunk = prefill_chunk
        self._context_window = context_window
        self._cuda_graphs = cuda_graphs
        self._seen: dict[str, int] = {}  # tokens already read of each running request
        adapt_gpt_neox(model)
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)  # transformers samples on its thread with the default generator
        self._manager = self._start()

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False).input_ids)

    def reset(self) -> list[str]:
        """Drop everything (after a failed step): the running requests' ids first, then the waiting ones."""
        ids = super().reset()
        if self._fatal_error() is not None or not self._manager.is_running():  # a fresh one for what comes next
            self._manager.stop(block=True, timeout=10, hard_stop=True)
            self._manager = self._start()
        return ids

    def step(self) -> list[GenerationUpdate]:
        """Hand newcomers to transformers while the batch has room, then read the tokens that came back."""
        try:
            return self._step()
        except (torch.OutOfMemoryError, MemoryError) as exc:
            raise EngineOutOfMemory(str(exc)) from exc

    def close(self) -> None:
        """Stop transformers' thread at once, dropping what it still generates (the worker calls this at shutdown,
        after handing its unfinished questions back to the queue)."""
        self.reset()
        self._manager.stop(block=True, timeout=10, hard_stop=True)

    @torch.inference_mode()
    def _step(self) -> list[GenerationUpdate]:
        self._hand_over()
        self.last_batch = len(self._running)
        self.last_tokens = 0
        updates: list[GenerationUpdate] = []
        output = self._manager.get_result(timeout=STEP_WAIT_S)
        while output is not None:
            updates += self._read(output)
            output = self._manager.get_result(timeout=0)
        fatal = self._fatal_error()
        if fatal is not None:  # transformers' thread died and failed every request: the whole batch failed
            if isinstance(fatal, torch.OutOfMemoryError | MemoryError):
                raise EngineOutOfMemory(str(fatal))
            raise RuntimeError(f"transformers' continuous batching stopped: {type(fatal).__name__}: {fatal}")
        return updates

    def _begin(self, name: str, request: GenerationRequest) -> Answer:
        ids = self.tokenizer(request.prompt, add_special_tokens=False).input_ids
        eos = -1 if request.ignore_eos else self.sampling.eos_token_id
        self._manager.add_request(
            ids, request_id=name, max_new_tokens=request.max_new_tokens, streaming=True, eos_token_id=eos
        )
        self._seen[name] = 0
        return Answer(request, len(ids), self.sampling.eos_token_id, self.tokenizer)

    def _read(self, output: Any) -> list[GenerationUpdate]:
        """What one output from transformers adds to its answer (its tokens so far, or its error)."""
        name = output.request_id
        answer = self._running.get(name)
        if answer is None:  # cancelled, or already ended by our stop rules
            return []
        if output.error and self._fatal_error() is not None:
            return []  # the whole batch failed: `_step` says so, and `reset` lists this request
        if output.error:  # this request alone failed
            self._forget(name)
            return [GenerationUpdate(answer.id, "", True, None, answer.prompt_tokens, 0, error=output.error)]
        updates = []
        tokens = output.generated_tokens[self._seen[name] :]
        self._seen[name] += len(tokens)
        self.last_tokens += len(tokens)
        for token in tokens:
            update = answer.add_token(token)
            if update is not None:
                updates.append(update)
            if answer.finish_reason is not None:
                break
        if answer.finish_reason is None and output.is_finished():
            update = answer.finish("length" if answer.completion_tokens >= answer.request.max_new_tokens else "stop")
            updates += [update] if update else []
        if answer.finish_reason is not None and output.is_finished():
            self._forget(name)
        elif answer.finish_reason is not None:  # our stop rules ended it first (a new `###` section)
            self._stop(name)
        return updates

    def _stop(self, name: str) -> None:
        """Forget a request here and tell transformers to stop it."""
        self._forget(name)
        self._manager.cancel_request(name)

    def _forget(self, name: str) -> None:
        del self._running[name]
        del self._seen[name]

    def _start(self) -> Any:
        from transformers import ContinuousBatchingConfig, GenerationConfig

        make_config: Any = GenerationConfig  # untyped

        sampling = self.sampling
        config = make_config(
            do_sample=sampling.do_sample,
            temperature=sampling.temperature if sampling.do_sample else None,
            top_p=sampling.top_p if sampling.do_sample else None,
            eos_token_id=sampling.eos_token_id,
            pad_token_id=self.tokenizer.pad_token_id
            if self.tokenizer.pad_token_id is not None
            else sampling.eos_token_id,
        )
        sizes: dict[str, Any] = {"max_batch_tokens": self._prefill_chunk}
        if self.model.device.type == "cpu":  # left to itself it sizes the cache for all free memory (on a GPU: 90 %)
            sizes["num_blocks"] = self.max_batch_size * math.ceil(self._context_window / PAGE_SIZE) + 1
        elif self._cuda_graphs:  # asked for: its own heuristic keeps them off unless the attention is flash
            sizes["use_cuda_graph"] = True
        try:
            manager = self.model.init_continuous_batching(
                generation_config=config, continuous_batching_config=ContinuousBatchingConfig(**sizes)
            )
        except (AttributeError, TypeError, ValueError, NotImplementedError) as exc:
            raise EngineLoadError(
                f"ENGINE=paged: transformers' continuous batching does not run {type(self.model).__name__} ({exc}); "
                "use ENGINE=builtin"
            ) from exc
        manager.start()
        return manager

    def _fatal_error(self) -> BaseException | None:
        """What stopped transformers' thread, if it died."""
        error: BaseException | None = self._manager.background_thread_status.fatal_error
        return error


def adapt_gpt_neox(model: Any) -> bool:
    """Give a GPT-NeoX model's attention layers a forward that passes the paged cache its keyword arguments.

    Only where the installed transformers has the defect (its GPT-NeoX attention calls
    `layer_past.update` with three arguments); returns whether it adapted anything. Under another
    cache (the builtin engine's, on the same model) the layers behave as before.
    """
    from transformers.generation.continuous_batching.cache import PagedAttentionCache
    from transformers.models.gpt_neox import modeling_gpt_neox

    neox: Any = modeling_gpt_neox  # partly untyped
    layers = [m for m in model.modules() if isinstance(m, neox.GPTNeoXAttention)]
    if not layers or _DEFECT not in inspect.getsource(neox.GPTNeoXAttention.forward):
        return False

    def forward(
        self: Any,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None,
        layer_past: Any = None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """transformers' GPT-NeoX attention forward, passing `kwargs` to the paged cache as Llama's does."""
        input_shape = hidden_states.shape[:-1]
        qkv = self.query_key_value(hidden_states).view(*input_shape, -1, 3 * self.head_size).transpose(1, 2)
        query, key, value = qkv.chunk(3, dim=-1)
        assert position_embeddings is not None
        cos, sin = position_embeddings
        query, key = neox.apply_rotary_pos_emb(query, key, cos, sin)
        if isinstance(layer_past, PagedAttentionCache):
            key, value = layer_past.update(key, value, self.layer_idx, kwargs=kwargs)
        elif layer_past is not None:
            key, value = layer_past.update(key, value, self.layer_idx)
        implementation = self.config._attn_implementation
        attention = neox.ALL_ATTENTION_FUNCTIONS.get_interface(implementation, neox.eager_attention_forward)
        dropout = self.attention_dropout if self.training else 0.0
        output, weights = attention(
            self, query, key, value, attention_mask, scaling=self.scaling, dropout=dropout, **kwargs
        )
        return self.dense(output.reshape(*input_shape, -1).contiguous()), weights

    for layer in layers:
        layer.forward = types.MethodType(forward, layer)
    log.info("GPT-NeoX attention adapted to transformers' paged cache (%d layers)", len(layers))
    return True
