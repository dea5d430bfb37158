"""How large a batch the worker lets its engine run, after running out of memory.

Out of memory at batch n: the batch restarts at n // 2, and sizes of n and more stay off
limits for `OOM_CEILING_S`. After every `RESTORE_BATCH_AFTER_STEPS` good steps the size grows
by one, up to MAX_BATCH_SIZE (or that ceiling while it holds). A question that runs out of
memory alone is not retried here.
"""

from __future__ import annotations

import time
from collections.abc import Callable

RESTORE_BATCH_AFTER_STEPS = 50
OOM_CEILING_S = 600.0  # a batch size that ran out of memory stays off limits this long


class BatchGovernor:
    """The batch size allowed now, given the configured maximum and the out-of-memory errors seen."""

    def __init__(self, max_batch_size: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_batch_size = max_batch_size
        self.clock = clock
        self._good_steps = 0
        self._ceiling: int | None = None  # the largest batch allowed since the last out-of-memory error
        self._oom_at = 0.0

    def limit(self) -> int:
        """MAX_BATCH_SIZE, or less for a while after a batch ran out of memory (so it is not grown into again)."""
        if self._ceiling is not None and self.clock() - self._oom_at > OOM_CEILING_S:
            self._ceiling = None
        return min(self.max_batch_size, self._ceiling or self.max_batch_size)

    def stepped(self, current: int) -> int:
        """The batch size after one good step at `current`."""
        self._good_steps += 1
        if self._good_steps >= RESTORE_BATCH_AFTER_STEPS and current < self.limit():
            self._good_steps = 0
            return current + 1
        return current

    def out_of_memory(self, failed: int) -> int:
        """The batch size to restart at after a batch of `failed` questions ran out of memory (0: fail one)."""
        self._good_steps = 0
        if failed <= 1:
            return 0
        self._ceiling, self._oom_at = failed - 1, self.clock()
        return failed // 2
