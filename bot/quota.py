"""The limits every front-end holds an asker to, checked the same way for a chat user and an API key: questions a
minute (a fixed window; a task counts as the questions its parts cost), and a daily token cap, reserved at
admission for the most a question can cost (`chatbus.ledger`) and settled by the worker when its answer ends."""

from __future__ import annotations

import calendar
import time

from chatbus import Bus, Question
from chatbus.ledger import TEMPLATE_TOKENS, prompt_bound, task_bound
from chatbus.messages import MAX_TASK_PARTS

RATE_WINDOW_S = 60  # the window of questions a minute (USER_QUESTIONS_PER_MINUTE, a key's questions_per_minute)


class Quota:
    """One platform's askers' limits on one bus; see the module docstring."""

    def __init__(self, bus: Bus, platform: str) -> None:
        self.bus, self.platform = bus, platform

    async def over_rate(self, user: str, per_minute: int, units: int = 1) -> int | None:
        """Count a question (worth `units`) in the asker's window: None while within `per_minute`, else the seconds
        until the window starts over."""
        if await self.bus.queue.count_request(self.platform, user, RATE_WINDOW_S, units) <= per_minute:
            return None
        return await self.bus.queue.rate_reset_s(self.platform, user)

    async def day_used_up(self, user: str, cap: int, text_asked: str) -> bool:
        """True when the day's use, what open answers hold and this text's prompt at most reach `cap` (a refusal
        before anything is posted; `reserve` is the check that holds)."""
        held = await self.bus.ledger.tokens_today(self.platform, user) + await self.bus.ledger.reserved(
            self.platform, user
        )
        return held + len(text_asked.encode()) + TEMPLATE_TOKENS >= cap

    async def reserve(self, item: Question, cap: int, new_tokens: int, deadline: float) -> Question | None:
        """Hold the most this question can cost of the asker's daily `cap` until `deadline`: a plain question's new
        tokens lowered to what the cap has left, a task's whole bound; None when not that much is left."""
        if item.task != "ask":
            most = task_bound(item, new_tokens, MAX_TASK_PARTS)
            return item if await self.bus.ledger.reserve(item, cap, most, most, deadline) else None
        bound = prompt_bound(item)
        granted = await self.bus.ledger.reserve(item, cap, bound + 1, bound + new_tokens, deadline)
        return item.model_copy(update={"max_new_tokens": granted - bound}) if granted else None

    async def release(self, item: Question) -> None:
        """Give back what `reserve` held for a question that was not queued after all."""
        await self.bus.ledger.release(item)


def seconds_to_midnight() -> int:
    """Until the day's token caps start over (midnight UTC)."""
    now = time.gmtime()
    midnight = calendar.timegm((now.tm_year, now.tm_mon, now.tm_mday, 0, 0, 0)) + 86400
    return max(1, midnight - int(time.time()))
