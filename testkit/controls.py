"""What the bot's controls on a Discord or Slack message (as the stand-ins store it) say about the answer."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from bot.slack.blocks import CANCEL_ACTION, FEEDBACK_ACTION, VOTE_ACTION
from chatbus import Bus, Keys, Vote, connect
from testkit.shown import components_in


def _controls(message: dict[str, Any]) -> Iterator[str]:
    """The custom ids (Discord) and action ids (Slack) of a message's buttons."""
    for component in components_in(message):  # in rows, or in rows inside a layout's container
        if component.get("type") == 2:
            yield str(component.get("custom_id", ""))
    for block in message.get("blocks") or []:
        for element in block.get("elements") or []:
            if isinstance(element, dict):
                yield str(element.get("action_id", ""))


def stop_button_on(message: dict[str, Any]) -> bool:
    """The answer is still streaming: its stop button is shown."""
    return any(c.startswith("kullm:cancel:") or c == CANCEL_ACTION for c in _controls(message))


def vote_buttons_on(message: dict[str, Any]) -> bool:
    """The answer is finished and can be rated: its 👍/👎 buttons are shown (Slack's feedback_buttons, or plain
    buttons)."""
    return any(c.startswith(("kullm:vote:", VOTE_ACTION, FEEDBACK_ACTION)) for c in _controls(message))


def feedback_buttons_on(message: dict[str, Any]) -> bool:
    """Slack's own feedback element (context_actions → feedback_buttons) is under the message."""
    return any(
        element.get("type") == "feedback_buttons"
        for block in message.get("blocks") or []
        if block.get("type") == "context_actions"
        for element in block.get("elements") or []
    )


async def stored_votes(redis_url: str) -> list[Vote]:
    """The votes in that Redis, as `kullm feedback` reads them (the latest per person per answer)."""
    bus = Bus(connect(redis_url), Keys())
    try:
        return await bus.feedback.votes()
    finally:
        await bus.redis.aclose()


async def none_in_flight(redis_url: str, platform: str) -> bool:
    """Whether the adapters of `platform` have no answer in flight (each holds its asker's slot until its record is
    forgotten, just after its final text is out)."""
    bus = Bus(connect(redis_url), Keys())
    try:
        return await bus.inflight.tracked(platform) == []
    finally:
        await bus.redis.aclose()
