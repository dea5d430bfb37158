"""What an engine that hands requests to a batcher it does not run (transformers' continuous batching, an
inference server) keeps: requests waiting for a slot, and the running ones by the name it gave the batcher — a
request's id is reused when it is retried, a name never is. Cancel and reset work the same for both."""

from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from collections import deque

from inference.engine import GenerationRequest
from inference.engines.answer import Answer


class HandOff(ABC):
    """Waiting and running requests of an engine whose batch runs elsewhere; see the module docstring."""

    max_batch_size: int
    logprobs = False  # a server's stream, or transformers' own batching, reports no log-probabilities here

    def __init__(self, prefix: str) -> None:
        self._waiting: deque[GenerationRequest] = deque()
        self._running: dict[str, Answer] = {}
        self._names = (f"{prefix}{n}" for n in itertools.count())

    @property
    def active(self) -> int:
        return len(self._waiting) + len(self._running)

    def add(self, request: GenerationRequest) -> None:
        self._waiting.append(request)

    def cancel(self, request_id: str) -> None:
        """Drop a waiting request, or stop a running one: its slot is free for the next step at once."""
        self._waiting = deque(r for r in self._waiting if r.id != request_id)
        for name in [name for name, answer in self._running.items() if answer.id == request_id]:
            self._stop(name)

    def reset(self) -> list[str]:
        """Drop everything (after a failed step): the running requests' ids first, then the waiting ones."""
        ids = [answer.id for answer in self._running.values()] + [r.id for r in self._waiting]
        for name in list(self._running):
            self._stop(name)
        self._waiting.clear()
        return ids

    def _hand_over(self) -> None:
        """Hand newcomers to the batcher while the batch has room."""
        while self._waiting and len(self._running) < self.max_batch_size:
            name = next(self._names)
            self._running[name] = self._begin(name, self._waiting.popleft())

    @abstractmethod
    def _begin(self, name: str, request: GenerationRequest) -> Answer:
        """Start `request` in the batcher under `name`; its answer, to be fed what comes back."""

    @abstractmethod
    def _stop(self, name: str) -> None:
        """Forget a running request here and tell the batcher to stop it."""
