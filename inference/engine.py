"""The engine protocol: what the worker needs from a generation backend, and nothing of torch.

The worker drives any `Engine` — add a request, cancel it, step, read what came out — and
never imports torch: an engine reports running out of memory as `EngineOutOfMemory`.
`TransformersEngine` (inference/transformers_engine.py, `ENGINE=builtin`) is the real one; tests and
benchmarks script their own (tests/support/engines.py, bench/queue.py).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from chatbus.messages import FinishReason
from inference.errors import EngineLoadError
from inference.prompt import PromptBuilder
from inference.settings import WorkerSettings


@dataclass(frozen=True)
class Sampling:
    """Decoding settings shared by every question of a worker (the seed's defaults)."""

    do_sample: bool = True
    temperature: float = 0.7
    top_p: float = 0.9
    eos_token_id: int = 2
    seed: int | None = None


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt to complete."""

    id: str
    prompt: str
    max_new_tokens: int
    # Benchmarks force the length: no stop at eos or at a new `###` section.
    ignore_eos: bool = False


@dataclass(frozen=True)
class GenerationUpdate:
    """Where one request stands after a step: the visible answer so far, or the final one."""

    id: str
    text: str
    finished: bool
    finish_reason: FinishReason | None
    prompt_tokens: int
    completion_tokens: int


class Engine(Protocol):
    """What the worker needs from a generation backend."""

    model_id: str
    max_batch_size: int
    last_batch: int
    """Rows decoded by the last `step()` (0 before the first): the worker's batch-size metric."""

    @property
    def active(self) -> int:
        """Requests added and not yet finished, cancelled or reset."""
        ...

    def add(self, request: GenerationRequest) -> None:
        """Queue a request; it joins the running batch at the next step."""
        ...

    def cancel(self, request_id: str) -> None:
        """Drop a request; its slot is free at the next step. Unknown ids are ignored."""
        ...

    def step(self) -> list[GenerationUpdate]:
        """Advance every request by one token; returns updates for those that changed.

        Raises `EngineOutOfMemory` when the batch does not fit (the requests stay until `reset`).
        """
        ...

    def reset(self) -> list[str]:
        """Drop every request (after a failed step); returns their ids, the failed step's batch first."""
        ...


class DelegatingEngine:
    """An engine layered over another: everything goes to `inner`; subclasses change only what they need
    (the tests' fault injection, the benchmark's forced lengths)."""

    def __init__(self, inner: Engine) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    @property
    def max_batch_size(self) -> int:
        return self.inner.max_batch_size

    @max_batch_size.setter
    def max_batch_size(self, value: int) -> None:
        self.inner.max_batch_size = value

    @property
    def active(self) -> int:
        return self.inner.active

    def add(self, request: GenerationRequest) -> None:
        self.inner.add(request)

    def cancel(self, request_id: str) -> None:
        self.inner.cancel(request_id)

    def reset(self) -> list[str]:
        return self.inner.reset()

    def step(self) -> list[GenerationUpdate]:
        return self.inner.step()


@dataclass(frozen=True)
class Loaded:
    """An engine and the prompt builder that speaks its tokenizer: what an engine factory returns."""

    engine: Engine
    prompts: PromptBuilder


# The engines ENGINE names; `transformers` is the builtin engine's name from before there was a choice.
BUILTIN = ("builtin", "transformers")


def engine_factory(spec: str) -> Callable[[WorkerSettings], Loaded]:
    """`builtin`, or `package.module:function` returning a `Loaded` (tests add engines this way)."""
    if spec in BUILTIN:
        from inference.model import build_transformers  # torch and transformers: only for the real engine

        return build_transformers
    module_name, _, attr = spec.partition(":")
    try:
        factory: Callable[[WorkerSettings], Loaded] = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise EngineLoadError(f"ENGINE={spec!r}: expected 'builtin' or 'module:function' ({exc})") from exc
    return factory
