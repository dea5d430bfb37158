"""Workspace knowledge on Slack end to end: the real slack-bolt app, the loopback Slack (history served by
conversations.history and replies, edits and deletions as message_changed / message_deleted events, a private
channel only some people are in), a scripted worker that answers from the first numbered passage it is given, and
the index in the test's Redis."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from chatbus import Bus
from testkit.controls import stop_button_on
from testkit.standins.slack import SlackStandIn
from tests import test_slack
from tests.test_slack import Slack

pytestmark = pytest.mark.e2e
slack_env_fixture = test_slack.slack_env_fixture  # the fixture: the stand-in, the bot process, a scripted worker

DECISION = "배포 날짜는 12월 3일로 정했어요"


async def stored(sl: Slack, channel: str, count: int | None = None) -> int:
    """How many messages of `channel` the index holds (waiting a while for `count`, when given)."""
    bus = Bus.open(sl.bot.env["REDIS_URL"])
    try:
        for _ in range(100):
            held = (await bus.knowledge.status("slack", channel)).messages
            if count is None or held == count:
                return held
            await asyncio.sleep(0.1)
        return held
    finally:
        await bus.aclose()


async def setting(s: SlackStandIn, words: str, user: str, channel: str) -> str:
    """`/kullm-설정 지식 <words>` in `channel`: the reply, seen only by `user`."""
    before = len(s.ephemerals)
    await s.slash_command("/kullm-설정", f"지식 {words}", user, channel)
    reply = await s.wait_for(lambda: next(iter(s.ephemerals[before:]), None))
    assert reply["user"] == user
    return str(reply["text"])


async def answer(sl: Slack, user: str, question: str) -> dict[str, Any]:
    """`@KULLM 찾아줘: question` in the channel: the settled answer in its thread."""
    s = sl.standin
    asked = await s.post_user_message(s.channel_id, user, sl.mention(f"찾아줘: {question}"), mention=True)

    def settled() -> dict[str, Any] | None:
        done = [
            m
            for m in s.thread(s.channel_id, asked["ts"])
            if m.get("bot_id") and "에 따르면" in m["text"] and not m.get("streaming") and not stop_button_on(m)
        ]
        return done[0] if done else None

    return await s.wait_for(settled, 30)


async def refused(s: SlackStandIn, user: str, mark: str) -> str:
    """The notice only `user` sees (the reply to a request that found nothing to answer from)."""
    notice = await s.wait_for(lambda: next((e for e in s.ephemerals if e["user"] == user and mark in e["text"]), None))
    return str(notice["text"])


@pytest.mark.bot_env(SLACK_ADMIN_USER_IDS="U0ALICE", KNOWLEDGE_BACKFILL_DAYS="90", KNOWLEDGE_RETENTION_DAYS="30")
async def test_an_admin_turns_knowledge_on_and_answers_cite_the_channels_current_messages(
    slack_env_fixture: Slack,
) -> None:
    sl, s = slack_env_fixture, slack_env_fixture.standin
    # Written before knowledge was on: a thread whose reply holds the decision, chatter, and a message within the
    # backfill window (90 days) but past retention (30): never read.
    root = await s.post_user_message(s.channel_id, s.alice, "배포 얘기는 이 스레드에서 해요")
    decision = await s.post_user_message(s.channel_id, s.bob, DECISION, thread_ts=root["ts"])
    await s.post_user_message(s.channel_id, s.alice, "오늘 점심은 김밥이에요")
    s.written_earlier(s.channel_id, s.bob, "배포 날짜는 예전에 7월로 정했어요", days_ago=60)
    assert await stored(sl, s.channel_id) == 0, "nothing is kept before an admin turns it on"
    assert not s.calls_to("users.info"), "nor is anything looked up about a channel's messages: dropped unread"
    assert (await setting(s, "켜기", s.bob, s.channel_id)).startswith("🔒"), "bob is not an admin"
    assert (await setting(s, "켜기", s.alice, s.channel_id)).startswith("📚")
    assert await stored(sl, s.channel_id, 3) == 3, "the last 30 days read back, the thread's reply with them"
    # Asked with the slash command: the answer is built from the thread's reply and links it by its permalink.
    await s.slash_command("/kullm", "찾기: 배포 날짜를 언제로 정했지?", s.bob, s.channel_id)
    asked = await sl.asked_message(s.channel_id)
    first = await s.wait_for(
        lambda: next((m for m in s.thread(s.channel_id, asked["ts"]) if "에 따르면" in m["text"]), None), 30
    )
    await s.wait_for(lambda: not first.get("streaming") and not stop_button_on(first), 30)
    assert first["text"].startswith(f"[1]에 따르면: {DECISION}"), first["text"]
    permalink = f"/archives/{s.channel_id}/p{decision['ts'].replace('.', '')}?thread_ts={root['ts']}"
    assert permalink in json.dumps(first), "the answer links the message it used"
    assert s.calls_to("chat.getPermalink"), "links asked of Slack"
    # Bob edits the decision: the next answer is built from the new text.
    await s.edit_user_message(s.channel_id, decision["ts"], "배포 날짜는 12월 10일로 미뤘어요")
    await asyncio.sleep(0.5)
    assert (await answer(sl, s.alice, "배포 날짜를 언제로 정했지?"))["text"].startswith(
        "[1]에 따르면: 배포 날짜는 12월 10일로 미뤘어요"
    )
    # A new message is followed; the requests to the bot and the bot's own answers are not stored.
    assert await stored(sl, s.channel_id) == 3
    await s.post_user_message(s.channel_id, s.bob, "서버 점검은 금요일 밤이에요")
    assert await stored(sl, s.channel_id, 4) == 4
    # Bob deletes the decision: it leaves the index at once and is never cited again.
    await s.delete_user_message(s.channel_id, decision["ts"])
    assert await stored(sl, s.channel_id, 3) == 3
    after = await answer(sl, s.alice, "배포 날짜를 언제로 정했지?")
    assert after["text"].startswith("[1]에 따르면: 배포 얘기는 이 스레드에서 해요"), "the thread's root is left"
    assert "12월" not in json.dumps(after, ensure_ascii=False) and decision["ts"].replace(".", "") not in json.dumps(
        after
    )
    await s.post_user_message(s.channel_id, s.alice, sl.mention("찾아줘: 주차장 위치가 어디야?"), mention=True)
    assert (await refused(s, s.alice, "🔎")).startswith("🔎 읽을 수 있는 채널의 기록에서"), "nothing about it"
    # A hostile request: far over the question limit, refused before anything is searched.
    await s.post_user_message(s.channel_id, s.bob, sl.mention("찾아줘: " + "배포 " * 3000), mention=True)
    assert "너무 길어요" in await refused(s, s.bob, "너무 길어요")
    assert "김밥" not in sl.bot.log() and "12월" not in sl.bot.log(), "nobody's messages reach the log"
    # Off: new messages are no longer stored; forget erases the channel's index.
    assert (await setting(s, "상태", s.bob, s.channel_id)).startswith("📚 지식: 켜짐 · 저장된 메시지 3개")
    assert (await setting(s, "끄기", s.alice, s.channel_id)).startswith("📕")
    await s.post_user_message(s.channel_id, s.bob, "새 메시지는 따라가지 않아요")
    await asyncio.sleep(0.5)
    assert await stored(sl, s.channel_id) == 3, "off: nothing new is stored"
    assert (await setting(s, "잊기", s.alice, s.channel_id)).startswith("🗑️ 이 채널에서 저장한 메시지 3개")
    bus = Bus.open(sl.bot.env["REDIS_URL"])
    try:
        left = [key async for key in bus.redis.scan_iter(match=f"{bus.keys.prefix}kn:slack:{s.channel_id}:*")]
    finally:
        await bus.aclose()
    assert left == [] and "꺼짐 · 저장된 메시지 0개" in await setting(s, "상태", s.bob, s.channel_id)


@pytest.mark.bot_env(SLACK_ADMIN_USER_IDS="U0ALICE")
async def test_a_person_never_gets_a_passage_from_a_private_channel_they_are_not_in(slack_env_fixture: Slack) -> None:
    """The private channel has knowledge on and holds the answer: Alice, a member, gets it cited; Bob, who is not
    in it, is told nothing matches — never a passage from it. Where knowledge cannot be on, the admin is told why."""
    sl, s = slack_env_fixture, slack_env_fixture.standin
    assert (await setting(s, "켜기", s.alice, s.dm_channel_id)).startswith("🔒 지식은 채널에서만")
    assert (await setting(s, "켜기", s.alice, s.other_channel_id)).startswith("📭"), "the bot is not in #random"
    s.granted -= {"channels:read", "groups:read"}  # an app made from an older manifest
    assert (await setting(s, "켜기", s.alice, s.channel_id)).startswith("🔧 이 Slack 앱에는 지식에 필요한 권한")
    s.granted |= {"channels:read", "groups:read"}
    await setting(s, "켜기", s.alice, s.channel_id)
    await setting(s, "켜기", s.alice, s.private_channel_id)
    secret = await s.post_user_message(s.private_channel_id, s.alice, "배포 날짜는 비밀리에 5일로 정했어요")
    await s.post_user_message(s.channel_id, s.bob, "오늘 점심은 김밥이에요")
    assert await stored(sl, s.private_channel_id, 1) == 1 and await stored(sl, s.channel_id, 1) == 1
    alices = await answer(sl, s.alice, "배포 날짜 언제야?")
    assert alices["text"].startswith("[1]에 따르면: 배포 날짜는 비밀리에 5일로 정했어요")
    assert secret["ts"].replace(".", "") in json.dumps(alices)
    await s.post_user_message(s.channel_id, s.bob, sl.mention("찾아줘: 배포 날짜 언제야?"), mention=True)
    assert (await refused(s, s.bob, "🔎")).startswith("🔎")
    shown = [m for m in s.messages.values() if m.get("bot_id") and "비밀리에" in m["text"]]
    assert len(shown) == 1, "only Alice's answer carries it"
    # A guest (single- or multi-channel) reads only the channels they are in, public or not.
    s.users[s.bob]["is_restricted"] = True
    s.channels[s.channel_id]["members"].remove(s.bob)
    await s.post_user_message(s.channel_id, s.alice, "배포 날짜는 공개 채널에서도 5일이에요")
    await stored(sl, s.channel_id, 2)
    bobs_dm = s.dm_with(s.bob)
    await s.post_user_message(bobs_dm, s.bob, "찾아줘: 배포 날짜 언제야?")
    notice = await s.wait_for(
        lambda: next((m for m in sl.bot_posts(bobs_dm) if m["text"].startswith("🔎 지식이")), None)
    )
    assert "5일" not in notice["text"]
    # A flood of searches is held to the asker's rate like any question (USER_QUESTIONS_PER_MINUTE, 6): Bob's 7th
    # in the minute is refused before anything is searched.
    for _ in range(5):
        await s.post_user_message(bobs_dm, s.bob, "찾아줘: 배포 날짜 언제야?")
    posts = await s.wait_for(lambda: sl.bot_posts(bobs_dm) if len(sl.bot_posts(bobs_dm)) == 6 else None)
    assert sum(post["text"].startswith("🐢") for post in posts) == 1, [post["text"][:20] for post in posts]
