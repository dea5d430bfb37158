"""The Discord adapter end to end: the real discord.py bot process, the loopback Discord, a worker, Redis.

`python -m bot discord` runs as a process pointed at the stand-in through DISCORD_API_BASE;
answers are the tiny model's trained texts.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from testkit import hostile_files, trained
from testkit.conformance import discord_standin_problems
from testkit.controls import none_in_flight, stop_button_on, stored_votes, vote_buttons_on
from testkit.engines import LONG_CODE_QUESTION, RunWorker, long_code_answer
from testkit.polling import eventually
from testkit.processes import BotProcess
from testkit.redis_server import RedisServer
from testkit.shown import components_in, shown_text, without_footer
from testkit.standins.discord import DiscordStandIn

pytestmark = pytest.mark.e2e
NO_MENTIONS: dict[str, list[str]] = {"parse": []}


@dataclass
class Discord:
    """The running pieces of one test."""

    standin: DiscordStandIn
    bot: BotProcess
    redis_url: str
    tmp_path: Path

    def mention(self, text: str) -> str:
        return f"<@{self.standin.bot_id}> {text}"

    def bot_messages(self, channel_id: int) -> list[dict[str, Any]]:
        return [m for m in self.standin.messages_in(channel_id) if int(m["author"]["id"]) == self.standin.bot_id]

    async def long_answer_streaming(self) -> tuple[int, dict[str, Any]]:
        """Alice asks for the long story: its thread and placeholder, once part of the answer shows."""
        s = self.standin
        asked = await s.send_message(s.channel_id, s.alice, self.mention("긴 이야기를 들려줘"), mention_bot=True)
        thread = await self.thread_for(int(asked["id"]))
        placeholder = await s.wait_for(lambda: next(iter(self.bot_messages(thread)), None))
        await s.wait_for(lambda: placeholder["edits"] >= 1)
        return thread, placeholder

    async def answer_in(self, channel_id: int, expected: str, timeout: float = 60) -> dict[str, Any]:
        """Wait for the bot's message in `channel_id` to settle on `expected` (stop button removed)."""

        def settled() -> dict[str, Any] | None:
            for message in self.bot_messages(channel_id):
                if without_footer(shown_text(message)) == expected and not stop_button_on(message):
                    return message
            return None

        try:
            return await self.standin.wait_for(settled, timeout)
        except AssertionError:
            contents = [shown_text(m)[:80] for m in self.bot_messages(channel_id)]
            raise AssertionError(f"no settled answer; bot messages: {contents}\n{self.bot.log()[-3000:]}") from None

    async def thread_for(self, message_id: int) -> int:
        """The thread the bot opened on a message (Discord gives it the message's id)."""
        await self.standin.wait_for(lambda: message_id in self.standin.threads, 30)
        return message_id

    def restart_bot(self, **env: str) -> BotProcess:
        self.bot = BotProcess("discord", self.tmp_path / "bot-restarted.log", {**self.bot.env, **env}).start()
        return self.bot


def bot_env(standin: DiscordStandIn, redis_url: str, **extra: str) -> dict[str, str]:
    return {
        "DISCORD_TOKEN": standin.token,
        "DISCORD_API_BASE": standin.api_base,
        "DISCORD_GUILD_IDS": str(standin.guild_id),
        "DISCORD_EDIT_INTERVAL_S": "0.3",
        "REDIS_URL": redis_url,
        "LEASE_TTL_S": "1.5",
        **extra,
    }


@pytest.fixture
async def discord_env(
    redis_server: RedisServer, run_worker: RunWorker, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Discord]:
    marker = request.node.get_closest_marker("bot_env")
    worker_marker = request.node.get_closest_marker("worker_env")
    run_worker(**(worker_marker.kwargs if worker_marker else {}))
    standin = DiscordStandIn()
    await standin.start(point_discord_py=False)
    env = bot_env(standin, redis_server.url, **(marker.kwargs if marker else {}))
    bot = BotProcess("discord", tmp_path / "bot.log", env).start()
    env_obj = Discord(standin, bot, redis_server.url, tmp_path)
    try:
        await standin.wait_for(lambda: standin.identifies >= 1 and bool(standin.commands), 60)  # synced
    except AssertionError:
        raise AssertionError(f"bot did not start: {bot.log()[-3000:]}") from None
    yield env_obj
    await asyncio.to_thread(env_obj.bot.stop)
    await standin.stop()
    problems = discord_standin_problems(standin)
    assert not problems, "the stand-in answered what Discord's API description does not:\n" + "\n".join(problems)


