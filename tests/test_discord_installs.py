"""The user-installable Discord app: people who add KULLM to their own account use /kullm and the message actions in
any server, DM or group DM. Where the bot is not a member it can only answer through the interaction, so it answers
the asker alone and says why, under the same limits and queue. The real discord.py bot registers global commands
with Discord's integration types and contexts; the loopback Discord offers them only where those allow, refuses
the bot every REST call into places it has not joined, and sends the interactions as Discord does there."""

from __future__ import annotations

from typing import Any

import pytest

from testkit import trained
from testkit.controls import none_in_flight, vote_buttons_on
from testkit.polling import eventually
from testkit.shown import COMPONENTS_V2, shown_text, without_footer
from testkit.standins.discord.common import MESSAGE_EPHEMERAL
from tests import test_discord
from tests.test_discord import Discord

pytestmark = pytest.mark.e2e
discord_env = test_discord.discord_env  # the fixture: the stand-in, the bot process, a scripted worker
PRIVATE_NOTE = "-# 🔒 이곳에는 KULLM 봇이 없어서 나에게만 보이게 답해요."


def commands_by_name(d: Discord) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in d.standin.commands["global"]}


async def private_answer(d: Discord, channel_id: int, expected: str) -> dict[str, Any]:
    """The answer only its asker sees, once it settles on `expected` under the note that says why."""

    def settled() -> dict[str, Any] | None:
        for message in d.bot_messages(channel_id):
            if without_footer(shown_text(message)) == f"{PRIVATE_NOTE}\n{expected}" and vote_buttons_on(message):
                return message
        return None

    try:
        return await d.standin.wait_for(settled, 30)
    except AssertionError:
        shown = [shown_text(m)[:120] for m in d.bot_messages(channel_id)]
        raise AssertionError(f"no private answer; bot messages: {shown}\n{d.bot.log()[-3000:]}") from None


def calls_into(d: Discord, channel_id: int) -> list[str]:
    return [f"{c.method} {c.path}" for c in d.standin.calls if c.path.startswith(f"/channels/{channel_id}")]


@pytest.mark.bot_env(DISCORD_GUILD_IDS="")
async def test_commands_are_offered_to_user_installs_and_the_settings_stay_in_servers(discord_env: Discord) -> None:
    commands = commands_by_name(discord_env)
    for name in ("kullm", "KULLM에게 묻기", "스레드 요약", "한↔영 번역", "맞춤법 교정"):
        assert commands[name]["integration_types"] == [0, 1], name
        assert commands[name]["contexts"] == [0, 1, 2], name
    settings = commands["kullm-설정"]
    assert settings["integration_types"] == [0] and settings["contexts"] == [0], "server settings: servers only"
    assert "user installs are on" in discord_env.bot.log()


@pytest.mark.bot_env(DISCORD_GUILD_IDS="")
async def test_kullm_where_the_bot_is_not_a_member_answers_only_the_asker(discord_env: Discord) -> None:
    d, s = discord_env, discord_env.standin
    await s.slash_command("kullm", {"질문": "한국의 수도는 어디야?"}, s.alice, s.foreign_channel_id)
    answer = await private_answer(d, s.foreign_channel_id, trained.CAPITAL)
    assert answer["flags"] & MESSAGE_EPHEMERAL and answer["flags"] & COMPONENTS_V2
    assert [r["data"]["flags"] for r in s.interaction_responses if r["type"] == 5] == [MESSAGE_EPHEMERAL]
    assert calls_into(d, s.foreign_channel_id) == [], "nothing posted (or typed) into a server without the bot"
    assert s.threads == {}
    assert len(d.bot_messages(s.foreign_channel_id)) == 1, "the placeholder itself became the answer"


@pytest.mark.bot_env(DISCORD_GUILD_IDS="", DISCORD_LAYOUT="plain")
async def test_a_message_action_in_a_group_dm_answers_only_the_asker(discord_env: Discord) -> None:
    d, s = discord_env, discord_env.standin
    source = await s.send_message(s.group_dm_id, s.bob, "안녕하세요. 만나서 반갑습니다.")
    await s.message_command("한↔영 번역", int(source["id"]), s.alice, s.group_dm_id)
    answer = await private_answer(d, s.group_dm_id, "[EN] 안녕하세요. 만나서 반갑습니다.")
    assert answer["flags"] & MESSAGE_EPHEMERAL and not answer["flags"] & COMPONENTS_V2
    await s.message_command("스레드 요약", int(source["id"]), s.alice, s.group_dm_id)  # no thread it could read
    await private_answer(d, s.group_dm_id, "요약(안녕하세요. 만나서 반갑습니다. ~ 안녕하세요. 만나서 반갑습니다., 1줄)")
    assert calls_into(d, s.group_dm_id) == []


