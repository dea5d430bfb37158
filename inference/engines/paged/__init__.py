"""`ENGINE=paged`: transformers' continuous batching with a paged KV cache (`engine.PagedEngine`)."""

from __future__ import annotations

from typing import Any

from inference.engine import Loaded, Sampling
from inference.engines.paged.engine import PAGE_SIZE, PagedEngine
from inference.model import context_window, cuda_graphs_on, load_model, loaded
from inference.settings import WorkerSettings

__all__ = ["PAGE_SIZE", "PagedEngine", "build", "on_model"]


def build(settings: WorkerSettings) -> Loaded:
    """Load the model and hand it to transformers' continuous batching."""
    model, tokenizer = load_model(settings)
    return on_model(model, tokenizer, settings)


def on_model(model: Any, tokenizer: Any, settings: WorkerSettings) -> Loaded:
    """The paged engine on a model already loaded; its page pool is sized by the context window."""
    window = context_window(model, settings)
    engine = PagedEngine(
        model,
        tokenizer,
        model_id=settings.model_id,
        sampling=Sampling.of(settings),
        max_batch_size=settings.max_batch_size,
        prefill_chunk=settings.prefill_chunk_tokens,
        context_window=window,
        cuda_graphs=cuda_graphs_on(settings.cuda_graphs, next(model.parameters()).device, paged=True),
    )
    return loaded(engine, tokenizer, window, settings, engine.count_tokens)