@pytest.mark.worker_env(engine="builtin")  # the whole chain once with real generation (the tiny model)
async def test_mention_answers_in_a_thread_named_from_the_question(discord_env: Discord) -> None:
    d, s = discord_env, discord_env.standin
    asked = await s.send_message(s.channel_id, s.alice, d.mention("딥러닝이 뭐야?"), mention_bot=True)
    thread = await d.thread_for(int(asked["id"]))
    assert s.threads[thread]["name"] == "딥러닝이 뭐야?"
    answer = await d.answer_in(thread, trained.DEEP_LEARNING)
    assert answer["edits"] >= 2, "the placeholder is edited while the answer streams"
    placeholder_posts = [c for c in s.calls if c.method == "POST" and c.path == f"/channels/{thread}/messages"]
    assert shown_text(placeholder_posts[0].json) == "⏳ 생각 중…", "nobody ahead: no place in line shown"
    assert stop_button_on(placeholder_posts[0].json), "the stop button is on the placeholder"
    for call in s.calls:
        if call.method in {"POST", "PATCH"} and re.fullmatch(r"/channels/\d+/messages(/\d+)?", call.path):
            assert call.json.get("allowed_mentions") == NO_MENTIONS, call
    assert any(c.path == f"/channels/{thread}/typing" for c in s.calls), "typing indicator while generating"
    assert s.token not in d.bot.log(), "the token never reaches a log"
    assert "딥러닝이 뭐야?" not in d.bot.log(), "nor the user's text"


async def test_follow_up_in_the_thread_continues_with_history(discord_env: Discord) -> None:
    d, s = discord_env, discord_env.standin
    asked = await s.send_message(s.channel_id, s.alice, d.mention("내 이름은 민수야"), mention_bot=True)
    thread = await d.thread_for(int(asked["id"]))
    await d.answer_in(thread, trained.NAME_ANSWER)
    await s.send_message(thread, s.alice, "내 이름이 뭐라고 했지?")  # no mention needed in the bot's thread
    await d.answer_in(thread, trained.HISTORY_ANSWER)  # trained on the prompt that carries the first turn
    await s.send_message(s.channel_id, s.bob, "멘션 없는 채널 메시지")
    await asyncio.sleep(0.5)
    assert all(m["channel_id"] != str(s.channel_id) for m in d.bot_messages(s.channel_id)), "not addressed: ignored"


async def test_reply_mention_uses_the_replied_message_as_context(discord_env: Discord) -> None:
    d, s = discord_env, discord_env.standin
    source = await s.send_message(
        s.channel_id, s.bob, "구름(KULLM)은 고려대학교 NLP & AI 연구실이 만든 한국어 LLM입니다."
    )
    asked = await s.send_message(
        s.channel_id, s.alice, d.mention("이 글을 요약해줘"), mention_bot=True, reference_message_id=int(source["id"])
    )
    await d.answer_in(await d.thread_for(int(asked["id"])), trained.CONTEXT_ANSWER)


async def test_commands_speak_each_members_client_language(discord_env: Discord) -> None:
    """Registered in BOT_LANGUAGE (Korean here) and localised to English: a member whose client is English sees and
    types the English names, and Discord sends the registered ones back."""
    d, s = discord_env, discord_env.standin
    commands = {c["name"]: c for c in s.commands[str(s.guild_id)]}
    kullm, settings = commands["kullm"], commands["kullm-설정"]
    assert kullm["description_localizations"]["en-US"] == "Ask KULLM a question"
    assert [(o["name"], o["name_localizations"]["en-US"]) for o in kullm["options"]] == [
        ("질문", "question"),
        ("맥락", "context"),
        ("찾기", "search"),
    ]
    assert commands["KULLM에게 묻기"]["name_localizations"] == {"en-US": "Ask KULLM", "en-GB": "Ask KULLM"}
    assert settings["name_localizations"]["en-US"] == "kullm-settings"
    persona = settings["options"][0]
    assert (persona["name"], persona["name_localizations"]["en-US"]) == ("페르소나", "persona")
    s.locales[int(s.bob["id"])] = "en-US"
    await s.slash_command("kullm", {"question": "한국의 수도는 어디야?"}, s.bob, s.channel_id)
    asked = await s.wait_for(
        lambda: next((m for m in d.bot_messages(s.channel_id) if "님의 질문" in shown_text(m)), None)
    )
    await d.answer_in(await d.thread_for(int(asked["id"])), trained.CAPITAL)
    await s.message_command("Ask KULLM", int(asked["id"]), s.bob, s.channel_id)
    await s.wait_for(lambda: any(r["type"] == 9 for r in s.interaction_responses))


