"""Workspace knowledge on Discord end to end: the real discord.py bot, the loopback Discord (history served by its
message routes, edits and deletions as gateway events, a channel only some members may see), a scripted worker
that answers from the first numbered passage it is given, and the index in the test's Redis."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from chatbus import Bus
from testkit.controls import stop_button_on
from testkit.shown import shown_text
from tests import test_discord
from tests.test_discord import Discord

pytestmark = pytest.mark.e2e
discord_env = test_discord.discord_env  # the fixture: the stand-in, the bot process, a scripted worker

DECISION = "배포 날짜는 12월 3일로 정했어요"


async def stored(d: Discord, channel_id: int) -> int:
    bus = Bus.open(d.redis_url)
    try:
        return (await bus.knowledge.status("discord", str(channel_id))).messages
    finally:
        await bus.aclose()


async def setting(d: Discord, action: str, user: dict[str, Any], channel_id: int) -> str:
    """`/kullm-설정 지식 <action>` and its reply, which only the one who ran it sees."""
    s = d.standin
    before = len(s.interaction_responses)
    await s.slash_command(f"kullm-설정 지식 {action}", {}, user, channel_id)
    reply = await s.wait_for(lambda: next((r for r in s.interaction_responses[before:] if r["type"] == 4), None))
    assert reply["data"]["flags"] == 64
    return str(reply["data"]["content"])


async def answer(d: Discord, user: dict[str, Any], question: str) -> dict[str, Any]:
    """`@KULLM 찾아줘: question` in the channel: the settled answer in its thread."""
    s = d.standin
    asked = await s.send_message(s.channel_id, user, d.mention(f"찾아줘: {question}"), mention_bot=True)
    thread = await d.thread_for(int(asked["id"]))

    def settled() -> dict[str, Any] | None:
        done = [m for m in d.bot_messages(thread) if not stop_button_on(m) and "생각 중" not in shown_text(m)]
        return done[0] if done else None

    return await s.wait_for(settled, 30)


async def test_an_admin_turns_knowledge_on_and_answers_cite_the_channels_current_messages(discord_env: Discord) -> None:
    d, s = discord_env, discord_env.standin
    decision = await s.send_message(s.channel_id, s.bob, DECISION)  # written before knowledge was on: read back
    await s.send_message(s.channel_id, s.alice, "오늘 점심은 김밥이에요")
    thread = await s.open_thread(s.channel_id, s.alice, "회의")  # a thread archived since: read back too
    notes = await s.send_message(thread, s.alice, "회의록은 위키에 올렸어요")
    await s.archive_thread(thread)
    s.opened_commands.add("kullm-설정")  # the server shows the settings to everyone: the bot checks again
    refused = await setting(d, "켜기", s.alice, s.channel_id)
    assert refused.startswith("🔒") and await stored(d, s.channel_id) == 0, "only who may manage the server"
    assert (await setting(d, "켜기", s.admin, s.channel_id)).startswith("📚")
    for _ in range(100):
        if await stored(d, s.channel_id) == 3:
            break
        await asyncio.sleep(0.1)
    assert await stored(d, s.channel_id) == 3, "the channel's history was read back, its archived thread's too"
    from_thread = shown_text(await answer(d, s.bob, "회의록 어디에 올렸어?"))
    assert from_thread.startswith("[1]에 따르면: 회의록은 위키에 올렸어요") and str(notes["id"]) in from_thread
    first = await answer(d, s.alice, "배포 날짜를 언제로 정했지?")
    said = shown_text(first)
    assert said.startswith(f"[1]에 따르면: {DECISION}"), said
    jump = f"https://discord.com/channels/{s.guild_id}/{s.channel_id}/{decision['id']}"
    assert f"📎 출처: [(1) 밥](<{jump}>)" in said, "the answer ends with its numbered, linked source"
    # Bob edits the decision: the next answer is built from the new text.
    await s.edit_user_message(int(decision["id"]), "배포 날짜는 12월 10일로 미뤘어요")
    await asyncio.sleep(0.5)
    assert shown_text(await answer(d, s.alice, "배포 날짜를 언제로 정했지?")).startswith(
        "[1]에 따르면: 배포 날짜는 12월 10일로 미뤘어요"
    )
    # A new message is followed; the requests to the bot are not stored.
    assert await stored(d, s.channel_id) == 3
    await s.send_message(s.channel_id, s.bob, "서버 점검은 금요일 밤이에요")
    await asyncio.sleep(0.5)
    assert await stored(d, s.channel_id) == 4
    # Bob deletes the decision: it is never cited again.
    await s.delete_message(int(decision["id"]))
    await asyncio.sleep(0.5)
    await s.send_message(s.channel_id, s.alice, d.mention("찾아줘: 배포 날짜를 언제로 정했지?"), mention_bot=True)
    await s.wait_for(lambda: any("🔎" in m["content"] for m in s.dm_messages(s.alice)))
    assert "김밥" not in d.bot.log() and "12월" not in d.bot.log(), "nobody's messages reach the log"
    # A hostile request: far over the question limit, refused before anything is searched.
    await s.send_message(s.channel_id, s.bob, d.mention("찾아줘: " + "배포 " * 3000), mention_bot=True)
    await s.wait_for(lambda: any("너무 길어요" in m["content"] for m in s.dm_messages(s.bob)))


async def test_a_member_never_gets_a_passage_from_a_channel_they_cannot_read(discord_env: Discord) -> None:
    """The secret channel has knowledge on and holds the answer: Bob, who may read it, gets it cited; Alice, who
    may not, is told nothing matches — never a passage from it."""
    d, s = discord_env, discord_env.standin
    await setting(d, "켜기", s.admin, s.channel_id)
    await setting(d, "켜기", s.admin, s.private_channel_id)
    secret = await s.send_message(s.private_channel_id, s.bob, "배포 날짜는 비밀리에 5일로 정했어요")
    await s.send_message(s.channel_id, s.alice, "오늘 점심은 김밥이에요")
    for _ in range(100):
        if await stored(d, s.private_channel_id) == 1 and await stored(d, s.channel_id) == 1:
            break
        await asyncio.sleep(0.1)
    await s.slash_command("kullm", {"찾기": "배포 날짜 언제야?"}, s.bob, s.channel_id)  # `/kullm 찾기:`
    asked = await s.wait_for(
        lambda: next((m for m in d.bot_messages(s.channel_id) if "님의 질문" in shown_text(m)), None)
    )
    thread = await d.thread_for(int(asked["id"]))
    settled = await s.wait_for(
        lambda: next(
            (m for m in d.bot_messages(thread) if "에 따르면" in shown_text(m) and not stop_button_on(m)), None
        )
    )
    bobs = shown_text(settled)
    assert bobs.startswith("[1]에 따르면: 배포 날짜는 비밀리에 5일로 정했어요") and str(secret["id"]) in bobs
    await s.send_message(s.channel_id, s.alice, d.mention("찾아줘: 배포 날짜 언제야?"), mention_bot=True)
    await s.wait_for(lambda: any("🔎" in m["content"] for m in s.dm_messages(s.alice)))
    shown = [m for m in s.messages.values() if int(m["author"]["id"]) == s.bot_id and "비밀리에" in shown_text(m)]
    assert len(shown) == 1, "only Bob's answer carries it"


async def test_off_stops_following_and_forget_erases_everything(discord_env: Discord) -> None:
    d, s = discord_env, discord_env.standin
    await s.send_message(s.channel_id, s.bob, DECISION)
    await setting(d, "켜기", s.admin, s.channel_id)
    for _ in range(100):
        if await stored(d, s.channel_id) == 1:
            break
        await asyncio.sleep(0.1)
    s.opened_commands.add("kullm-설정")  # the server shows the settings to everyone: anyone may look at the status
    status = await setting(d, "상태", s.alice, s.channel_id)
    assert status.startswith("📚 지식: 켜짐 · 저장된 메시지 1개")
    assert (await setting(d, "끄기", s.admin, s.channel_id)).startswith("📕")
    await s.send_message(s.channel_id, s.bob, "새 메시지는 따라가지 않아요")
    await asyncio.sleep(0.5)
    assert await stored(d, s.channel_id) == 1, "off: nothing new is stored"
    assert (await setting(d, "잊기", s.admin, s.channel_id)).startswith("🗑️ 이 채널에서 저장한 메시지 1개")
    bus = Bus.open(d.redis_url)
    try:
        left = [key async for key in bus.redis.scan_iter(match=f"{bus.keys.prefix}kn:discord:{s.channel_id}:*")]
    finally:
        await bus.aclose()
    assert left == [] and "꺼짐 · 저장된 메시지 0개" in await setting(d, "상태", s.alice, s.channel_id)
