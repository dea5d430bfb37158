"""Slack's agent sessions end to end: each answer thread is a session whose status follows its question, Slack's own
stop button on it stops the answer (its asker's only), and workspaces without sessions carry on as before."""

from __future__ import annotations

import html

import pytest

from bot.slack.sessions import session_title
from testkit import trained
from testkit.controls import stop_button_on
from testkit.shown import without_footer
from testkit.standins.slack import SlackStandIn
from tests import test_slack
from tests.test_slack import CONTEXT, Slack
from tests.test_tasks import THREAD

pytestmark = pytest.mark.e2e

slack_env_fixture = test_slack.slack_env_fixture  # the fixture: Slack's stand-in, the app, a scripted worker


def test_a_sessions_title_is_the_questions_first_line_within_slacks_limit() -> None:
    assert session_title("\n  배포 날짜가 언제지?\n자세히") == "배포 날짜가 언제지?"
    assert len(session_title("가" * 500)) == 200 and session_title("가" * 500).endswith("…")


def statuses(sl: Slack, where: tuple[str, str]) -> list[str]:
    return [status for key, status in sl.standin.session_history if key == where]


async def test_each_answer_thread_is_a_session_whose_status_follows_the_question(slack_env_fixture: Slack) -> None:
    sl, s = slack_env_fixture, slack_env_fixture.standin
    asked = await s.post_user_message(s.channel_id, s.alice, sl.mention("내 이름은 민수야"), mention=True)
    thread = (s.channel_id, asked["ts"])
    await sl.answer_in_thread(*thread, trained.NAME_ANSWER)
    await s.wait_for(lambda: statuses(sl, thread) == ["processing", "active"])
    session = s.sessions[thread]
    assert session["title"] == "내 이름은 민수야" and session["initiator"] == s.alice, "titled from the question"
    # A follow-up in the same thread: the same session, processing again, then active; its title stays.
    follow_up = sl.mention("내 이름이 뭐라고 했지?")
    await s.post_user_message(s.channel_id, s.alice, follow_up, thread_ts=asked["ts"], mention=True)
    await s.wait_for(lambda: any(without_footer(m["text"]) == trained.HISTORY_ANSWER for m in s.thread(*thread)), 60)
    await s.wait_for(lambda: statuses(sl, thread) == ["processing", "active"] * 2)
    assert s.sessions[thread]["title"] == "내 이름은 민수야"
    # The assistant pane's thread is a session too, beside the pane's own status line.
    pane_ts = await s.open_assistant_thread(s.alice)
    pane = (s.dm_channel_id, pane_ts)
    await s.wait_for(lambda: s.suggested_prompts.get(pane))
    await s.post_user_message(s.dm_channel_id, s.alice, "내 이름은 민수야", thread_ts=pane_ts)
    await sl.answer_in_thread(*pane, trained.NAME_ANSWER)
    await s.wait_for(lambda: statuses(sl, pane) == ["processing", "active"])
    assert [st for key, st in s.status_history if key == pane][:1] == ["생각하는 중…"], "the pane's line as before"
    warned = [c for c in s.calls_to("agents.sessions.setStatus") if c.response and c.response.get("warning")]
    assert warned == [], "the manifest subscribes agent_session_stopped: Slack's stop button works"


async def test_a_session_stays_processing_while_any_answer_in_its_thread_runs(
    slack_env_fixture: Slack,
) -> None:
    """Bob asks in the thread while Alice's long answer is still streaming: his answer ending does not mark the
    session active under her running one; the last answer to end does."""
    sl, s = slack_env_fixture, slack_env_fixture.standin
    asked, placeholder = await sl.long_answer_streaming()
    thread = (s.channel_id, asked["ts"])
    quick = sl.mention("한국의 수도는 어디야?")
    await s.post_user_message(s.channel_id, s.bob, quick, thread_ts=asked["ts"], mention=True)
    await s.wait_for(lambda: any(without_footer(m["text"]) == trained.CAPITAL for m in s.thread(*thread)), 60)
    assert stop_button_on(placeholder), "Alice's answer is still being written"
    assert "active" not in statuses(sl, thread) and s.sessions[thread]["status"] == "processing"
    await s.wait_for(lambda: not stop_button_on(placeholder), 60)
    await s.wait_for(lambda: statuses(sl, thread)[-1:] == ["active"])