@pytest.mark.bot_env(BOT_LANGUAGE="en")
async def test_english_mode_registers_english_commands_localised_to_korean(discord_env: Discord) -> None:
    d, s = discord_env, discord_env.standin
    commands = {c["name"]: c for c in s.commands[str(s.guild_id)]}
    assert set(commands) == {
        "kullm",
        "Ask KULLM",
        "Thread summary",
        "Translate Korean↔English",
        "Proofreading",
        "kullm-settings",
    }
    assert commands["kullm-settings"]["name_localizations"]["ko"] == "kullm-설정"
    assert commands["kullm"]["options"][0]["name"] == "question"
    await s.slash_command("kullm-설정 페르소나 보기", {}, s.admin, s.channel_id)  # a Korean client's words
    reply = await s.wait_for(lambda: next((r for r in s.interaction_responses if r["type"] == 4), None))
    assert (
        reply["data"]["content"].startswith("🎭 This channel has no persona")
        and "/kullm-settings persona set" in (reply["data"]["content"])
    )
    await s.send_message(s.channel_id, s.alice, d.mention(""), mention_bot=True)
    usage = await s.wait_for(lambda: next((m for m in s.dm_messages(s.alice) if "👋" in shown_text(m)), None))
    said = shown_text(usage).replace(f"@{s.bot_user['global_name'] or s.bot_user['username']}", "@KULLM")  # its name
    assert "/kullm question:" in said and not re.search("[가-힣]", said), said


async def test_slash_command_answers_in_a_thread(discord_env: Discord) -> None:
    d, s = discord_env, discord_env.standin
    names = {c["name"] for c in s.commands[str(s.guild_id)]}
    assert names == {"kullm", "KULLM에게 묻기", "스레드 요약", "한↔영 번역", "맞춤법 교정", "kullm-설정"}
    await s.slash_command("kullm", {"질문": "한국의 수도는 어디야?"}, s.alice, s.channel_id)
    deferred = await s.wait_for(lambda: next(iter(s.interaction_responses), None))
    assert deferred["type"] == 5  # deferred, then the question is posted as the follow-up
    asked = await s.wait_for(
        lambda: next((m for m in d.bot_messages(s.channel_id) if "님의 질문" in shown_text(m)), None)
    )
    assert shown_text(asked) == "**앨리스** 님의 질문: 한국의 수도는 어디야?"
    await d.answer_in(await d.thread_for(int(asked["id"])), trained.CAPITAL)


async def settings_reply(d: Discord, command: str, options: dict[str, str], user: dict[str, Any]) -> dict[str, Any]:
    """Run a `/kullm-설정 …` subcommand in the channel; the bot's (ephemeral) reply."""
    s = d.standin
    before = len(s.interaction_responses)
    await s.slash_command(command, options, user, s.channel_id)
    reply = await s.wait_for(lambda: next((r for r in s.interaction_responses[before:] if r["type"] == 4), None))
    assert reply["data"]["flags"] & 64, "seen only by whoever ran it"
    return dict(reply["data"])


async def test_an_admin_sets_the_channels_persona_and_the_next_question_follows_it(discord_env: Discord) -> None:
    d, s = discord_env, discord_env.standin
    settings = next(c for c in s.commands[str(s.guild_id)] if c["name"] == "kullm-설정")
    assert settings["default_member_permissions"] == str(1 << 5), "offered to members with Manage Server"
    assert settings["dm_permission"] is False, "in servers only"
    with pytest.raises(PermissionError):
        await s.slash_command("kullm-설정 페르소나 정하기", {"지시문": trained.PIRATE_PERSONA}, s.bob, s.channel_id)
    empty = await settings_reply(d, "kullm-설정 페르소나 보기", {}, s.admin)
    assert shown_text(empty).startswith("🎭 이 채널에는 페르소나가 없어요")
    done = await settings_reply(d, "kullm-설정 페르소나 정하기", {"지시문": trained.PIRATE_PERSONA}, s.admin)
    assert shown_text(done).startswith("✅") and trained.PIRATE_PERSONA in shown_text(done)
    # The next question follows it, with no restart; in a thread under the channel too.
    asked = await s.send_message(s.channel_id, s.alice, d.mention("한국의 수도는 어디야?"), mention_bot=True)
    thread = await d.thread_for(int(asked["id"]))
    await d.answer_in(thread, trained.PIRATE_CAPITAL)
    await s.send_message(thread, s.alice, "한국의 수도는 어디야?")
    await s.wait_for(
        lambda: sum(without_footer(shown_text(m)) == trained.PIRATE_CAPITAL for m in d.bot_messages(thread)) == 2
    )
    shown = await settings_reply(d, "kullm-설정 페르소나 보기", {}, s.admin)
    assert trained.PIRATE_PERSONA in shown_text(shown) and f"<@{s.admin['id']}>" in shown_text(shown)
    # A server may open the command to everyone: set and clear still need Manage Server.
    s.opened_commands.add("kullm-설정")
    refused = await settings_reply(d, "kullm-설정 페르소나 지우기", {}, s.bob)
    assert shown_text(refused).startswith("🔒") and "서버 관리" in shown_text(refused)
    cleared = await settings_reply(d, "kullm-설정 페르소나 지우기", {}, s.admin)
    assert shown_text(cleared).startswith("🗑️")
    asked = await s.send_message(s.channel_id, s.alice, d.mention("한국의 수도는 어디야?"), mention_bot=True)
    await d.answer_in(await d.thread_for(int(asked["id"])), trained.CAPITAL)
    assert trained.PIRATE_PERSONA not in d.bot.log(), "a persona's text is not logged"