@pytest.mark.bot_env(DISCORD_GUILD_IDS="", USER_QUESTIONS_PER_MINUTE="2")
async def test_user_installs_meet_the_same_limits(discord_env: Discord) -> None:
    """A hostile user floods /kullm from a server without the bot: the per-user limit refuses the third question,
    in a notice only they see; an over-long question is refused the same way."""
    d, s = discord_env, discord_env.standin
    for _ in range(3):
        await s.slash_command("kullm", {"질문": "한국의 수도는 어디야?"}, s.bob, s.foreign_channel_id)
    refusal = await s.wait_for(
        lambda: next((m for m in d.bot_messages(s.foreign_channel_id) if "1분에 2개까지" in shown_text(m)), None)
    )
    assert refusal["flags"] & MESSAGE_EPHEMERAL
    await s.slash_command("kullm", {"질문": "가" * 5000}, s.alice, s.foreign_channel_id)
    await s.wait_for(lambda: any("너무 길어요" in shown_text(m) for m in d.bot_messages(s.foreign_channel_id)))
    assert calls_into(d, s.foreign_channel_id) == []


@pytest.mark.bot_env(DISCORD_GUILD_IDS="", DISCORD_USER_INSTALL="0")
async def test_user_installs_can_be_turned_off(discord_env: Discord) -> None:
    d, s = discord_env, discord_env.standin
    assert all(c.get("integration_types") in (None, [0]) for c in s.commands["global"])
    with pytest.raises(PermissionError):
        await s.slash_command("kullm", {"질문": "한국의 수도는 어디야?"}, s.alice, s.foreign_channel_id)
    asked = await s.send_message(s.channel_id, s.alice, d.mention("한국의 수도는 어디야?"), mention_bot=True)
    await d.answer_in(await d.thread_for(int(asked["id"])), trained.CAPITAL)  # servers as before


@pytest.mark.bot_env(DISCORD_GUILD_IDS="")
async def test_a_bot_killed_mid_answer_finishes_the_private_answer_through_the_interaction(
    discord_env: Discord,
) -> None:
    """The answer's interaction webhook is kept with its in-flight record: a restarted bot edits the same message
    only the asker sees, and posts nothing anywhere else."""
    d, s = discord_env, discord_env.standin
    await s.slash_command("kullm", {"질문": "긴 이야기를 들려줘"}, s.alice, s.foreign_channel_id)
    placeholder = await s.wait_for(lambda: next(iter(d.bot_messages(s.foreign_channel_id)), None))
    await s.wait_for(lambda: placeholder["edits"] >= 2)
    d.bot.kill()
    d.restart_bot()
    answer = await private_answer(d, s.foreign_channel_id, trained.LONG_STORY)
    assert answer["id"] == placeholder["id"] and len(d.bot_messages(s.foreign_channel_id)) == 1
    assert "resuming its answer" in d.bot.log() and calls_into(d, s.foreign_channel_id) == []
    assert not any(s.token in line or "itok-" in line for line in d.bot.log().splitlines()), "no token in the log"


@pytest.mark.bot_env(DISCORD_GUILD_IDS="", USER_CONCURRENT_QUESTIONS="1")
async def test_a_private_answer_whose_interaction_lapsed_is_given_up_and_frees_the_asker(discord_env: Discord) -> None:
    """Discord lets an interaction's webhook be used for 15 minutes: an answer still streaming after that (a long
    queue) cannot be shown; it is given up at once, not retried, and the asker's slot is freed."""
    d, s = discord_env, discord_env.standin
    await s.slash_command("kullm", {"질문": "긴 이야기를 들려줘"}, s.alice, s.foreign_channel_id)
    placeholder = await s.wait_for(lambda: next(iter(d.bot_messages(s.foreign_channel_id)), None))
    await s.wait_for(lambda: placeholder["edits"] >= 1)
    s.expire_interactions()
    await eventually(lambda: none_in_flight(d.redis_url, "discord"), 30, what="the answer given up")
    assert "nowhere left to post the answer" in d.bot.log() and "posting the answer failed" not in d.bot.log()
    await s.slash_command("kullm", {"질문": "한국의 수도는 어디야?"}, s.alice, s.foreign_channel_id)
    await private_answer(d, s.foreign_channel_id, trained.CAPITAL)  # not locked out
