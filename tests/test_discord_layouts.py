"""Discord answers as Components V2 layouts (the default): the real discord.py bot posts each answer as one
container holding its text, a divider and the footer line, and its buttons (⏹️ while it streams, 👍/👎 once
done); long answers split at 4,000 characters; DISCORD_LAYOUT=plain, or a Discord that refuses layouts, gives
today's plain messages. The loopback Discord holds layouts to Discord's rules (no content, 40 components, 4,000
characters) and the conformance check validates every component sent against Discord's description."""

from __future__ import annotations

from typing import Any

import pytest

from testkit import trained
from testkit.controls import stop_button_on, vote_buttons_on
from testkit.engines import LONG_CODE_QUESTION, long_code_answer
from testkit.shown import COMPONENTS_V2, components_in, footer_of, shown_text, without_footer
from tests import test_discord
from tests.test_discord import Discord, scripted_summary

pytestmark = pytest.mark.e2e
discord_env = test_discord.discord_env  # the fixture: the stand-in, the bot process, a scripted worker


def layout_of(message: dict[str, Any]) -> list[tuple[int, str]]:
    """A layout's components in order, as (type, text or custom id or "")."""
    return [(c["type"], c.get("content") or c.get("custom_id") or "") for c in components_in(message)]


async def test_an_answer_is_one_layout_holding_its_text_footer_and_buttons(discord_env: Discord) -> None:
    d, s = discord_env, discord_env.standin
    asked = await s.send_message(s.channel_id, s.alice, d.mention("딥러닝이 뭐야?"), mention_bot=True)
    thread = await d.thread_for(int(asked["id"]))
    posted = await s.wait_for(lambda: next((c.json for c in s.calls if c.path == f"/channels/{thread}/messages"), None))
    assert posted["flags"] & COMPONENTS_V2 and not posted.get("content"), "a layout: no content of its own"
    [(container, _), (text, waiting), (row, _), (button, stop)] = layout_of(posted)
    assert (container, text, row, button) == (17, 10, 1, 2) and waiting == "⏳ 생각 중…"
    assert stop.startswith("kullm:cancel:"), "the stop button inside the answer's container"
    answer = await d.answer_in(thread, trained.DEEP_LEARNING)
    assert answer["content"] == "" and answer["flags"] & COMPONENTS_V2
    kinds = [kind for kind, _ in layout_of(answer)]
    assert kinds == [17, 10, 14, 10, 1, 2, 2], "text, divider, footer, then 👍/👎 in one container"
    footer = layout_of(answer)[3][1]
    assert footer.startswith("-# ") and footer_of(shown_text(answer)) == footer[3:]
    assert vote_buttons_on(answer) and not stop_button_on(answer)
    up = next(custom_id for kind, custom_id in layout_of(answer) if custom_id.startswith("kullm:vote:up:"))
    await s.click_button(int(answer["id"]), up, s.bob)
    notice = await s.wait_for(lambda: next((r for r in s.interaction_responses if r["type"] == 4), None))
    assert "평가를 저장했어요" in notice["data"]["content"], "the buttons inside a layout work"


async def test_a_long_answer_goes_on_in_layouts_of_4000_characters(discord_env: Discord) -> None:
    d, s = discord_env, discord_env.standin
    asked = await s.send_message(s.channel_id, s.alice, d.mention(LONG_CODE_QUESTION), mention_bot=True)
    thread = await d.thread_for(int(asked["id"]))
    await s.wait_for(lambda: vote_buttons_on(next(iter(d.bot_messages(thread)[1:]), {})), 60)
    messages = d.bot_messages(thread)
    pieces = [shown_text(m) for m in messages]
    assert len(messages) == 2 and all(len(p) <= 4000 for p in pieces), "4,000 characters a layout, not 2,000"
    assert [without_footer(p).rsplit("\n\n", 1)[1] for p in pieces] == ["(1/2)", "(2/2)"]
    assert all(p.count("```") % 2 == 0 for p in pieces), "code fences closed and reopened per message"
    assert "".join(pieces).count("print('줄 59')") == long_code_answer().count("print('줄 59')")
    assert [vote_buttons_on(m) for m in messages] == [False, True] and not any(map(stop_button_on, messages))
    assert footer_of(pieces[1]) and not footer_of(pieces[0]), "the footer under the last part only"


async def test_a_layout_answer_replied_to_is_read_without_its_footer(discord_env: Discord) -> None:
    """`@KULLM 요약` replying to one of the bot's own layouts reads its text displays (the footer line left out)."""
    d, s = discord_env, discord_env.standin
    asked = await s.send_message(s.channel_id, s.alice, d.mention("한국의 수도는 어디야?"), mention_bot=True)
    thread = await d.thread_for(int(asked["id"]))
    answer = await d.answer_in(thread, trained.CAPITAL)
    await s.send_message(thread, s.bob, d.mention("요약"), mention_bot=True, reference_message_id=int(answer["id"]))
    await d.answer_in(thread, scripted_summary([trained.CAPITAL]))


@pytest.mark.bot_env(DISCORD_LAYOUT="plain")
async def test_the_plain_setting_gives_todays_plain_messages(discord_env: Discord) -> None:
    d, s = discord_env, discord_env.standin
    asked = await s.send_message(s.channel_id, s.alice, d.mention("딥러닝이 뭐야?"), mention_bot=True)
    answer = await d.answer_in(await d.thread_for(int(asked["id"])), trained.DEEP_LEARNING)
    assert without_footer(answer["content"]) == trained.DEEP_LEARNING and not answer["flags"] & COMPONENTS_V2
    assert [row["type"] for row in answer["components"]] == [1] and vote_buttons_on(answer)


async def test_where_discord_refuses_layouts_answers_are_plain_messages(discord_env: Discord) -> None:
    """An API (or a proxy in front of it) that refuses Components V2: the first refusal turns layouts off, the
    question is answered in a plain message, and so is the next one."""
    d, s = discord_env, discord_env.standin
    s.layouts_refused = True
    for question, expected in (("딥러닝이 뭐야?", trained.DEEP_LEARNING), ("한국의 수도는 어디야?", trained.CAPITAL)):
        asked = await s.send_message(s.channel_id, s.alice, d.mention(question), mention_bot=True)
        answer = await d.answer_in(await d.thread_for(int(asked["id"])), expected)
        assert without_footer(answer["content"]) == expected and not answer["flags"] & COMPONENTS_V2
    refused = [c for c in s.calls if isinstance(c.json, dict) and int(c.json.get("flags") or 0) & COMPONENTS_V2]
    assert len(refused) == 1, "one refusal, then plain messages without trying again"
    assert d.bot.log().count("Discord refused a Components V2 layout") == 1