async def test_context_menu_opens_a_modal_and_answers_about_the_message(discord_env: Discord) -> None:
    d, s = discord_env, discord_env.standin
    source = await s.send_message(
        s.channel_id, s.bob, "구름(KULLM)은 고려대학교 NLP & AI 연구실이 만든 한국어 LLM입니다."
    )
    await s.message_command("KULLM에게 묻기", int(source["id"]), s.alice, s.channel_id)
    modal_id, modal = await s.wait_for(lambda: next(iter(s.modals.items()), None))
    assert modal["title"] == "KULLM에게 묻기"
    quote = modal["components"][0]
    assert quote["type"] == 10 and quote["content"].endswith(
        "\n> 구름(KULLM)은 고려대학교 NLP & AI 연구실이 만든 한국어 LLM입니다."
    )
    assert any(
        c.get("placeholder", "").startswith("이 메시지에 대해 무엇이 궁금한가요?")
        for row in modal["components"]
        for c in row.get("components", [row.get("component", {})])
    ), "the field says what to type"
    field_id = _text_input_ids(modal)[0]
    await s.submit_modal(modal_id, {field_id: "이 글을 요약해줘"}, s.alice, s.channel_id)
    asked = await s.wait_for(
        lambda: next((m for m in d.bot_messages(s.channel_id) if "님의 질문" in shown_text(m)), None)
    )
    await d.answer_in(await d.thread_for(int(asked["id"])), trained.CONTEXT_ANSWER)


async def test_stop_button_only_for_the_asker_or_a_moderator(discord_env: Discord) -> None:
    d, s = discord_env, discord_env.standin
    asked = await s.send_message(s.channel_id, s.alice, d.mention("긴 이야기를 들려줘"), mention_bot=True)
    thread = await d.thread_for(int(asked["id"]))
    placeholder = await s.wait_for(lambda: next(iter(d.bot_messages(thread)), None))
    [button] = [c for c in components_in(placeholder) if c["type"] == 2]
    assert button["label"] == "그만"
    await s.wait_for(lambda: placeholder["edits"] >= 1)
    await s.click_button(int(placeholder["id"]), button["custom_id"], s.bob)
    refusal = await s.wait_for(lambda: next((r for r in s.interaction_responses if r["type"] == 4), None))
    assert "질문한 사람이나 관리자만" in refusal["data"]["content"] and refusal["data"]["flags"] == 64
    await s.click_button(int(placeholder["id"]), button["custom_id"], s.mod)
    final = await s.wait_for(lambda: placeholder if not stop_button_on(placeholder) else None)
    partial, notice = shown_text(final).rsplit("\n\n", 1)
    assert notice == "⏹️ 운영자 님이 답변을 멈췄어요." and trained.LONG_STORY.startswith(partial), "who stopped it"


async def test_asker_reaction_cancels(discord_env: Discord) -> None:
    d, s = discord_env, discord_env.standin
    thread, placeholder = await d.long_answer_streaming()
    await s.add_reaction(thread, int(placeholder["id"]), s.bob, "❌")  # not the asker: ignored
    await s.add_reaction(thread, int(placeholder["id"]), s.alice, "❌")
    final = await s.wait_for(lambda: placeholder if not stop_button_on(placeholder) else None)
    assert shown_text(final).endswith("⏹️ 앨리스 님이 답변을 멈췄어요.")


async def test_model_output_cannot_ping_anyone(discord_env: Discord) -> None:
    d, s = discord_env, discord_env.standin
    asked = await s.send_message(s.channel_id, s.alice, d.mention("공지해줘"), mention_bot=True)
    answer = await d.answer_in(await d.thread_for(int(asked["id"])), trained.ANNOUNCE_ANSWER)
    assert "@everyone" in shown_text(answer)
    edits = [c for c in s.calls if c.method == "PATCH" and c.path.endswith(f"/messages/{answer['id']}")]
    assert edits and all(c.json["allowed_mentions"] == NO_MENTIONS for c in edits)


