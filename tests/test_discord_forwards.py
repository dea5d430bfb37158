"""Forwarded messages on Discord are 맥락: the real discord.py bot reads what a forward's snapshot holds (its text and
its files, through the same guards as any file) when it is replied to, asked 요약 on, sent to the bot alone, or
picked from the Apps menu. The loopback Discord sends forwards as Discord does (a FORWARD reference and
`message_snapshots`)."""

from __future__ import annotations

import asyncio

import pytest

from testkit import trained
from testkit.shown import shown_text
from tests import test_discord
from tests.test_discord import CONTEXT, Discord, scripted_summary

pytestmark = pytest.mark.e2e
discord_env = test_discord.discord_env  # the fixture: the stand-in, the bot process, a scripted worker


async def test_a_question_replying_to_a_forward_reads_what_it_forwarded(discord_env: Discord) -> None:
    d, s = discord_env, discord_env.standin
    original = await s.send_message(s.channel_id, s.bob, CONTEXT)
    forward = await s.forward_message(s.channel_id, s.bob, int(original["id"]))
    assert forward["content"] == "" and forward["message_reference"]["type"] == 1
    asked = await s.send_message(
        s.channel_id, s.alice, d.mention("이 글을 요약해줘"), mention_bot=True, reference_message_id=int(forward["id"])
    )
    await d.answer_in(await d.thread_for(int(asked["id"])), trained.CONTEXT_ANSWER)  # trained on exactly that 맥락


async def test_yoyak_on_a_forward_summarises_its_text_and_files(discord_env: Discord) -> None:
    d, s = discord_env, discord_env.standin
    notes = ("회의록.txt", "text/plain", "첫째 안건은 예산\n둘째 안건은 일정".encode())
    original = await s.send_message(s.channel_id, s.bob, "회의 내용 공유합니다", files=[notes])
    forward = await s.forward_message(s.channel_id, s.bob, int(original["id"]))
    asked = await s.send_message(
        s.channel_id, s.alice, d.mention("요약"), mention_bot=True, reference_message_id=int(forward["id"])
    )
    summary = scripted_summary(["회의 내용 공유합니다", "", "첫째 안건은 예산", "둘째 안건은 일정"])
    await d.answer_in(await d.thread_for(int(asked["id"])), summary)
    assert "예산" not in d.bot.log(), "a forwarded file's text is not logged"


async def test_a_forward_sent_to_the_bot_alone_is_summarised(discord_env: Discord) -> None:
    d, s = discord_env, discord_env.standin
    original = await s.send_message(s.channel_id, s.bob, "오늘 점심은 김밥\n저녁은 비빔밥")
    await s.forward_message(s.dm_channel_id, s.alice, int(original["id"]))
    await d.answer_in(s.dm_channel_id, scripted_summary(["오늘 점심은 김밥", "저녁은 비빔밥"]))
    # Into the bot's thread, a forward with nothing asked is shared with the people there, not asked of the bot.
    asked = await s.send_message(s.channel_id, s.alice, d.mention("한국의 수도는 어디야?"), mention_bot=True)
    thread = await d.thread_for(int(asked["id"]))
    await d.answer_in(thread, trained.CAPITAL)
    await s.forward_message(thread, s.bob, int(original["id"]))
    await asyncio.sleep(1)
    assert len(d.bot_messages(thread)) == 1 and s.dm_messages(s.bob) == [], "no answer, and no usage notice"


async def test_translating_a_forward_from_the_apps_menu_translates_what_it_forwarded(discord_env: Discord) -> None:
    d, s = discord_env, discord_env.standin
    original = await s.send_message(s.channel_id, s.bob, "안녕하세요. 만나서 반갑습니다.")
    forward = await s.forward_message(s.channel_id, s.bob, int(original["id"]))
    await s.message_command("한↔영 번역", int(forward["id"]), s.alice, s.channel_id)
    asked = await s.wait_for(
        lambda: next((m for m in d.bot_messages(s.channel_id) if "한↔영 번역" in shown_text(m)), None)
    )
    await d.answer_in(await d.thread_for(int(asked["id"])), "[EN] 안녕하세요. 만나서 반갑습니다.")
    await s.message_command("스레드 요약", int(forward["id"]), s.alice, s.channel_id)  # no thread: what it forwards
    asked = await s.wait_for(
        lambda: next((m for m in d.bot_messages(s.channel_id) if "스레드 요약" in shown_text(m)), None)
    )
    await d.answer_in(await d.thread_for(int(asked["id"])), scripted_summary(["안녕하세요. 만나서 반갑습니다."]))


@pytest.mark.bot_env(MAX_FILE_BYTES="4000")
async def test_a_forwarded_file_meets_the_same_guards(discord_env: Discord) -> None:
    """A hostile forward: a file too large, or not text, inside the snapshot is refused as if attached."""
    d, s = discord_env, discord_env.standin
    big = ("big.txt", "text/plain", "가".encode() * 2000)
    original = await s.send_message(s.channel_id, s.bob, "큰 파일", files=[big])
    fetched = s.attachment_downloads
    await s.forward_message(s.dm_channel_id, s.alice, int(original["id"]))
    await s.wait_for(lambda: any("너무 커요" in shown_text(m) for m in s.messages_in(s.dm_channel_id)))
    assert s.attachment_downloads == fetched, "refused by its size, before downloading it"
    binary = ("tool.exe", "application/octet-stream", b"MZ\x90\x00\x03\x00")
    original = await s.send_message(s.channel_id, s.bob, "", files=[binary])
    forward = await s.forward_message(s.channel_id, s.bob, int(original["id"]))
    await s.send_message(
        s.channel_id, s.alice, d.mention("요약"), mention_bot=True, reference_message_id=int(forward["id"])
    )
    await s.wait_for(lambda: any("텍스트 파일이 아니에요" in shown_text(m) for m in s.messages.values()))