async def test_slacks_stop_button_stops_the_askers_answer_and_closes_the_session(slack_env_fixture: Slack) -> None:
    """The session's stop button: someone else's click is refused (seen only by them) and the answer goes on; the
    asker's stops it like our own button, the text so far kept with who stopped it, and the session closes."""
    sl, s = slack_env_fixture, slack_env_fixture.standin
    asked, placeholder = await sl.long_answer_streaming()
    thread = (s.channel_id, asked["ts"])
    await s.stop_agent_session(*thread, s.bob)
    await s.wait_for(lambda: any("질문한 사람이나 관리자만" in e.get("text", "") for e in s.ephemerals))
    edits = placeholder["edits"]
    await s.wait_for(lambda: placeholder["edits"] > edits, 20)  # still being written
    assert stop_button_on(placeholder) and s.sessions[thread]["status"] == "processing"
    await s.stop_agent_session(*thread, s.alice)
    final = await s.wait_for(lambda: placeholder if not stop_button_on(placeholder) else None)
    assert final["text"].endswith("⏹️ 앨리스 님이 답변을 멈췄어요.")
    assert final["text"].startswith(trained.LONG_STORY[:20]), "the text so far stays"
    await s.wait_for(lambda: statuses(sl, thread)[-1:] == ["closed"])


async def test_in_the_pane_slacks_stop_button_ends_the_stream_and_the_answer(slack_env_fixture: Slack) -> None:
    """Slack stops the pane's stream itself when its stop button is clicked: the worker stops too, and the text so
    far is edited into the streamed message with who stopped it."""
    sl, s = slack_env_fixture, slack_env_fixture.standin
    pane, streamed = await sl.pane_answer_streaming()
    event = await s.stop_agent_session(*pane, s.alice)
    assert event["streaming_message_ts"] == [streamed["ts"]]
    await s.wait_for(lambda: html.unescape(streamed["text"]).endswith("⏹️ 앨리스 님이 답변을 멈췄어요."))
    assert html.unescape(streamed["text"]).startswith(trained.LONG_STORY[:20])
    await s.wait_for(lambda: statuses(sl, pane)[-1:] == ["closed"])


async def test_where_slack_has_no_agent_sessions_the_pane_and_our_messages_carry_on(slack_env_fixture: Slack) -> None:
    sl, s = slack_env_fixture, slack_env_fixture.standin
    s.agent_sessions = False  # the app is not an agent in this workspace
    for _ in range(2):
        asked = await s.post_user_message(s.channel_id, s.alice, sl.mention("내 이름은 민수야"), mention=True)
        await sl.answer_in_thread(s.channel_id, asked["ts"], trained.NAME_ANSWER)
    refused = s.calls_to("agents.sessions.setStatus")
    assert [c.response["error"] for c in refused if c.response] == ["not_allowed"], "asked once, then not again"
    assert s.sessions == {}


@pytest.mark.bot_env(SLACK_AGENT_SESSIONS="0")
async def test_agent_sessions_can_be_turned_off(slack_env_fixture: Slack) -> None:
    sl, s = slack_env_fixture, slack_env_fixture.standin
    asked = await s.post_user_message(s.channel_id, s.alice, sl.mention("내 이름은 민수야"), mention=True)
    await sl.answer_in_thread(s.channel_id, asked["ts"], trained.NAME_ANSWER)
    assert s.calls_to("agents.sessions.setStatus") == []


def permalink_of(s: SlackStandIn, name: str) -> str:
    return str(next(shared for shared, _ in s.files.values() if shared["name"] == name)["permalink"])


