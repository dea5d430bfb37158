"""The Slack adapter end to end: the real slack-bolt app process, the loopback Slack, a worker, Redis.

`kullm slack` runs as a process pointed at the stand-in through SLACK_API_BASE (Socket Mode by
default, HTTP mode in the signature tests); answers are the tiny model's trained texts.
"""

from __future__ import annotations

import asyncio
import html
import itertools
import json
import re
import socket
import time
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.slack.blocks import CANCEL_ACTION
from bot.slack.manifest import ASK_SHORTCUT as SHORTCUT_ID
from bot.slack.mrkdwn import to_slack_mrkdwn
from testkit import trained
from testkit.conformance import slack_standin_problems
from testkit.controls import feedback_buttons_on, stop_button_on, stored_votes, vote_buttons_on
from testkit.engines import LONG_CODE_QUESTION, RunWorker
from testkit.processes import BotProcess
from testkit.redis_server import RedisServer, free_port, half_open
from testkit.shown import footer_of, without_footer
from testkit.standins.slack import SlackStandIn
from testkit.standins.slack.common import sign

pytestmark = pytest.mark.e2e


@dataclass
class Slack:
    """The running pieces of one test."""

    standin: SlackStandIn
    bot: BotProcess
    tmp_path: Path

    def mention(self, text: str) -> str:
        return f"<@{self.standin.bot_user_id}> {text}"

    def bot_posts(self, channel: str) -> list[dict[str, Any]]:
        return [
            m
            for (ch, _), m in sorted(self.standin.messages.items(), key=lambda kv: kv[0][1])
            if ch == channel and m.get("bot_id")
        ]

    async def long_answer_streaming(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """Alice asks for the long story in the channel: her message and the one message the answer grows in (the
        placeholder, with its stop button), once part of the answer shows there."""
        s = self.standin
        asked = await s.post_user_message(s.channel_id, s.alice, self.mention("긴 이야기를 들려줘"), mention=True)

        def partial() -> dict[str, Any] | None:
            replies = [m for m in s.thread(s.channel_id, asked["ts"]) if m.get("bot_id")]
            return next((m for m in replies if stop_button_on(m) and m["edits"] >= 1), None)

        return asked, await s.wait_for(partial)

    async def pane_answer_streaming(self) -> tuple[tuple[str, str], dict[str, Any]]:
        """Alice asks for the long story in the assistant pane: the pane thread and the message the answer streams
        into natively, once part of it shows."""
        s = self.standin
        thread_ts = await s.open_assistant_thread(s.alice)
        await s.wait_for(lambda: s.suggested_prompts.get((s.dm_channel_id, thread_ts)))
        await s.post_user_message(s.dm_channel_id, s.alice, "긴 이야기를 들려줘", thread_ts=thread_ts)
        pane = (s.dm_channel_id, thread_ts)
        streamed = await s.wait_for(
            lambda: next((m for m in s.thread(*pane) if m.get("streamed") and m["appends"] >= 1), None)
        )
        return pane, streamed

    async def answer_in_thread(
        self, channel: str, thread_ts: str, expected: str, timeout: float = 60
    ) -> dict[str, Any]:
        """Wait until a bot reply in the thread shows `expected` with its stream stopped and no stop button:
        streamed natively (Markdown, escaped) or edited in (converted to mrkdwn)."""
        shown = to_slack_mrkdwn(expected)

        def settled() -> dict[str, Any] | None:
            replies = [m for m in self.standin.thread(channel, thread_ts) if m.get("bot_id")]
            for message in replies:
                text = without_footer(html.unescape(message["text"]) if message.get("streamed") else message["text"])
                if text == (expected if message.get("streamed") else shown) and not stop_button_on(message):
                    return None if message.get("streaming") else message
            return None

        try:
            return await self.standin.wait_for(settled, timeout)
        except AssertionError:
            replies = [m["text"][:80] for m in self.standin.thread(channel, thread_ts)]
            raise AssertionError(f"no settled answer; thread: {replies}\n{self.bot.log()[-3000:]}") from None

    async def only_answer_left(self, channel: str, thread_ts: str, answer: dict[str, Any]) -> None:
        """Wait until the answer is the bot's only reply in the thread: one message for one answer."""

        def replies() -> list[dict[str, Any]]:
            return [m for m in self.standin.thread(channel, thread_ts) if m.get("bot_id") and m["ts"] != thread_ts]

        await self.standin.wait_for(lambda: replies() == [answer], 10)

    async def asked_message(self, channel: str) -> dict[str, Any]:
        """The question the bot posted on the user's behalf."""
        return await self.standin.wait_for(
            lambda: next((m for m in self.bot_posts(channel) if "님의 질문" in m["text"]), None)
        )

    def restart_bot(self) -> BotProcess:
        self.bot = BotProcess("slack", self.tmp_path / "bot-restarted.log", self.bot.env).start()
        return self.bot


def slack_env(standin: SlackStandIn, redis_url: str, **extra: str) -> dict[str, str]:
    return {
        "SLACK_BOT_TOKEN": standin.bot_token,
        "SLACK_APP_TOKEN": standin.app_token,
        "SLACK_API_BASE": standin.api_base,
        "SLACK_EDIT_INTERVAL_S": "0.3",
        "REDIS_URL": redis_url,
        "LEASE_TTL_S": "1.5",
        **extra,
    }


@pytest.fixture
async def slack_env_fixture(
    redis_server: RedisServer, run_worker: RunWorker, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Slack]:
    worker_marker = request.node.get_closest_marker("worker_env")
    run_worker(**(worker_marker.kwargs if worker_marker else {}))
    bot_marker = request.node.get_closest_marker("bot_env")
    standin = SlackStandIn()
    await standin.start()
    env = slack_env(standin, redis_server.url, **(bot_marker.kwargs if bot_marker else {}))
    bot = BotProcess("slack", tmp_path / "bot.log", env).start()
    slack = Slack(standin, bot, tmp_path)
    try:
        await standin.wait_for(lambda: standin.connections >= 1, 60)
    except AssertionError:
        raise AssertionError(f"slack app did not connect: {bot.log()[-3000:]}") from None
    yield slack
    await asyncio.to_thread(slack.bot.stop)
    await standin.stop()
    problems = slack_standin_problems(standin)
    assert not problems, "the stand-in departed from Slack's recorded samples:\n" + "\n".join(problems)


@pytest.mark.worker_env(engine="builtin")  # the whole chain once with real generation (the tiny model)
async def test_slash_command_posts_the_question_and_answers_in_its_thread(slack_env_fixture: Slack) -> None:
    sl, s = slack_env_fixture, slack_env_fixture.standin
    started = time.monotonic()
    await s.slash_command("/kullm", "딥러닝이 뭐야?", s.alice, s.channel_id)
    assert time.monotonic() - started < 3, "acknowledged well within Slack's 3 s"
    asked = await sl.asked_message(s.channel_id)
    assert asked["text"] == "*앨리스* 님의 질문: 딥러닝이 뭐야?", "the asker's name, without a mention that pings"
    answer = await sl.answer_in_thread(s.channel_id, asked["ts"], trained.DEEP_LEARNING)
    # One message from start to end: the placeholder ("⏳ 생각 중…" and the stop button), the answer growing in it,
    # then the answer with the model's footer and Slack's own 👍/👎. Nothing posted and deleted on the way.
    assert answer["edits"] >= 2 and not answer.get("streamed") and not s.calls_to("chat.startStream")
    assert not s.calls_to("chat.delete") and feedback_buttons_on(answer)
    assert footer_of(answer["text"]), answer["text"]
    await sl.only_answer_left(s.channel_id, asked["ts"], answer)
    log = sl.bot.log()
    assert all(secret not in log for secret in (s.bot_token, s.app_token, s.signing_secret, "딥러닝이 뭐야?"))
    streaming = [c.at for c in s.calls_to("chat.update")][:-1]  # the final edit goes out at once
    assert all(b - a >= 0.25 for a, b in itertools.pairwise(streaming)), "updates are throttled"


@pytest.mark.bot_env(SLACK_NATIVE_STREAMING="0")
async def test_without_native_streaming_the_placeholder_is_edited(slack_env_fixture: Slack) -> None:
    sl, s = slack_env_fixture, slack_env_fixture.standin
    await s.slash_command("/kullm", "딥러닝이 뭐야?", s.alice, s.channel_id)
    asked = await sl.asked_message(s.channel_id)
    answer = await sl.answer_in_thread(s.channel_id, asked["ts"], trained.DEEP_LEARNING)
    assert answer["edits"] >= 2 and not answer.get("streamed"), "chat.update while streaming"
    assert not s.calls_to("chat.startStream")
    streaming = [c.at for c in s.calls_to("chat.update")][:-1]  # the final edit goes out at once
    assert all(b - a >= 0.25 for a, b in itertools.pairwise(streaming)), "streaming updates are throttled"


async def test_where_slack_will_not_stream_the_pane_edits_one_message(slack_env_fixture: Slack) -> None:
    sl, s = slack_env_fixture, slack_env_fixture.standin
    s.native_streaming = False  # an older workspace: chat.startStream is refused
    thread_ts = await s.open_assistant_thread(s.alice)
    await s.wait_for(lambda: s.suggested_prompts.get((s.dm_channel_id, thread_ts)))
    await s.post_user_message(s.dm_channel_id, s.alice, "딥러닝이 뭐야?", thread_ts=thread_ts)
    answer = await sl.answer_in_thread(s.dm_channel_id, thread_ts, trained.DEEP_LEARNING)
    assert not answer.get("streamed")
    assert [c.response["error"] for c in s.calls_to("chat.startStream")] == ["feature_not_enabled"], "tried once"
    await sl.only_answer_left(s.dm_channel_id, thread_ts, answer)
    s.native_streaming = True  # the next answer streams again
    again = await s.open_assistant_thread(s.alice)
    await s.wait_for(lambda: s.suggested_prompts.get((s.dm_channel_id, again)))
    await s.post_user_message(s.dm_channel_id, s.alice, "한국의 수도는 어디야?", thread_ts=again)
    assert (await sl.answer_in_thread(s.dm_channel_id, again, trained.CAPITAL)).get("streamed")


async def test_a_429_on_append_stream_is_waited_out(slack_env_fixture: Slack) -> None:
    sl, s = slack_env_fixture, slack_env_fixture.standin
    s.fail_next("chat.appendStream", retry_after=1)
    pane, _ = await sl.pane_answer_streaming()
    answer = await sl.answer_in_thread(*pane, trained.LONG_STORY)
    statuses = [c.status for c in s.calls_to("chat.appendStream")]
    assert statuses[0] == 429 and statuses[-1] == 200 and answer.get("streamed")


async def test_an_expired_stream_is_finished_by_editing_it(slack_env_fixture: Slack) -> None:
    sl, s = slack_env_fixture, slack_env_fixture.standin
    s.stream_idle_timeout_s = 0.0  # Slack ends the stream before the first append
    thread_ts = await s.open_assistant_thread(s.alice)
    await s.wait_for(lambda: s.suggested_prompts.get((s.dm_channel_id, thread_ts)))
    await s.post_user_message(s.dm_channel_id, s.alice, "긴 이야기를 들려줘", thread_ts=thread_ts)
    answer = await sl.answer_in_thread(s.dm_channel_id, thread_ts, trained.LONG_STORY)
    errors = [c.response["error"] for c in s.calls_to("chat.appendStream") if c.response and not c.response["ok"]]
    assert errors == ["message_not_in_streaming_state"] and answer["edits"] >= 1
    await sl.only_answer_left(s.dm_channel_id, thread_ts, answer)


async def test_slash_command_refusals_are_ephemeral(slack_env_fixture: Slack) -> None:
    s = slack_env_fixture.standin
    await s.slash_command("/kullm", "", s.alice, s.channel_id)
    usage = await s.wait_for(lambda: next((e for e in s.ephemerals if "👋" in e.get("text", "")), None))
    assert "/kullm" in usage["text"]
    await s.slash_command("/kullm", "딥러닝이 뭐야?", s.alice, s.other_channel_id)
    invite = await s.wait_for(lambda: next((e for e in s.ephemerals if "/invite" in e.get("text", "")), None))
    assert "KULLM이 이 채널에 없어요" in invite["text"]
    await s.slash_command("/kullm", "가" * 5000, s.alice, s.channel_id)
    await s.wait_for(lambda: any("너무 길어요" in e.get("text", "") for e in s.ephemerals))
    assert not slack_env_fixture.bot_posts(s.other_channel_id)


async def settings_reply(s: SlackStandIn, words: str, user: str) -> str:
    """Run `/kullm-설정 words` in the channel; the app's reply, seen only by `user`."""
    before = len(s.ephemerals)
    await s.slash_command("/kullm-설정", words, user, s.channel_id)
    reply = await s.wait_for(lambda: next(iter(s.ephemerals[before:]), None))
    assert reply["user"] == user
    return str(reply["text"])


@pytest.mark.bot_env(SLACK_ADMIN_USER_IDS="U0NOBODY,U0ALICE")
async def test_an_admin_sets_the_channels_persona_and_the_next_question_follows_it(slack_env_fixture: Slack) -> None:
    sl, s = slack_env_fixture, slack_env_fixture.standin
    assert (await settings_reply(s, "페르소나", s.bob)).startswith("🎭 이 채널에는 페르소나가 없어요")
    refused = await settings_reply(s, f"persona set {trained.PIRATE_PERSONA}", s.bob)
    assert refused.startswith("🔒"), "bob is not a workspace admin (users.info) nor in SLACK_ADMIN_USER_IDS"
    s.users[s.bob]["is_admin"] = True
    done = await settings_reply(s, f"페르소나 정하기 {trained.PIRATE_PERSONA}", s.bob)
    assert done.startswith("✅") and trained.PIRATE_PERSONA in done
    asked = await s.post_user_message(s.channel_id, s.alice, sl.mention("한국의 수도는 어디야?"), mention=True)
    await sl.answer_in_thread(s.channel_id, asked["ts"], trained.PIRATE_CAPITAL)
    shown = await settings_reply(s, "persona 보기", s.alice)
    assert trained.PIRATE_PERSONA in shown and f"<@{s.bob}>" in shown
    assert (await settings_reply(s, "persona 지우기", s.alice)).startswith("🗑️"), "alice is in SLACK_ADMIN_USER_IDS"
    await s.slash_command("/kullm", "한국의 수도는 어디야?", s.alice, s.channel_id)
    asked = await sl.asked_message(s.channel_id)
    await sl.answer_in_thread(s.channel_id, asked["ts"], trained.CAPITAL)
    assert (await settings_reply(s, "help", s.alice)).startswith("⚙️ 사용법: `/kullm-설정 페르소나 보기` (보기)")


async def test_slash_command_in_a_dm_with_the_app(slack_env_fixture: Slack) -> None:
    sl, s = slack_env_fixture, slack_env_fixture.standin
    await s.slash_command("/kullm", "한국의 수도는 어디야?", s.alice, s.dm_channel_id)
    asked = await sl.asked_message(s.dm_channel_id)
    await sl.answer_in_thread(s.dm_channel_id, asked["ts"], trained.CAPITAL)


@pytest.mark.bot_env(SLACK_ALLOWED_CHANNEL_IDS="C0002")
async def test_channels_outside_the_allow_list_are_refused(slack_env_fixture: Slack) -> None:
    sl, s = slack_env_fixture, slack_env_fixture.standin
    await s.slash_command("/kullm", "한국의 수도는 어디야?", s.alice, s.channel_id)
    await s.wait_for(lambda: any("🚫" in e.get("text", "") for e in s.ephemerals))
    await s.post_user_message(s.channel_id, s.bob, sl.mention("한국의 수도는 어디야?"), mention=True)
    await s.wait_for(lambda: sum("🚫" in e.get("text", "") for e in s.ephemerals) == 2)
    assert not sl.bot_posts(s.channel_id), "nothing posted in a channel that is not allowed"


async def test_mention_answers_in_a_thread_and_continues_with_history(slack_env_fixture: Slack) -> None:
    sl, s = slack_env_fixture, slack_env_fixture.standin
    first = await s.post_user_message(s.channel_id, s.alice, sl.mention("내 이름은 민수야"), mention=True)
    await sl.answer_in_thread(s.channel_id, first["ts"], trained.NAME_ANSWER)
    await s.post_user_message(
        s.channel_id, s.alice, sl.mention("내 이름이 뭐라고 했지?"), thread_ts=first["ts"], mention=True
    )
    await s.wait_for(
        lambda: any(
            without_footer(m["text"]) == trained.HISTORY_ANSWER and not stop_button_on(m)
            for m in s.thread(s.channel_id, first["ts"])
        ),
        60,
    )


async def test_direct_messages_are_answered(slack_env_fixture: Slack) -> None:
    s = slack_env_fixture.standin
    await s.post_user_message(s.dm_channel_id, s.alice, "고려대학교는 어디에 있어?")
    await s.wait_for(
        lambda: any(
            without_footer(m["text"]) == trained.KOREA_UNIV and not stop_button_on(m)
            for m in slack_env_fixture.bot_posts(s.dm_channel_id)
        ),
        60,
    )


async def test_shortcut_opens_a_modal_and_answers_about_the_message(slack_env_fixture: Slack) -> None:
    sl, s = slack_env_fixture, slack_env_fixture.standin
    source = await s.post_user_message(
        s.channel_id, s.bob, "구름(KULLM)은 고려대학교 NLP & AI 연구실이 만든 한국어 LLM입니다."
    )
    await s.message_shortcut(SHORTCUT_ID, source, s.alice, s.channel_id)
    opened = await s.wait_for(lambda: next(iter(s.views), None))
    quote, field = opened["view"]["blocks"]
    assert (
        quote["text"]["text"]
        == "*고른 메시지*\n&gt; 구름(KULLM)은 고려대학교 NLP &amp; AI 연구실이 만든 한국어 LLM입니다."
    )
    assert field["element"]["placeholder"]["text"].startswith("이 메시지에 대해 무엇이 궁금한가요?")
    await s.submit_view(opened["view"], {"question": {"value": "이 글을 요약해줘"}}, s.alice)
    await sl.answer_in_thread(s.channel_id, source["ts"], trained.CONTEXT_ANSWER)


async def test_typing_stop_in_the_pane_stops_its_streaming_answer(slack_env_fixture: Slack) -> None:
    """A natively streamed answer is the one message of the pane (a stream carries no button): "그만" typed in the
    thread stops it, and the text so far stays with who stopped it."""
    sl, s = slack_env_fixture, slack_env_fixture.standin
    pane, streamed = await sl.pane_answer_streaming()
    assert not any(stop_button_on(m) for m in s.thread(*pane)), "no control message beside the stream"
    await s.post_user_message(pane[0], s.bob, "그만", thread_ts=pane[1])  # not the asker: a question like any
    await s.post_user_message(pane[0], s.alice, "그만", thread_ts=pane[1])
    await s.wait_for(lambda: not streamed["streaming"])
    assert html.unescape(streamed["text"]).endswith("⏹️ 앨리스 님이 답변을 멈췄어요.")
    assert html.unescape(streamed["text"]).startswith(trained.LONG_STORY[:20])


async def test_stop_button_is_honoured_only_for_the_asker(slack_env_fixture: Slack) -> None:
    sl, s = slack_env_fixture, slack_env_fixture.standin
    asked = await s.post_user_message(s.channel_id, s.alice, sl.mention("긴 이야기를 들려줘"), mention=True)
    placeholder = await s.wait_for(
        lambda: next((m for m in s.thread(s.channel_id, asked["ts"]) if stop_button_on(m)), None)
    )
    button = placeholder["blocks"][1]["elements"][0]
    assert button["action_id"] == CANCEL_ACTION and "그만" in button["text"]["text"]
    await s.wait_for(lambda: placeholder["edits"] >= 1)
    await s.click_button(s.channel_id, placeholder["ts"], CANCEL_ACTION, button["value"], s.bob)
    await s.wait_for(lambda: any("질문한 사람이나 관리자만" in e.get("text", "") for e in s.ephemerals))
    await s.click_button(s.channel_id, placeholder["ts"], CANCEL_ACTION, button["value"], s.alice)
    final = await s.wait_for(lambda: placeholder if not stop_button_on(placeholder) else None)
    assert final["text"].endswith("⏹️ 앨리스 님이 답변을 멈췄어요."), "who stopped it"
    # A click from a stale view, and one naming a question that never existed: told, nothing else changes.
    edits = placeholder["edits"]
    for value in (button["value"], "0" * 32):
        await s.click_button(s.channel_id, placeholder["ts"], CANCEL_ACTION, value, s.alice)
    await s.wait_for(lambda: len([e for e in s.ephemerals if e["text"] == "이 답변은 이미 끝났어요."]) == 2)
    assert placeholder["edits"] == edits


async def test_a_retried_event_is_answered_once(slack_env_fixture: Slack) -> None:
    sl, s = slack_env_fixture, slack_env_fixture.standin
    asked = await s.post_user_message(
        s.channel_id, s.alice, sl.mention("한국의 수도는 어디야?"), mention=True, event_id="Ev0RETRY"
    )
    await sl.answer_in_thread(s.channel_id, asked["ts"], trained.CAPITAL)
    await s.post_user_message(
        s.channel_id, s.alice, sl.mention("한국의 수도는 어디야?"), mention=True, event_id="Ev0RETRY", retry_attempt=1
    )
    await asyncio.sleep(1.0)
    answers = [m for m in sl.bot_posts(s.channel_id) if without_footer(m["text"]) == trained.CAPITAL]
    assert len(answers) == 1


async def test_mentions_in_model_output_are_neutralised(slack_env_fixture: Slack) -> None:
    sl, s = slack_env_fixture, slack_env_fixture.standin
    asked = await s.post_user_message(s.channel_id, s.alice, sl.mention("채널 전체에 알려줘"), mention=True)
    answer = await sl.answer_in_thread(s.channel_id, asked["ts"], trained.SLACK_ANNOUNCE_ANSWER)
    assert answer["text"].startswith("&lt;!channel&gt; &lt;!here&gt;") and "&lt;@U123&gt;" in answer["text"]
    for call in s.calls_to("chat.update"):
        assert "<!channel>" not in json.dumps(call.args, ensure_ascii=False)


async def test_a_long_answer_streams_on_into_numbered_messages(slack_env_fixture: Slack) -> None:
    sl, s = slack_env_fixture, slack_env_fixture.standin
    asked = await s.post_user_message(s.channel_id, s.alice, sl.mention(LONG_CODE_QUESTION), mention=True)

    def replies() -> list[dict[str, Any]]:
        return [m for m in s.thread(s.channel_id, asked["ts"]) if m.get("bot_id") and m["ts"] != asked["ts"]]

    await s.wait_for(lambda: len(replies()) == 2 and vote_buttons_on(replies()[-1]), 60)
    pieces = [m["text"] for m in replies()]
    assert all(len(p) <= 3100 for p in pieces) and all(p.count("```") % 2 == 0 for p in pieces)
    assert [p.rsplit("\n\n", 1)[1].split("\n")[0] for p in pieces] == ["(1/2)", "(2/2)"]
    assert not any(stop_button_on(m) for m in replies()) and [vote_buttons_on(m) for m in replies()] == [False, True]
    assert not s.calls_to("chat.delete"), "the parts stay: nothing appears and vanishes"


@pytest.mark.bot_env(SLACK_NATIVE_STREAMING="0")
async def test_a_429_on_chat_update_is_waited_out(slack_env_fixture: Slack) -> None:
    sl, s = slack_env_fixture, slack_env_fixture.standin
    s.fail_next("chat.update", retry_after=1)
    asked = await s.post_user_message(s.channel_id, s.alice, sl.mention("딥러닝이 뭐야?"), mention=True)
    await sl.answer_in_thread(s.channel_id, asked["ts"], trained.DEEP_LEARNING)
    statuses = [c.status for c in s.calls_to("chat.update")]
    assert statuses[0] == 429 and statuses[-1] == 200


async def test_redis_down_is_told_and_the_next_question_answered(
    slack_env_fixture: Slack, redis_server: RedisServer
) -> None:
    sl, s = slack_env_fixture, slack_env_fixture.standin
    await asyncio.to_thread(redis_server.kill)
    asked = await s.post_user_message(s.channel_id, s.alice, sl.mention("한국의 수도는 어디야?"), mention=True)
    notice = await s.wait_for(lambda: next((e for e in s.ephemerals if e["text"].startswith("🔌")), None), 30)
    assert (notice["user"], notice["thread_ts"]) == (s.alice, asked["ts"])
    ref = re.search(r"`([0-9a-f]{8})`", notice["text"])
    assert ref and f"ref {ref[1]}" in sl.bot.log(), "the reference the asker is given is in the operator's log"
    assert "Redis" not in notice["text"] and not s.thread(s.channel_id, asked["ts"])[1:], "no placeholder hanging"
    await asyncio.to_thread(redis_server.start)
    asked = await s.post_user_message(s.channel_id, s.alice, sl.mention("한국의 수도는 어디야?"), mention=True)
    await sl.answer_in_thread(s.channel_id, asked["ts"], trained.CAPITAL)


@pytest.mark.parametrize("where", ["channel", "pane"])
async def test_app_killed_mid_answer_finishes_the_same_message(slack_env_fixture: Slack, where: str) -> None:
    sl, s = slack_env_fixture, slack_env_fixture.standin
    if where == "channel":
        asked, answering = await sl.long_answer_streaming()
        thread = (s.channel_id, asked["ts"])
    else:
        thread, answering = await sl.pane_answer_streaming()
    sl.bot.kill()
    sl.restart_bot()
    answer = await sl.answer_in_thread(*thread, trained.LONG_STORY)
    # The pane: the restarted app cannot append to a stream it did not start; it stops it and edits it to the end.
    assert answer["ts"] == answering["ts"]
    await sl.only_answer_left(*thread, answer)
    if where == "pane":
        assert [c.args["ts"] for c in s.calls_to("chat.stopStream")][-1] == answering["ts"]


async def test_a_deleted_streamed_answer_is_posted_fresh(slack_env_fixture: Slack) -> None:
    sl, s = slack_env_fixture, slack_env_fixture.standin
    pane, streamed = await sl.pane_answer_streaming()
    del s.messages[(pane[0], streamed["ts"])]  # deleted mid-answer: Slack says message_not_found
    answer = await sl.answer_in_thread(*pane, trained.LONG_STORY)
    assert answer["ts"] != streamed["ts"]


async def test_a_deleted_placeholder_gets_a_fresh_answer(slack_env_fixture: Slack) -> None:
    sl, s = slack_env_fixture, slack_env_fixture.standin
    asked, placeholder = await sl.long_answer_streaming()
    del s.messages[(s.channel_id, placeholder["ts"])]  # deleted mid-answer: chat.update says message_not_found
    answer = await sl.answer_in_thread(s.channel_id, asked["ts"], trained.LONG_STORY)
    assert answer["ts"] != placeholder["ts"] and "placeholder gone" in sl.bot.log()


async def test_socket_mode_reconnect_mid_answer_loses_nothing(slack_env_fixture: Slack) -> None:
    sl, s = slack_env_fixture, slack_env_fixture.standin
    asked, _ = await sl.long_answer_streaming()
    await s.disconnect()
    await sl.answer_in_thread(s.channel_id, asked["ts"], trained.LONG_STORY)
    assert s.connections >= 2
    again = await s.post_user_message(s.channel_id, s.alice, sl.mention("한국의 수도는 어디야?"), mention=True)
    await sl.answer_in_thread(s.channel_id, again["ts"], trained.CAPITAL)


async def test_http_mode_verifies_signatures(redis_server: RedisServer, run_worker: RunWorker, tmp_path: Path) -> None:
    run_worker()
    standin = SlackStandIn()
    await standin.start()
    port = free_port()
    env = slack_env(
        standin,
        redis_server.url,
        SLACK_MODE="http",
        SLACK_SIGNING_SECRET=standin.signing_secret,
        SLACK_HTTP_HOST="127.0.0.1",
        SLACK_HTTP_PORT=str(port),
        SLACK_APP_TOKEN="",
    )
    bot = BotProcess("slack", tmp_path / "http.log", env).start()
    url = f"http://127.0.0.1:{port}/slack/events"
    flood: list[socket.socket] = []
    payload = standin.slash_command_payload("/kullm", "한국의 수도는 어디야?", standin.alice, standin.channel_id)
    body = urllib.parse.urlencode(payload).encode()
    try:
        async with aiohttp.ClientSession() as session:
            await standin.wait_for(lambda: "serving Slack events" in bot.log(), 60)

            async def post(headers: dict[str, str]) -> int:
                async with session.post(
                    url, data=body, headers={"Content-Type": "application/x-www-form-urlencoded", **headers}
                ) as response:
                    return response.status

            now = int(time.time())
            bad: list[tuple[bytes, dict[str, str], int]] = [
                (b"\xff\xfe\x00", {}, 400),
                (b"payload=%7Bnot-json", {}, 401),
                (b"{}", {}, 401),
                (b"", {}, 401),
            ]
            bad.append((b"payload=%7Bnot-json", sign(standin.signing_secret, b"payload=%7Bnot-json", now), 400))
            for garbage, headers, status in bad:
                kind = {"Content-Type": "application/x-www-form-urlencoded", **headers}
                async with session.post(url, data=garbage, headers=kind) as response:
                    assert response.status == status  # unsigned, undecodable or unparseable: never a 500
            flood.extend(half_open(port, 1100))  # idle sockets: the guard sheds them, real requests get through
            forged = sign("wrong-secret", body, now)
            stale = sign(standin.signing_secret, body, now - 600)
            assert await post(forged) == 401
            assert await post(stale) == 401
            signed = sign(standin.signing_secret, body, now)
            assert await post(signed) == 200
            slack = Slack(standin, bot, tmp_path)
            asked = await slack.asked_message(standin.channel_id)
            await slack.answer_in_thread(standin.channel_id, asked["ts"], trained.CAPITAL)
            assert await post(signed) == 200  # replayed within the 5-minute window: acknowledged, not asked again
            await asyncio.sleep(1.0)
            assert len([m for m in slack.bot_posts(standin.channel_id) if "님의 질문" in m["text"]]) == 1
            assert "delivered twice" in bot.log()
            assert "sent no request in time" in bot.log()
    finally:
        for sock in flood:
            sock.close()
        await asyncio.to_thread(bot.stop)
        await standin.stop()


async def test_missing_or_rejected_tokens_name_the_variable(redis_server: RedisServer, tmp_path: Path) -> None:
    standin = SlackStandIn()
    await standin.start()
    try:
        env = slack_env(standin, redis_server.url)
        for name, overrides, expected in [
            ("no-bot", {"SLACK_BOT_TOKEN": ""}, "SLACK_BOT_TOKEN is not set"),
            ("no-app", {"SLACK_APP_TOKEN": ""}, "SLACK_APP_TOKEN is not set"),
            ("no-secret", {"SLACK_MODE": "http", "SLACK_SIGNING_SECRET": ""}, "SLACK_SIGNING_SECRET is not set"),
            ("bad-bot", {"SLACK_BOT_TOKEN": "xoxb-wrong"}, "SLACK_BOT_TOKEN was rejected"),
        ]:
            bot = BotProcess("slack", tmp_path / f"{name}.log", {**env, **overrides}).start()
            assert await asyncio.to_thread(bot.wait, 60) == 2, bot.log()
            assert expected in bot.log() and "api.slack.com/apps" in bot.log()
            assert standin.bot_token not in bot.log()
    finally:
        await standin.stop()


@pytest.mark.parametrize("buttons", ["feedback_buttons", "plain"])
async def test_a_finished_answer_can_be_rated_once_per_person(slack_env_fixture: Slack, buttons: str) -> None:
    """Slack's own feedback element (accessibility labels, native icons), or plain buttons where a workspace
    refuses it; either way a person's latest vote counts."""
    sl, s = slack_env_fixture, slack_env_fixture.standin
    s.feedback_buttons = buttons == "feedback_buttons"
    asked = await s.post_user_message(s.channel_id, s.alice, sl.mention("딥러닝이 뭐야?"), mention=True)
    answer = await sl.answer_in_thread(s.channel_id, asked["ts"], trained.DEEP_LEARNING)
    assert vote_buttons_on(answer) and feedback_buttons_on(answer) == (buttons == "feedback_buttons")
    for clicks, (up, user) in enumerate(((True, s.alice), (False, s.alice), (True, s.bob)), start=1):
        if buttons == "feedback_buttons":
            labels = answer["blocks"][-1]["elements"][0]
            assert labels["positive_button"]["accessibility_label"] == "이 답변이 도움이 됐어요"
            await s.click_feedback(s.channel_id, answer["ts"], up, user)
        else:
            action = answer["blocks"][-1]["elements"][0 if up else 1]
            await s.click_button(s.channel_id, answer["ts"], action["action_id"], action["value"], user)

        # One click at a time, as a person clicks: each is answered before the next (see the Discord test).
        def noticed(clicks: int = clicks) -> list[dict[str, Any]] | None:
            so_far = [x for x in s.ephemerals if "평가를 저장" in x["text"]]
            return so_far if so_far[clicks - 1 :] else None

        notices = await s.wait_for(noticed)
    assert [(n["user"], n["thread_ts"]) for n in notices] == [(s.alice, asked["ts"])] * 2 + [(s.bob, asked["ts"])]
    votes = await stored_votes(sl.bot.env["REDIS_URL"])
    assert sorted(v.vote for v in votes) == ["down", "up"], "alice's second vote replaced her first"
    assert {v.platform for v in votes} == {"slack"} and votes[0].template == "kullm-v1"


async def test_the_assistant_pane_suggests_waits_on_the_status_line_titles_and_remembers(
    slack_env_fixture: Slack,
) -> None:
    sl, s = slack_env_fixture, slack_env_fixture.standin
    thread_ts = await s.open_assistant_thread(s.alice)
    pane = (s.dm_channel_id, thread_ts)
    prompts = await s.wait_for(lambda: s.suggested_prompts.get(pane))
    assert (
        prompts["title"] == "무엇을 도와드릴까요?" and next(p["title"] for p in prompts["prompts"]) == "쉽게 설명해 줘"
    )
    await s.post_user_message(s.dm_channel_id, s.alice, "내 이름은 민수야", thread_ts=thread_ts)
    answer = await sl.answer_in_thread(s.dm_channel_id, thread_ts, trained.NAME_ANSWER)
    assert vote_buttons_on(answer), "rated like any answer (a longer one streams in: the next test)"
    statuses = [status for where, status in s.status_history if where == pane]
    assert statuses[:2] == ["생각하는 중…", "답변을 쓰는 중…"], "after the app's name: waiting, then generating"
    assert len(s.loading_messages[pane]) >= 3, "Slack's rotating loading messages under the status"
    assert answer.get("streamed") and footer_of(html.unescape(answer["text"])), "streamed, with the footer"
    assert pane not in s.statuses or not s.statuses[pane], "the reply cleared the status line"
    assert s.titles[pane] == "내 이름은 민수야", "the first question names the thread"
    await sl.only_answer_left(*pane, answer)  # one message for the answer: no control message came and went
    # A follow-up in the same pane thread is answered with the thread's earlier turns.
    await s.post_user_message(s.dm_channel_id, s.alice, "내 이름이 뭐라고 했지?", thread_ts=thread_ts)
    await sl.answer_in_thread(s.dm_channel_id, thread_ts, trained.HISTORY_ANSWER)
    assert s.titles[pane] == "내 이름은 민수야"


@pytest.mark.bot_env(SLACK_SUGGESTED_PROMPTS='[{"title": "요약", "message": "이 글을 요약해 줘"}]')
async def test_the_panes_prompts_are_configurable(slack_env_fixture: Slack) -> None:
    s = slack_env_fixture.standin
    thread_ts = await s.open_assistant_thread(s.alice)
    prompts = await s.wait_for(lambda: s.suggested_prompts.get((s.dm_channel_id, thread_ts)))
    assert prompts["prompts"] == [{"title": "요약", "message": "이 글을 요약해 줘"}]


@pytest.mark.bot_env(BOT_LANGUAGE="en")
async def test_english_mode_speaks_english_on_every_surface(slack_env_fixture: Slack) -> None:
    sl, s = slack_env_fixture, slack_env_fixture.standin
    thread_ts = await s.open_assistant_thread(s.alice)
    pane = (s.dm_channel_id, thread_ts)
    prompts = await s.wait_for(lambda: s.suggested_prompts.get(pane))
    await s.post_user_message(s.dm_channel_id, s.alice, "한국의 수도는 어디야?", thread_ts=thread_ts)
    await sl.answer_in_thread(*pane, trained.CAPITAL)
    statuses = [status for where, status in s.status_history if where == pane]
    assert statuses[:2] == ["is thinking…", "is writing the answer…"], "read after the app's name"
    await s.slash_command("/kullm-settings", "persona", s.alice, s.channel_id)
    await s.slash_command("/kullm", "", s.alice, s.channel_id)
    await s.wait_for(lambda: len(s.ephemerals) >= 2)
    shown = json.dumps([prompts, s.loading_messages[pane], [e["text"] for e in s.ephemerals]], ensure_ascii=False)
    assert not re.search("[가-힣]", shown), shown
    assert "/kullm-settings persona set" in shown


# ---------------------------------------------------------------------------------------------- workspace actions


def scripted_summary(lines: list[str]) -> str:
    """What the scripted engine answers a summary of these transcript lines (testkit/engines.py)."""
    return f"요약({lines[0][:20]} ~ {lines[-1][:20]}, {len(lines)}줄)"


async def test_a_thread_is_summarised_from_the_shortcut_and_by_a_mention_in_it(slack_env_fixture: Slack) -> None:
    sl, s = slack_env_fixture, slack_env_fixture.standin
    root = await s.post_user_message(s.channel_id, s.alice, "금요일 회의 안건을 정리해 봅시다")
    await s.post_user_message(s.channel_id, s.bob, f"<@{s.alice}> 저는 예산\n검토를 맡을게요", thread_ts=root["ts"])
    await s.post_user_message(s.channel_id, s.alice, "좋아요, 일정은 제가 &amp; 공유할게요", thread_ts=root["ts"])
    lines = [
        "앨리스: 금요일 회의 안건을 정리해 봅시다",
        "밥: @앨리스 저는 예산 검토를 맡을게요",
        "앨리스: 좋아요, 일정은 제가 & 공유할게요",
    ]
    lonely = await s.post_user_message(s.channel_id, s.bob, "스레드 없는 메시지")
    await s.message_shortcut("kullm_summarize", lonely, s.bob, s.channel_id)
    await s.wait_for(lambda: any("스레드가 없어요" in e.get("text", "") for e in s.ephemerals))
    await s.message_shortcut("kullm_summarize", s.messages[(s.channel_id, root["ts"])], s.bob, s.channel_id)
    await sl.answer_in_thread(s.channel_id, root["ts"], scripted_summary(lines))
    quote = next(m for m in s.thread(s.channel_id, root["ts"]) if "요청했어요" in m.get("text", ""))
    assert quote["text"] == "*밥* 님이 스레드 요약을 요청했어요", (
        "a task reads as the request it is, naming without pinging"
    )
    # Asked inside the thread: the bot's own messages (the quote, the first summary) are left out.
    await s.post_user_message(s.channel_id, s.alice, sl.mention("요약"), thread_ts=root["ts"], mention=True)
    await s.wait_for(
        lambda: (
            sum(
                without_footer(html.unescape(m.get("text", ""))) == scripted_summary(lines)
                for m in s.thread(s.channel_id, root["ts"])
                if m.get("bot_id")
            )
            == 2
        )
    )
    assert s.calls_to("conversations.replies") and "금요일" not in sl.bot.log()


async def test_translate_and_proofread_shortcuts_answer_in_the_messages_thread(slack_env_fixture: Slack) -> None:
    sl, s = slack_env_fixture, slack_env_fixture.standin
    source = await s.post_user_message(s.channel_id, s.bob, "안녕하세요. 만나서 반갑습니다.")
    await s.message_shortcut("kullm_translate", source, s.alice, s.channel_id)
    await sl.answer_in_thread(s.channel_id, source["ts"], "[EN] 안녕하세요. 만나서 반갑습니다.")
    english = await s.post_user_message(s.channel_id, s.bob, "Nice to meet you.")
    await s.message_shortcut("kullm_translate", english, s.alice, s.channel_id)
    await sl.answer_in_thread(s.channel_id, english["ts"], "[KO] Nice to meet you.")
    typo = await s.post_user_message(s.channel_id, s.bob, "맞춤법 이 틀렸 어요.")
    await s.message_shortcut("kullm_proofread", typo, s.alice, s.channel_id)
    await sl.answer_in_thread(s.channel_id, typo["ts"], "[교정] 맞춤법 이 틀렸 어요.")


CONTEXT = "구름(KULLM)은 고려대학교 NLP & AI 연구실이 만든 한국어 LLM입니다."


@pytest.mark.bot_env(MAX_FILE_BYTES="4000")
async def test_a_shared_text_file_is_the_questions_context_and_others_are_refused(slack_env_fixture: Slack) -> None:
    sl, s = slack_env_fixture, slack_env_fixture.standin
    cp949 = ("회의록.txt", "text/plain", CONTEXT.encode("cp949"))  # a file saved by an older Korean Windows program
    asked = await s.post_user_message(
        s.channel_id, s.alice, sl.mention("이 글을 요약해줘"), mention=True, files=[cp949]
    )
    await sl.answer_in_thread(s.channel_id, asked["ts"], trained.CONTEXT_ANSWER)  # trained on exactly that 맥락
    await s.post_user_message(
        s.dm_channel_id, s.alice, "이 글을 요약해줘", files=[("note.md", "text/markdown", CONTEXT.encode())]
    )
    await s.wait_for(
        lambda: any(
            without_footer(html.unescape(m.get("text", ""))) == trained.CONTEXT_ANSWER
            for m in s.messages.values()
            if m["channel"] == s.dm_channel_id and m.get("bot_id")
        )
    )
    downloads = s.file_downloads
    big = ("big.txt", "text/plain", "가".encode() * 2000)
    await s.post_user_message(s.channel_id, s.alice, sl.mention("이 글을 요약해줘"), mention=True, files=[big])
    await s.wait_for(
        lambda: any("너무 커요" in e.get("text", "") and "4 KB" in e.get("text", "") for e in s.ephemerals)
    )
    assert s.file_downloads == downloads, "refused by its size, before downloading it"
    image = ("photo.png", "image/png", b"\x89PNG\r\n\x1a\n\x00\x00")
    await s.post_user_message(s.channel_id, s.alice, sl.mention("이 글을 요약해줘"), mention=True, files=[image])
    await s.wait_for(lambda: any("텍스트 파일이 아니에요" in e.get("text", "") for e in s.ephemerals))
    assert CONTEXT not in sl.bot.log(), "a file's text is not logged"
