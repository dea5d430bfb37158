"""How every front-end follows an answer (the relay, the API and `kullm ask`): the contract's follower
(`chatbus.answers`) with the front-ends' settings — the start and stall timeouts, and how long a Redis
outage is ridden out (REDIS_OUTAGE_S) before it is given up."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from bot.settings import ClientSettings
from chatbus import AnswerEvent, Bus


async def follow_answer(
    bus: Bus, question_id: str, settings: ClientSettings, on_outage: Callable[[], object] | None = None
) -> AsyncIterator[AnswerEvent]:
    """The question's answer events until the last one; `on_outage` is called when Redis drops.

    Raises `AnswerTimeout` when no event comes in time, `BusDown` when Redis stays away too long.
    """
    async for _, event in bus.answers.follow(
        question_id,
        start_timeout_s=settings.start_timeout_s,
        stall_timeout_s=settings.answer_stall_timeout_s,
        outage_s=settings.redis_outage_s,
        on_outage=on_outage,
    ):
        yield event