@pytest.mark.bot_env(DISCORD_LAYOUT="plain")  # plain messages, 2,000 characters each (layouts: test_discord_layouts)
async def test_a_4500_character_answer_streams_on_into_three_numbered_messages(discord_env: Discord) -> None:
    """Past 2,000 characters the stream goes on in the next message: earlier parts keep their text (never the
    "… tail" view, never rewound), each part is numbered, and 👍/👎 and the footer sit under the last."""
    d, s = discord_env, discord_env.standin
    asked = await s.send_message(s.channel_id, s.alice, d.mention(LONG_CODE_QUESTION), mention_bot=True)
    thread = await d.thread_for(int(asked["id"]))
    await s.wait_for(lambda: len(d.bot_messages(thread)) == 3 and vote_buttons_on(d.bot_messages(thread)[-1]), 60)
    messages = d.bot_messages(thread)
    pieces = [shown_text(m) for m in messages]
    assert all(len(p) <= 2000 for p in pieces)
    assert [p.rsplit("\n\n", 1)[1].split("\n")[0] for p in pieces] == ["(1/3)", "(2/3)", "(3/3)"]
    assert all(p.count("```") % 2 == 0 for p in pieces), "code fences closed and reopened per message"
    assert "".join(pieces).count("print('줄 59')") == long_code_answer().count("print('줄 59')")
    assert not any(stop_button_on(m) for m in messages) and [vote_buttons_on(m) for m in messages] == [
        False,
        False,
        True,
    ]
    assert "\n-# " in pieces[-1] and not any("\n-# " in p for p in pieces[:-1])
    first_edits = [
        c.json["content"] for c in s.calls if c.method == "PATCH" and c.path.endswith(f"/{messages[0]['id']}")
    ]
    assert not any(e.startswith("…") for e in first_edits), "the first part never flips to the tail of the answer"
    settled = [e for e in first_edits if e.endswith(("(1/…)", "(1/3)"))]
    assert settled and {e.rsplit("\n\n", 1)[0] for e in settled} == {pieces[0].rsplit("\n\n", 1)[0]}


async def test_bot_killed_mid_answer_finishes_the_same_message(discord_env: Discord) -> None:
    d = discord_env
    thread, _ = await d.long_answer_streaming()
    d.bot.kill()
    d.restart_bot()
    await d.answer_in(thread, trained.LONG_STORY)
    assert len(d.bot_messages(thread)) == 1, "the same placeholder was finished: nothing posted twice"
    assert "resuming its answer" in d.bot.log()


@pytest.mark.bot_env(USER_CONCURRENT_QUESTIONS="1")
async def test_a_deleted_placeholder_gets_a_fresh_answer_and_frees_the_user(discord_env: Discord) -> None:
    d, s = discord_env, discord_env.standin
    thread, placeholder = await d.long_answer_streaming()
    await s.delete_message(int(placeholder["id"]))  # a moderator deletes it mid-answer
    fresh = await d.answer_in(thread, trained.LONG_STORY)
    assert fresh["id"] != placeholder["id"] and "placeholder gone" in d.bot.log()
    # Its slot is freed as its record is forgotten, a moment after the final text shows (a busy machine's moment).
    await eventually(lambda: none_in_flight(d.redis_url, "discord"), 10, what="the answer forgotten")
    asked = await s.send_message(s.channel_id, s.alice, d.mention("한국의 수도는 어디야?"), mention_bot=True)
    await d.answer_in(await d.thread_for(int(asked["id"])), trained.CAPITAL)  # not locked out


async def test_gateway_reconnect_mid_answer_loses_nothing(discord_env: Discord) -> None:
    d, s = discord_env, discord_env.standin
    thread, _ = await d.long_answer_streaming()
    await s.reconnect()
    await d.answer_in(thread, trained.LONG_STORY)
    assert (s.identifies, s.resumes) == (1, 1)
    asked = await s.send_message(s.channel_id, s.alice, d.mention("한국의 수도는 어디야?"), mention_bot=True)
    await d.answer_in(await d.thread_for(int(asked["id"])), trained.CAPITAL)


async def test_a_429_on_an_edit_is_waited_out(discord_env: Discord) -> None:
    d, s = discord_env, discord_env.standin
    s.fail_next("PATCH", r"/channels/\d+/messages/\d+", retry_after=0.5)
    asked = await s.send_message(s.channel_id, s.alice, d.mention("딥러닝이 뭐야?"), mention_bot=True)
    await d.answer_in(await d.thread_for(int(asked["id"])), trained.DEEP_LEARNING)
    patches = [c for c in s.calls if c.method == "PATCH"]
    assert len(patches) >= 2