@pytest.mark.worker_env(context_window=700, max_new_tokens=250)  # the file is summarised in 3 parts
async def test_a_summary_in_the_pane_streams_its_parts_and_its_file_as_task_cards(slack_env_fixture: Slack) -> None:
    s = slack_env_fixture.standin
    thread_ts = await s.open_assistant_thread(s.alice)
    pane = (s.dm_channel_id, thread_ts)
    await s.wait_for(lambda: s.suggested_prompts.get(pane))
    notes = ("회의록.txt", "text/plain", "\n".join(THREAD).encode())
    await s.post_user_message(s.dm_channel_id, s.alice, "요약", thread_ts=thread_ts, files=[notes])
    streamed = await s.wait_for(
        lambda: next((m for m in s.thread(*pane) if m.get("streamed") and not m["streaming"] and m["text"]), None), 60
    )
    assert without_footer(html.unescape(streamed["text"])).startswith("합친 요약(")
    read = streamed["tasks"]["source-0"]
    assert read["title"] == "📎 회의록.txt 읽음" and read["status"] == "complete"
    assert read["sources"] == [{"type": "url", "url": permalink_of(s, "회의록.txt"), "text": "회의록.txt"}]
    sent = [
        chunk
        for call in s.calls_to("chat.startStream") + s.calls_to("chat.appendStream") + s.calls_to("chat.stopStream")
        for chunk in call.args.get("chunks") or []
        if chunk["type"] == "task_update" and chunk["id"] == "parts"
    ]
    assert sent[0]["status"] == "in_progress" and sent[0]["title"].endswith("/3 읽는 중"), "the parts as they are read"
    assert sent[-1] == {"type": "task_update", "id": "parts", "title": "3개 부분을 모두 읽었어요", "status": "complete"}
    assert [c.args.get("task_display_mode") for c in s.calls_to("chat.startStream")] == ["timeline"]
    assert "회의록" not in [m.get("text") for m in s.thread(*pane) if m.get("bot_id") and m is not streamed]


async def test_an_answer_edited_in_a_channel_names_its_sources_under_it(slack_env_fixture: Slack) -> None:
    """Where the answer is edited into a message (a channel), its sources are a line under it, linked; a hostile
    file name neither breaks the link nor notifies anyone."""
    sl, s = slack_env_fixture, slack_env_fixture.standin
    name = "회의록|<!here>.txt"
    asked = await s.post_user_message(
        s.channel_id,
        s.alice,
        sl.mention("이 글을 요약해줘"),
        mention=True,
        files=[(name, "text/plain", CONTEXT.encode())],
    )
    answer = await sl.answer_in_thread(s.channel_id, asked["ts"], trained.CONTEXT_ANSWER)
    line = next(b for b in answer["blocks"] if b["type"] == "context")["elements"][0]["text"]
    assert line == f"📎 출처: <{permalink_of(s, name)}|회의록/&lt;!here&gt;.txt>"
    source = await s.post_user_message(s.channel_id, s.bob, "안녕하세요. 만나서 반갑습니다.")
    await s.message_shortcut("kullm_translate", source, s.alice, s.channel_id)
    answer = await sl.answer_in_thread(s.channel_id, source["ts"], "[EN] 안녕하세요. 만나서 반갑습니다.")
    line = next(b for b in answer["blocks"] if b["type"] == "context")["elements"][0]["text"]
    link = f"https://kullm-test.slack.com/archives/{s.channel_id}/p{source['ts'].replace('.', '')}"
    assert line == f"📎 출처: <{link}|메시지>", "the message the shortcut was used on"


@pytest.mark.bot_env(MAX_FILE_BYTES="4000")
async def test_files_shared_in_the_pane_pass_the_same_guards(slack_env_fixture: Slack) -> None:
    """The pane reads files now: one too large is refused before it is downloaded, one that is not text is
    refused, each told in the pane's thread, and nothing is queued."""
    s = slack_env_fixture.standin
    thread_ts = await s.open_assistant_thread(s.alice)
    pane = (s.dm_channel_id, thread_ts)
    await s.wait_for(lambda: s.suggested_prompts.get(pane))
    big = ("big.txt", "text/plain", "가".encode() * 2000)
    await s.post_user_message(s.dm_channel_id, s.alice, "요약", thread_ts=thread_ts, files=[big])
    await s.wait_for(lambda: any("너무 커요" in m.get("text", "") for m in s.thread(*pane) if m.get("bot_id")))
    assert s.file_downloads == 0, "refused by its size, before downloading it"
    image = ("photo.png", "image/png", b"\x89PNG\r\n\x1a\n\x00\x00")
    await s.post_user_message(s.dm_channel_id, s.alice, "이 글을 요약해줘", thread_ts=thread_ts, files=[image])
    await s.wait_for(
        lambda: any("텍스트 파일이 아니에요" in m.get("text", "") for m in s.thread(*pane) if m.get("bot_id"))
    )
    assert s.calls_to("chat.startStream") == [] and s.sessions == {}, "nothing was asked"
