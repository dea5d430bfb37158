"""Engines with injected faults, selected with ENGINE=tests.faults:<factory> in worker processes.

Each wraps the real `TransformersEngine` on the tiny model and adds one failure.
"""

from __future__ import annotations

import os
import random
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


class OutOfMemorySometimes(_Wrapped):
    """A GPU with room for OOM_ABOVE rows: larger batches run out of memory at random (OOM_RATE per step)."""

    def __init__(self, inner: Any, above: int, rate: float, seed: str) -> None:
        super().__init__(inner)
        self.above, self.rate = above, rate
        self.rng = random.Random(seed)

    def step(self) -> list[GenerationUpdate]:
        batch = min(self.inner.max_batch_size, self.inner.active)  # rows this step decodes or prefills
        if batch > self.above and self.rng.random() < self.rate:
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


def oom_random(settings: WorkerSettings) -> Loaded:
    """ENGINE=tests.faults:oom_random, with OOM_ABOVE (default 4) and OOM_RATE (default 0.3)."""
    loaded = build_transformers(settings)
    above, rate = int(os.environ.get("OOM_ABOVE", "4")), float(os.environ.get("OOM_RATE", "0.3"))
    engine = OutOfMemorySometimes(loaded.engine, above, rate, os.environ.get("WORKER_NAME", ""))
    return Loaded(engine, loaded.prompts)


LONG_CODE_QUESTION = "코드 예제를 길게 보여줘"
SCRIPTED_CHARS_PER_STEP = 60


def long_code_answer() -> str:
    """A 4,500-character answer with two code blocks: prose, code, prose."""
    paragraph = "구름은 고려대학교에서 만든 한국어 언어 모델입니다. 질문에 답하고 글을 요약합니다. " * 6
    code = "```python\n" + "\n".join(f"print('줄 {i}')  # 설명 {i}" for i in range(60)) + "\n```"
    text = f"{paragraph}\n\n{code}\n\n{paragraph}\n\n{paragraph}\n\n{code}\n\n"
    return text + ("끝맺는 문단입니다. " * 100)[: 4499 - len(text)].rstrip() + "."


class ScriptedLongAnswers(_Wrapped):
    """Questions asking for a long code example stream `long_code_answer()`; the rest go to the model.

    The tiny model cannot be trained on 4,500 characters within the test budget; everything after
    the engine (worker, Redis, relay, platform) is the real path.
    """

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.scripted: dict[str, int] = {}

    @property
    def active(self) -> int:
        return int(self.inner.active) + len(self.scripted)

    def add(self, request: GenerationRequest) -> None:
        if LONG_CODE_QUESTION in request.prompt:
            self.scripted[request.id] = 0
        else:
            super().add(request)

    def cancel(self, request_id: str) -> None:
        self.scripted.pop(request_id, None)
        super().cancel(request_id)

    def reset(self) -> list[str]:
        ids = [*self.scripted, *super().reset()]
        self.scripted.clear()
        return ids

    def step(self) -> list[GenerationUpdate]:
        updates = super().step() if self.inner.active else []
        answer = long_code_answer()
        for request_id, shown in list(self.scripted.items()):
            shown = min(len(answer), shown + SCRIPTED_CHARS_PER_STEP)
            finished = shown == len(answer)
            updates.append(
                GenerationUpdate(request_id, answer[:shown], finished, "stop" if finished else None, 10, shown)
            )
            self.scripted[request_id] = shown
            if finished:
                del self.scripted[request_id]
        return updates


def long_answers(settings: WorkerSettings) -> Loaded:
    """ENGINE=tests.faults:long_answers"""
    loaded = build_transformers(settings)
    return Loaded(ScriptedLongAnswers(loaded.engine), loaded.prompts)