async def test_redis_down_is_told_and_the_next_question_answered(
    discord_env: Discord, redis_server: RedisServer
) -> None:
    d, s = discord_env, discord_env.standin
    await asyncio.to_thread(redis_server.kill)
    asked = await s.send_message(s.channel_id, s.alice, d.mention("한국의 수도는 어디야?"), mention_bot=True)
    notice = await s.wait_for(lambda: next((m for m in s.dm_messages(s.alice) if "🔌" in shown_text(m)), None), 30)
    ref = re.search(r"`([0-9a-f]{8})`", shown_text(notice))
    assert ref and f"ref {ref[1]}" in d.bot.log(), "the reference the asker is given is in the operator's log"
    assert asked["id"] in shown_text(notice), "the DM links the message it answers"
    assert "Redis" not in shown_text(notice), "the cause is the operator's to read, in the log"
    assert int(asked["id"]) not in s.threads, "no thread or placeholder left hanging"
    await asyncio.to_thread(redis_server.start)
    asked = await s.send_message(s.channel_id, s.alice, d.mention("한국의 수도는 어디야?"), mention_bot=True)
    await d.answer_in(await d.thread_for(int(asked["id"])), trained.CAPITAL)


@pytest.mark.bot_env(DISCORD_ALLOWED_CHANNEL_IDS="1100000000000000101", USER_QUESTIONS_PER_MINUTE="2")
async def test_refusals_are_clear_and_bots_are_ignored(discord_env: Discord) -> None:
    d, s = discord_env, discord_env.standin
    # Refusals to a mention are seen only by the asker: in a DM (Discord has no ephemeral reply to a message).
    await s.send_message(s.channel_id, s.alice, d.mention(""), mention_bot=True)
    usage = await s.wait_for(lambda: next((m for m in s.dm_messages(s.alice) if "👋" in shown_text(m)), None))
    assert "/kullm" in shown_text(usage)
    await s.send_message(s.other_channel_id, s.alice, d.mention("딥러닝이 뭐야?"), mention_bot=True)
    await s.wait_for(lambda: any("🚫" in shown_text(m) for m in s.dm_messages(s.alice)))
    await s.send_message(s.channel_id, s.other_bot, d.mention("딥러닝이 뭐야?"), mention_bot=True)
    s.dms_closed.add(int(s.bob["id"]))  # Bob takes no DMs: his refusals are replies that delete themselves
    await s.send_message(s.channel_id, s.bob, d.mention("가" * 5000), mention_bot=True)
    await s.wait_for(lambda: any("너무 길어요" in shown_text(m) for m in d.bot_messages(s.channel_id)))
    for _ in range(2):
        await s.send_message(s.channel_id, s.bob, d.mention("한국의 수도는 어디야?"), mention_bot=True)
    await s.send_message(s.channel_id, s.bob, d.mention("한국의 수도는 어디야?"), mention_bot=True)
    await s.wait_for(lambda: any("1분에 2개까지" in shown_text(m) for m in d.bot_messages(s.channel_id)))
    assert not any(
        shown_text(m) for m in d.bot_messages(s.channel_id) if "🚫" in shown_text(m) or "👋" in shown_text(m)
    )
    assert not any(
        m.get("message_reference", {}).get("message_id")
        for m in d.bot_messages(s.channel_id)
        if shown_text(m).startswith("⏳")
    ), "refusals are replies, placeholders live in threads"
    # The two questions within the limit are answered in threads of their own (handled concurrently with the
    # refusal, so possibly after it); nothing else opened one.
    await s.wait_for(lambda: len(s.threads) >= 2)
    bot_threads = [t["name"] for t in s.threads.values()]
    assert bot_threads == ["한국의 수도는 어디야?"] * 2, "no thread for bots, refusals or other channels"


async def test_missing_token_and_intent_errors_say_what_to_do(redis_server: RedisServer, tmp_path: Path) -> None:
    standin = DiscordStandIn()
    await standin.start(point_discord_py=False)
    try:
        env = bot_env(standin, redis_server.url)
        no_token = BotProcess("discord", tmp_path / "no-token.log", {**env, "DISCORD_TOKEN": ""}).start()
        assert await asyncio.to_thread(no_token.wait, 60) == 2
        assert "DISCORD_TOKEN is not set" in no_token.log() and "discord.com/developers" in no_token.log()
        standin.close_on_identify_code = 4014
        no_intent = BotProcess("discord", tmp_path / "no-intent.log", env).start()
        assert await asyncio.to_thread(no_intent.wait, 60) == 2
        assert "MESSAGE CONTENT INTENT" in no_intent.log()
        assert standin.token not in no_intent.log() + no_token.log()
    finally:
        await standin.stop()


def _text_input_ids(modal: dict[str, Any]) -> list[str]:
    found = []
    for row in modal["components"]:
        for component in row.get("components", [row.get("component", {})]):
            if component.get("type") == 4:
                found.append(component["custom_id"])
    return found


async def test_direct_messages_are_answered_in_the_dm(discord_env: Discord) -> None:
    d, s = discord_env, discord_env.standin
    await s.send_message(s.dm_channel_id, s.alice, "고려대학교는 어디에 있어?")  # no mention needed in a DM
    await d.answer_in(s.dm_channel_id, trained.KOREA_UNIV)
    assert s.threads == {}


