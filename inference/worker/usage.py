"""Usage accounting: every question's tokens, however its answer ended, counted into the day's usage and written
with the reservation of the asker's daily cap that it settles (`chatbus.ledger`), in one transaction per flush."""

from __future__ import annotations

import time
from collections import Counter

from chatbus import Bus, BusError, Question, usage_field


class UsageBook:
    """Counts not yet written, by day, and the (platform, user, question id) reservations they settle."""

    def __init__(self) -> None:
        self._days: dict[str, Counter[str]] = {}
        self._settled: list[tuple[str, str, str]] = []

    def count(self, question: Question, prompt_tokens: int, completion_tokens: int, *, answered: bool = True) -> None:
        """Add a question's tokens to today's usage and end its reservation (both written by the next `flush`): per
        platform, user and channel, and the user's total over channels (what a daily token quota reads).
        `answered`: counted as a question."""
        day = time.strftime("%Y-%m-%d", time.gmtime())
        counts = self._days.setdefault(day, Counter())
        self._settled.append((question.platform, question.user, question.id))
        channel = question.channel or question.target.get("channel", "")
        for where in dict.fromkeys((channel, "*")):
            for metric, count in (
                ("questions", int(answered)),
                ("prompt_tokens", prompt_tokens),
                ("completion_tokens", completion_tokens),
            ):
                counts[usage_field(question.platform, question.user, where, metric)] += count

    async def flush(self, bus: Bus, ttl_s: int) -> None:
        """Write the counts; with Redis down or refusing writes, what was not written waits for the next flush."""
        days, self._days = self._days, {}
        settled, self._settled = self._settled, []
        try:
            while days:
                day = next(iter(days))
                await bus.ledger.settle(day, dict(days[day]), ttl_s, settled)
                del days[day]
                settled = []  # ended with the first day's counts
        except BusError:
            for day, counts in days.items():
                self._days.setdefault(day, Counter()).update(counts)
            self._settled = settled + self._settled
