"""Engines with injected faults, selected with ENGINE=tests.faults:<factory> in worker processes.

Each wraps the real `TransformersEngine` on the tiny model and adds one failure.
"""

from __future__ import annotations

from typing import Any

import torch

from inference.engine import GenerationRequest, GenerationUpdate
from inference.model import Loaded, build_transformers
from inference.settings import WorkerSettings

POISON = "💣"


class _Wrapped:
    """Delegates everything to the real engine."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    @property
    def max_batch_size(self) -> int:
        return int(self.inner.max_batch_size)

    @max_batch_size.setter
    def max_batch_size(self, value: int) -> None:
        self.inner.max_batch_size = value

    @property
    def active(self) -> int:
        return int(self.inner.active)

    def add(self, request: GenerationRequest) -> None:
        self.inner.add(request)

    def cancel(self, request_id: str) -> None:
        self.inner.cancel(request_id)

    def reset(self) -> list[str]:
        return list(self.inner.reset())

    def step(self) -> list[GenerationUpdate]:
        return list(self.inner.step())


class PoisonEngine(_Wrapped):
    """Every step fails while a question containing 💣 is in the batch."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.poisoned: set[str] = set()

    def add(self, request: GenerationRequest) -> None:
        if POISON in request.prompt:
            self.poisoned.add(request.id)
        super().add(request)

    def cancel(self, request_id: str) -> None:
        self.poisoned.discard(request_id)
        super().cancel(request_id)

    def reset(self) -> list[str]:
        self.poisoned.clear()
        return super().reset()

    def step(self) -> list[GenerationUpdate]:
        if self.poisoned:
            raise RuntimeError("injected failure: poisoned question in the batch")
        return super().step()


class OutOfMemoryOnce(_Wrapped):
    """The first step with more than one question runs out of memory."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.fired = False

    def step(self) -> list[GenerationUpdate]:
        if not self.fired and self.inner.active > 1:
            self.fired = True
            raise torch.OutOfMemoryError("injected: CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().step()


def poison(settings: WorkerSettings) -> Loaded:
    """ENGINE=tests.faults:poison"""
    loaded = build_transformers(settings)
    return Loaded(PoisonEngine(loaded.engine), loaded.prompts)


def oom_once(settings: WorkerSettings) -> Loaded:
    """ENGINE=tests.faults:oom_once"""
    loaded = build_transformers(settings)
    return Loaded(OutOfMemoryOnce(loaded.engine), loaded.prompts)
