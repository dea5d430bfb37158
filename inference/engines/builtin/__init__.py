"""`ENGINE=builtin` (the default): our own batcher on a transformers model (`engine.BuiltinEngine`), with its slot
KV cache (`kv_cache`), fixed-shape decode steps replayed as CUDA graphs (`decode_graphs`) and compiled
(`compiled`), exact top-p
sampling (`sampling`) and speculative steps with prompt-lookup drafts (`drafts`)."""

from __future__ import annotations

import logging
from typing import Any

from inference.engine import Loaded, Sampling
from inference.engines.builtin.compiled import compile_on, warm_up
from inference.engines.builtin.engine import BuiltinEngine
from inference.model import context_window, cuda_graphs_on, load_model, loaded
from inference.settings import WorkerSettings

__all__ = ["BuiltinEngine", "build", "on_model"]

log = logging.getLogger(__name__)


def build(settings: WorkerSettings) -> Loaded:
    """Load the model and wrap it in our batcher."""
    model, tokenizer = load_model(settings)
    return on_model(model, tokenizer, settings)


def on_model(model: Any, tokenizer: Any, settings: WorkerSettings) -> Loaded:
    """The builtin engine on a model already loaded."""
    device = next(model.parameters()).device
    fixed_shapes = cuda_graphs_on(settings.cuda_graphs, device, paged=False)
    compiled, why_not = compile_on(settings.compile_decode, device, fixed_shapes)
    if why_not:
        log.warning(why_not)
    engine = BuiltinEngine(
        model,
        tokenizer,
        model_id=settings.model_id,
        sampling=Sampling.of(settings),
        max_batch_size=settings.max_batch_size,
        prefill_chunk=settings.prefill_chunk_tokens,
        fixed_shapes=fixed_shapes,
        compiled=compiled,
        speculative=settings.speculative,
        draft_tokens=settings.speculative_tokens,
        step_tokens=settings.speculative_step_tokens or None,
    )
    warm_up(engine)  # COMPILE_DECODE: compiled before the worker is ready, not on its first question
    return loaded(engine, tokenizer, context_window(model, settings), settings, engine.count_tokens)