async def test_a_redelivered_message_is_answered_once(discord_env: Discord) -> None:
    d, s = discord_env, discord_env.standin
    asked = await s.send_message(s.channel_id, s.alice, d.mention("한국의 수도는 어디야?"), mention_bot=True)
    thread = await d.thread_for(int(asked["id"]))
    await d.answer_in(thread, trained.CAPITAL)
    await s.redeliver_message(int(asked["id"]))
    await asyncio.sleep(1.0)
    assert len(d.bot_messages(thread)) == 1 and len(s.threads) == 1


@pytest.mark.bot_env(DISCORD_ALLOWED_ROLE_IDS="1100000000000000201")
async def test_role_allow_list(discord_env: Discord) -> None:
    d, s = discord_env, discord_env.standin
    await s.send_message(s.channel_id, s.alice, d.mention("한국의 수도는 어디야?"), mention_bot=True)
    await s.wait_for(lambda: any("🚫" in shown_text(m) for m in s.dm_messages(s.alice)))
    asked = await s.send_message(s.channel_id, s.mod, d.mention("한국의 수도는 어디야?"), mention_bot=True)
    await d.answer_in(await d.thread_for(int(asked["id"])), trained.CAPITAL)


async def test_a_finished_answer_can_be_rated_once_per_person(discord_env: Discord) -> None:
    d, s = discord_env, discord_env.standin
    asked = await s.send_message(s.channel_id, s.alice, d.mention("딥러닝이 뭐야?"), mention_bot=True)
    answer = await d.answer_in(await d.thread_for(int(asked["id"])), trained.DEEP_LEARNING)
    assert vote_buttons_on(answer)
    up, down = (c["custom_id"] for c in components_in(answer) if c["type"] == 2)
    assert up.startswith("kullm:vote:up:") and down.startswith("kullm:vote:down:")

    def notices_so_far() -> list[dict[str, Any]]:
        return [x for x in s.interaction_responses if x["type"] == 4]

    for clicks, (custom_id, user) in enumerate(((up, s.alice), (down, s.alice), (up, s.bob)), start=1):
        await s.click_button(int(answer["id"]), custom_id, user)

        # One click at a time, as a person clicks: each is answered before the next (two clicks sent in the same
        # millisecond are handled concurrently, and which lands last is not theirs to say).
        def noticed(clicks: int = clicks) -> list[dict[str, Any]] | None:
            so_far = notices_so_far()
            return so_far if so_far[clicks - 1 :] else None

        notices = await s.wait_for(noticed)
    assert [n["data"]["flags"] for n in notices] == [64] * 3 and "평가를 저장했어요" in notices[0]["data"]["content"]
    votes = await stored_votes(d.redis_url)
    assert sorted(v.vote for v in votes) == ["down", "up"], "alice's second vote replaced her first"
    assert {v.platform for v in votes} == {"discord"} and votes[0].model == "scripted"


# ---------------------------------------------------------------------------------------------- workspace actions


def scripted_summary(lines: list[str]) -> str:
    """What the scripted engine answers a summary of these transcript lines (testkit/engines.py)."""
    return f"요약({lines[0][:20]} ~ {lines[-1][:20]}, {len(lines)}줄)"


async def test_a_thread_is_summarised_by_mention_by_slash_command_and_from_the_apps_menu(discord_env: Discord) -> None:
    d, s = discord_env, discord_env.standin
    asked = await s.send_message(s.channel_id, s.alice, d.mention("한국의 수도는 어디야?"), mention_bot=True)
    thread = await d.thread_for(int(asked["id"]))
    await d.answer_in(thread, trained.CAPITAL)
    await s.send_message(thread, s.bob, "서울이 맞아요.\n인구도 제일 많고요")
    await s.send_message(thread, s.alice, "고마워요 <@1100000000000000012>")
    lines = ["앨리스: @구름 한국의 수도는 어디야?", "밥: 서울이 맞아요. 인구도 제일 많고요", "앨리스: 고마워요 @밥"]
    summary = scripted_summary(lines)  # the bot's own answer left out, people by display name
    await s.send_message(thread, s.alice, d.mention("요약"), mention_bot=True)
    await d.answer_in(thread, summary)
    await s.slash_command("kullm", {"질문": "요약"}, s.bob, thread)
    await s.wait_for(lambda: sum(without_footer(shown_text(m)) == summary for m in d.bot_messages(thread)) == 2)
    # From the parent channel, on the message the thread was started from: the summary goes into the thread.
    await s.message_command("스레드 요약", int(asked["id"]), s.bob, s.channel_id)
    await s.wait_for(lambda: sum(without_footer(shown_text(m)) == summary for m in d.bot_messages(thread)) == 3)
    notice = await s.wait_for(
        lambda: next((m for m in d.bot_messages(s.channel_id) if "답을 올려요" in shown_text(m)), None)
    )
    assert f"<#{thread}>" in shown_text(notice)
    lonely = await s.send_message(s.channel_id, s.bob, "스레드 없는 메시지")
    await s.message_command("스레드 요약", int(lonely["id"]), s.bob, s.channel_id)
    await s.wait_for(lambda: any("스레드가 없어요" in shown_text(m) for m in d.bot_messages(s.channel_id)))
    assert "인구도" not in d.bot.log(), "nobody's messages reach the log"


