"""Which waiting requests the builtin engine prefills together: the order newcomers start in.

A step spends up to PREFILL_CHUNK_TOKENS prompt tokens on newcomers (`engine.BuiltinEngine`): the oldest
with the shortest others that fit as one left-padded batch (`group`), and short prompts past a long one
still being read (`short_behind`). `read` gives a newcomer's prompt tokens (tokenised once, on the engine's
thread).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from inference.engine import GenerationRequest


@dataclass
class Newcomer:
    """A request waiting for, or part way through, its prefill."""

    request: GenerationRequest
    ids: list[int] | None = None  # the prompt's tokens, read on the engine's thread at its first prefill
    done: int = 0  # tokens already in `cache` (a long prompt is prefilled a chunk per step)
    cache: Any = None  # its own KV cache until it joins the running batch

    @property
    def left(self) -> int:
        assert self.ids is not None
        return len(self.ids) - self.done


Read = Callable[[Newcomer], list[int]]


def group(waiting: Sequence[Newcomer], budget: int, room: int, read: Read) -> list[Newcomer]:
    """The oldest newcomer and, shortest first, the others whose whole prompts fit the budget with it as one
    left-padded batch (at most `room` in all): short prompts pad little, so more of a burst starts in one step,
    and the oldest is always in (none waits behind later ones for more than its turn at the head)."""
    head, *others = waiting
    chosen, width = [head], len(read(head))
    for newcomer in sorted(others, key=lambda n: len(read(n))):
        wider = max(width, len(read(newcomer)))
        if len(chosen) == room or (len(chosen) + 1) * wider > budget:
            break  # sorted: every later one is as long or longer
        chosen.append(newcomer)
        width = wider
    return chosen


def short_behind(waiting: Sequence[Newcomer], budget: int, room: int, read: Read) -> list[Newcomer]:
    """Newcomers queued behind a long prompt whose whole prompts fit `budget` together, shortest first: a
    question must not wait for every chunk of a long summary part (or a long 맥락) ahead of it. The long
    prompt still gets the rest of each step's budget, so it is never starved."""
    short = sorted((n for n in list(waiting)[1:] if n.done == 0), key=lambda n: len(read(n)))
    chosen: list[Newcomer] = []
    for newcomer in short:
        width = len(read(newcomer))
        if len(chosen) == room or (len(chosen) + 1) * width > budget:
            break
        chosen.append(newcomer)
    return chosen