def quoted(d: Discord, label: str) -> dict[str, Any] | None:
    """The bot's line for a request in the channel ("**앨리스** 님이 한↔영 번역을 요청했어요")."""
    return next(
        (m for m in d.bot_messages(d.standin.channel_id) if f"님이 {label}을 요청했어요" in shown_text(m)), None
    )


async def test_translate_and_proofread_from_the_apps_menu(discord_env: Discord) -> None:
    d, s = discord_env, discord_env.standin
    source = await s.send_message(s.channel_id, s.bob, "안녕하세요. 만나서 반갑습니다.")
    await s.message_command("한↔영 번역", int(source["id"]), s.alice, s.channel_id)
    asked = await s.wait_for(
        lambda: next((m for m in d.bot_messages(s.channel_id) if "한↔영 번역" in shown_text(m)), None)
    )
    await d.answer_in(await d.thread_for(int(asked["id"])), "[EN] 안녕하세요. 만나서 반갑습니다.")
    typo = await s.send_message(s.channel_id, s.bob, "맞춤법 이 틀렸 어요.")
    await s.message_command("맞춤법 교정", int(typo["id"]), s.alice, s.channel_id)
    asked = await s.wait_for(
        lambda: next((m for m in d.bot_messages(s.channel_id) if "맞춤법 교정" in shown_text(m)), None)
    )
    await d.answer_in(await d.thread_for(int(asked["id"])), "[교정] 맞춤법 이 틀렸 어요.")


CONTEXT = "구름(KULLM)은 고려대학교 NLP & AI 연구실이 만든 한국어 LLM입니다."


@pytest.mark.bot_env(MAX_FILE_BYTES="4000")
async def test_an_attached_text_file_is_the_questions_context_and_others_are_refused(discord_env: Discord) -> None:
    d, s = discord_env, discord_env.standin
    euc_kr = ("회의록.txt", "text/plain", CONTEXT.encode("euc-kr"))
    asked = await s.send_message(s.channel_id, s.alice, d.mention("이 글을 요약해줘"), mention_bot=True, files=[euc_kr])
    await d.answer_in(await d.thread_for(int(asked["id"])), trained.CONTEXT_ANSWER)  # trained on exactly that 맥락
    fetched = s.attachment_downloads
    big = ("big.txt", "text/plain", "가".encode() * 2000)
    await s.send_message(s.channel_id, s.alice, d.mention("이 글을 요약해줘"), mention_bot=True, files=[big])
    await s.wait_for(lambda: any("너무 커요" in shown_text(m) and "4 KB" in shown_text(m) for m in s.messages.values()))
    assert s.attachment_downloads == fetched, "refused by its size, before downloading it"
    binary = ("tool.exe", "application/octet-stream", b"MZ\x90\x00\x03\x00")
    await s.send_message(s.channel_id, s.alice, d.mention("이 글을 요약해줘"), mention_bot=True, files=[binary])
    await s.wait_for(lambda: any("텍스트 파일이 아니에요" in shown_text(m) for m in s.messages.values()))
    assert CONTEXT not in d.bot.log(), "a file's text is not logged"


@pytest.mark.bot_env(PDF_TIMEOUT_S="8")
async def test_another_users_question_is_answered_while_a_pdf_bomb_is_read(discord_env: Discord) -> None:
    d, s = discord_env, discord_env.standin
    name, data = hostile_files.corpus()["text bomb"]  # 89.8 s on the event loop before PDFs had a child process
    await s.send_message(
        s.channel_id, s.alice, d.mention("요약해줘"), mention_bot=True, files=[(name, "application/pdf", data)]
    )
    asked = await s.send_message(s.channel_id, s.bob, d.mention("한국의 수도는 어디야?"), mention_bot=True)
    await d.answer_in(await d.thread_for(int(asked["id"])), trained.CAPITAL)
    refused = [m for m in s.messages.values() if name in shown_text(m) and "너무 복잡해서" in shown_text(m)]
    assert not refused, "Bob's answer came while Alice's PDF was still being read"
    await s.wait_for(
        lambda: any(name in shown_text(m) and "너무 복잡해서" in shown_text(m) for m in s.messages.values())
    )
