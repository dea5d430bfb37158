"""The Slack stand-in speaks the real protocols: a small slack-bolt AsyncApp works against it feature by feature."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
from aiohttp import web
from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient

from testkit.conformance import slack_standin_problems
from testkit.standins.slack import SlackStandIn
from testkit.standins.slack.common import block_errors, sign

pytestmark = pytest.mark.timeout(30)

Connect = Callable[[AsyncApp], Awaitable[AsyncSocketModeHandler]]


def web_client(standin: SlackStandIn) -> AsyncWebClient:
    """A Web API client aimed at the stand-in: base_url must end in "/api/", as slack_sdk joins method names on."""
    return AsyncWebClient(token=standin.bot_token, base_url=standin.api_base)


def make_app(standin: SlackStandIn, **kwargs: Any) -> AsyncApp:
    """A bolt app whose client (and so its Socket Mode handler's client) talks to the stand-in."""
    return AsyncApp(client=web_client(standin), name="standin-test", **kwargs)


@pytest.fixture
async def standin() -> AsyncIterator[SlackStandIn]:
    """A started stand-in, stopped afterwards."""
    server = SlackStandIn()
    await server.start()
    yield server
    await server.stop()
    problems = slack_standin_problems(server)
    assert not problems, "the stand-in departed from Slack's recorded samples:\n" + "\n".join(problems)


@pytest.fixture
async def connect(standin: SlackStandIn) -> AsyncIterator[Connect]:
    """Connect apps over Socket Mode (waiting for the stand-in to accept); every handler is closed at the end."""
    handlers: list[AsyncSocketModeHandler] = []

    async def run(app: AsyncApp) -> AsyncSocketModeHandler:
        # No web_client argument: the handler falls back to app.client, so apps.connections.open goes to the
        # stand-in too (with the app token, which slack_sdk sends as the Bearer token of that one call).
        handler = AsyncSocketModeHandler(app, app_token=standin.app_token)
        handlers.append(handler)
        before = standin.connections
        connect: Callable[[], Awaitable[None]] = handler.connect_async  # slack_bolt leaves it unannotated
        await connect()
        await standin.wait_for(lambda: standin.connections > before, timeout=5.0)
        return handler

    yield run
    for handler in handlers:
        close: Callable[[], Awaitable[None]] = handler.close_async
        await close()


def mention(standin: SlackStandIn, text: str) -> str:
    return f"<@{standin.bot_user_id}> {text}"


async def test_mention_is_answered_in_thread_and_edited(standin: SlackStandIn, connect: Connect) -> None:
    app = make_app(standin)

    @app.event("app_mention")
    async def on_mention(event: dict[str, Any], say: Any, client: AsyncWebClient) -> None:
        # say() does not thread by itself: pass thread_ts (event["thread_ts"] when the mention is already a reply).
        posted = await say(text="생각 중…", thread_ts=event.get("thread_ts") or event["ts"])
        await client.chat_update(channel=posted["channel"], ts=posted["ts"], text="안녕하세요! 구름입니다.")

    await connect(app)
    assert standin.connections == 1
    opened = standin.calls_to("apps.connections.open")
    assert [c.token for c in opened] == [standin.app_token]

    question = await standin.post_user_message(
        standin.channel_id, standin.alice, mention(standin, "안녕?"), mention=True
    )
    replies = await standin.wait_for(
        lambda: [m for m in standin.thread(standin.channel_id, question["ts"]) if m["edits"]]
    )

    assert [(r["text"], r["bot_id"], r["user"]) for r in replies] == [
        ("안녕하세요! 구름입니다.", standin.bot_id, standin.bot_user_id)
    ]
    # bolt's single-workspace authorization calls auth.test lazily, on the first requests (the mention and the
    # channel's message event arrive together), with the bot token.
    assert {c.token for c in standin.calls_to("auth.test")} == {standin.bot_token}
    assert [c.method for c in standin.calls if c.method.startswith("chat.")] == ["chat.postMessage", "chat.update"]
    envelope = standin.envelopes[-1]
    assert envelope["type"] == "events_api" and envelope["payload"]["event"]["type"] == "app_mention"
    assert standin.ack_for(envelope["envelope_id"]) == {"envelope_id": envelope["envelope_id"], "payload": None}
    assert standin.messages[(standin.channel_id, question["ts"])]["reply_count"] == 1


async def test_slash_command_acks_responds_and_posts(standin: SlackStandIn, connect: Connect) -> None:
    app = make_app(standin)

    @app.command("/kullm")
    async def on_kullm(ack: Any, command: dict[str, Any], respond: Any, client: AsyncWebClient) -> None:
        await ack()  # within 3 s; the answer comes later through response_url and the Web API
        await respond(text=f"질문을 받았어요: {command['text']}")  # response_type defaults to ephemeral
        await client.chat_postMessage(channel=command["channel_id"], text=f"<@{command['user_id']}> 님, 서울입니다.")

    @app.command("/kullm-help")
    async def on_help(ack: Any) -> None:
        await ack(text="사용법: /kullm 질문")  # an ack body is shown to the user like an ephemeral response

    await connect(app)
    sent = await standin.slash_command("/kullm", "한국의 수도는?", standin.alice, standin.channel_id)

    assert standin.ack_for(sent["envelope_id"]) is not None
    envelope = standin.envelopes[-1]
    assert envelope["type"] == "slash_commands" and envelope["accepts_response_payload"] is True
    assert envelope["payload"]["user_name"] == "alice" and envelope["payload"]["channel_name"] == "kullm"
    await standin.wait_for(lambda: standin.ephemerals and standin.calls_to("chat.postMessage"))
    [ephemeral] = standin.ephemerals
    assert ephemeral["text"] == "질문을 받았어요: 한국의 수도는?"
    assert (ephemeral["user"], ephemeral["channel"], ephemeral["via"]) == (
        standin.alice,
        standin.channel_id,
        "response_url",
    )
    assert ephemeral["response_url"] == sent["response_url"]
    [posted] = [m for m in standin.messages.values() if m.get("bot_id")]
    assert posted["text"] == f"<@{standin.alice}> 님, 서울입니다." and posted["thread_ts"] is None

    helped = await standin.slash_command("/kullm-help", "", standin.bob, standin.channel_id)
    ack = standin.ack_for(helped["envelope_id"])
    assert ack is not None and ack["payload"] == {"text": "사용법: /kullm 질문"}
    assert standin.ephemerals[-1]["via"] == "ack" and standin.ephemerals[-1]["user"] == standin.bob


async def test_retried_event_is_recognisable(standin: SlackStandIn, connect: Connect) -> None:
    app = make_app(standin)
    seen: list[tuple[str, str, str]] = []

    @app.event("message")
    async def on_message(body: dict[str, Any], request: Any) -> None:
        # Socket Mode retries surface as the HTTP-mode headers. Slack sends retry_attempt 0 on a first delivery,
        # so x-slack-retry-num is present then too ("0"): test its value, not its presence. Dedupe on event_id.
        retry_num = request.headers.get("x-slack-retry-num", ["0"])[0]
        retry_reason = request.headers.get("x-slack-retry-reason", [""])[0]
        seen.append((body["event_id"], retry_num, retry_reason))

    await connect(app)
    first = await standin.post_user_message(standin.dm_channel_id, standin.alice, "안녕", event_id="Ev0RETRY01")
    again = await standin.post_user_message(
        standin.dm_channel_id, standin.alice, "안녕", event_id="Ev0RETRY01", retry_attempt=1
    )

    assert again is first  # a retry re-sends the same event; no second message appears
    assert [(e["retry_attempt"], e["retry_reason"]) for e in standin.envelopes] == [(0, ""), (1, "timeout")]
    assert standin.envelopes[0]["payload"]["event"]["channel_type"] == "im"
    await standin.wait_for(lambda: len(seen) == 2)
    assert seen == [("Ev0RETRY01", "0", ""), ("Ev0RETRY01", "1", "timeout")]
    assert len(standin.messages) == 1


async def test_rate_limited_update_is_retried_after_retry_after(standin: SlackStandIn, connect: Connect) -> None:
    app = make_app(standin)
    # Off by default: without it a 429 raises SlackApiError("ratelimited") at once.
    app.client.retry_handlers.append(AsyncRateLimitErrorRetryHandler(max_retry_count=1))

    @app.event("app_mention")
    async def on_mention(event: dict[str, Any], client: AsyncWebClient) -> None:
        posted = await client.chat_postMessage(channel=event["channel"], thread_ts=event["ts"], text="…")
        await client.chat_update(channel=event["channel"], ts=posted["ts"], text="다 됐어요")

    await connect(app)
    standin.fail_next("chat.update", retry_after=1)
    question = await standin.post_user_message(standin.channel_id, standin.bob, mention(standin, "요약"), mention=True)
    [reply] = await standin.wait_for(
        lambda: [m for m in standin.thread(standin.channel_id, question["ts"]) if m["edits"]]
    )

    assert reply["text"] == "다 됐어요"
    updates = standin.calls_to("chat.update")
    assert [c.status for c in updates] == [429, 200]
    assert updates[1].at - updates[0].at >= 1.0  # Retry-After seconds plus up to 1 s of jitter

    plain = web_client(standin)  # no retry handler: the error surfaces, with the header to honour
    standin.fail_next("chat.postMessage", retry_after=7)
    with pytest.raises(SlackApiError) as raised:
        await plain.chat_postMessage(channel=standin.channel_id, text="x")
    assert raised.value.response.status_code == 429
    assert raised.value.response["error"] == "ratelimited"
    assert raised.value.response.headers["Retry-After"] == "7"


async def test_shortcut_modal_and_button(standin: SlackStandIn, connect: Connect) -> None:
    app = make_app(standin)
    submitted: list[str] = []
    clicks: list[tuple[str, str, str]] = []

    @app.shortcut("ask_kullm")
    async def on_shortcut(ack: Any, shortcut: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        # trigger_id is single-use and expires 3 s after the click: open the modal before any slow work.
        where = {"channel": shortcut["channel"]["id"], "ts": shortcut["message"]["ts"]}
        await client.views_open(
            trigger_id=shortcut["trigger_id"],
            view={
                "type": "modal",
                "callback_id": "ask_modal",
                "private_metadata": json.dumps(where),
                "title": {"type": "plain_text", "text": "KULLM에게 묻기"},
                "submit": {"type": "plain_text", "text": "보내기"},
                "blocks": [
                    {
                        "type": "input",
                        "block_id": "question",
                        "label": {"type": "plain_text", "text": "질문"},
                        "element": {"type": "plain_text_input", "action_id": "text"},
                    }
                ],
            },
        )

    @app.view("ask_modal")
    async def on_submit(ack: Any, view: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        text = view["state"]["values"]["question"]["text"]["value"]
        submitted.append(text)
        where = json.loads(view["private_metadata"])
        button = {
            "type": "button",
            "action_id": "regenerate",
            "value": "again",
            "text": {"type": "plain_text", "text": "다시"},
        }
        await client.chat_postMessage(
            channel=where["channel"],
            thread_ts=where["ts"],
            text=f"질문: {text}",
            blocks=[
                {"type": "section", "block_id": "answer", "text": {"type": "mrkdwn", "text": f"*질문:* {text}"}},
                {"type": "actions", "block_id": "buttons", "elements": [button]},
            ],
        )

    @app.action("regenerate")
    async def on_click(ack: Any, body: dict[str, Any], action: dict[str, Any]) -> None:
        await ack()
        clicks.append((body["user"]["id"], action["value"], action["block_id"]))

    await connect(app)
    # No message listener: bolt answers the event 404 and never acks it; Slack would retry it.
    message = await standin.post_user_message(standin.channel_id, standin.alice, "이것 좀 봐줘", expect_ack=False)
    shortcut = await standin.message_shortcut("ask_kullm", message, standin.alice, standin.channel_id)
    assert standin.ack_for(shortcut["envelope_id"]) is not None
    [opened] = await standin.wait_for(lambda: standin.views)
    assert opened["trigger_id"] == shortcut["trigger_id"] and opened["view"]["callback_id"] == "ask_modal"

    await standin.submit_view(opened["view"], {"question": {"text": "한국의 수도는?"}}, standin.alice)
    [answer] = await standin.wait_for(lambda: standin.thread(standin.channel_id, message["ts"]))
    assert submitted == ["한국의 수도는?"] and answer["text"] == "질문: 한국의 수도는?"

    await standin.click_button(standin.channel_id, answer["ts"], "regenerate", "again", standin.bob)
    await standin.wait_for(lambda: clicks)
    assert clicks == [(standin.bob, "again", "buttons")]
    assert not [a for a in standin.acks if a["envelope_id"] == standin.envelopes[0]["envelope_id"]]


async def test_disconnect_reconnects_and_keeps_delivering(standin: SlackStandIn, connect: Connect) -> None:
    app = make_app(standin)
    received: list[str] = []

    @app.event("message")
    async def on_message(event: dict[str, Any]) -> None:
        received.append(event["text"])

    await connect(app)
    await standin.post_user_message(standin.dm_channel_id, standin.alice, "첫 번째")
    await standin.disconnect()
    assert standin.connections == 2
    assert [c.token for c in standin.calls_to("apps.connections.open")] == [standin.app_token] * 2

    await standin.post_user_message(standin.dm_channel_id, standin.alice, "두 번째")
    await standin.wait_for(lambda: len(received) == 2)
    assert received == ["첫 번째", "두 번째"]


async def test_own_messages_echo_is_acked_and_ignored(standin: SlackStandIn, connect: Connect) -> None:
    app = make_app(standin)
    received: list[dict[str, Any]] = []

    @app.event("message")
    async def on_message(event: dict[str, Any], say: Any) -> None:
        received.append(event)
        await say(text="메아리")

    await connect(app)
    standin.echo_own_messages = True  # real Slack sends the bot its own posts when it subscribes to message.*
    await standin.post_user_message(standin.dm_channel_id, standin.alice, "안녕")
    await standin.wait_for(lambda: len(standin.envelopes) == 2 and standin.ack_for(standin.envelopes[1]["envelope_id"]))
    echo = standin.envelopes[1]["payload"]["event"]
    assert (echo["bot_id"], echo["text"]) == (standin.bot_id, "메아리")
    await asyncio.sleep(0.1)
    assert [e["user"] for e in received] == [standin.alice]  # bolt's IgnoringSelfEvents acks the echo and drops it


async def test_not_in_channel_and_other_web_api_errors(standin: SlackStandIn) -> None:
    client = web_client(standin)
    with pytest.raises(SlackApiError) as raised:
        await client.chat_postMessage(channel=standin.other_channel_id, text="hi")
    assert raised.value.response["error"] == "not_in_channel"
    assert standin.calls[-1].method == "chat.postMessage" and standin.calls[-1].status == 200

    # The project's manifest asks for no reactions scope: Slack refuses, naming what is needed.
    with pytest.raises(SlackApiError) as refused:
        await client.reactions_add(channel=standin.channel_id, timestamp="1.000000", name="eyes")
    assert refused.value.response["error"] == "missing_scope"
    assert "reactions:write" in refused.value.response["needed"].split(",")
    assert set(refused.value.response["provided"].split(",")) == standin.granted
    assert "users:read" in standin.granted, "granted by the manifest: /kullm-설정 asks whether someone is an admin"
    standin.granted |= {"channels:read", "im:read", "users:read", "channels:history", "reactions:write"}
    info = await client.conversations_info(channel=standin.other_channel_id)
    assert info["channel"]["is_member"] is False
    im = await client.conversations_info(channel=standin.dm_channel_id)
    assert im["channel"]["is_im"] is True and im["channel"]["user"] == standin.alice
    alice = await client.users_info(user=standin.alice)
    assert alice["user"]["profile"]["display_name"] == "앨리스"

    async def error_of(call: Awaitable[Any]) -> str:
        with pytest.raises(SlackApiError) as failed:
            await call
        return str(failed.value.response["error"])

    assert (
        await error_of(client.chat_update(channel=standin.channel_id, ts="1.000001", text="x")) == "message_not_found"
    )
    assert await error_of(client.api_call("chat.frobnicate")) == "unknown_method"
    assert await error_of(client.views_open(trigger_id="made-up", view={"type": "modal"})) == "invalid_trigger_id"
    section = {"type": "section", "text": {"type": "mrkdwn", "text": "가" * 3001}}
    assert await error_of(client.chat_postMessage(channel=standin.channel_id, text="x", blocks=[section])) == (
        "invalid_blocks"
    )
    assert block_errors([{"type": "markdown", "text": "**굵게** 와 `코드`"}]) == []
    assert await error_of(AsyncWebClient(token="xoxb-wrong", base_url=standin.api_base).auth_test()) == "invalid_auth"
    assert await error_of(AsyncWebClient(token=standin.app_token, base_url=standin.api_base).auth_test()) == (
        "not_allowed_token_type"
    )

    parent = await client.chat_postMessage(channel=standin.channel_id, text="부모")
    await client.chat_postMessage(channel=standin.channel_id, thread_ts=parent["ts"], markdown_text="**답**")
    await client.reactions_add(channel=standin.channel_id, timestamp=parent["ts"], name="eyes")
    replies = await client.conversations_replies(channel=standin.channel_id, ts=parent["ts"])
    assert [m["text"] for m in replies["messages"]] == ["부모", "**답**"]
    assert replies["messages"][1]["blocks"] == [{"type": "markdown", "text": "**답**"}]
    assert replies["messages"][0]["reactions"] == [{"name": "eyes", "users": [standin.bot_user_id], "count": 1}]
    link = await client.chat_getPermalink(channel=standin.channel_id, message_ts=parent["ts"])
    assert link["permalink"].endswith(f"/archives/{standin.channel_id}/p{parent['ts'].replace('.', '')}")


async def test_http_mode_checks_signatures(standin: SlackStandIn) -> None:
    app = AsyncApp(signing_secret=standin.signing_secret, client=web_client(standin), name="standin-http")

    @app.command("/kullm")
    async def on_kullm(ack: Any, command: dict[str, Any]) -> None:
        await ack(text=f"접수: {command['text']}")

    runner = web.AppRunner(app.web_app(path="/slack/events"), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/slack/events"
        payload = standin.slash_command_payload("/kullm", "서울 날씨", standin.alice, standin.channel_id)
        body = urlencode(payload).encode()
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        now = int(time.time())
        async with aiohttp.ClientSession() as session:
            async with session.post(url, data=body, headers={**form, **sign(standin.signing_secret, body, now)}) as ok:
                # A text-only ack is answered as a text/plain body (Socket Mode wraps it as {"text": ...}).
                assert (ok.status, ok.content_type) == (200, "text/plain")
                assert await ok.text() == "접수: 서울 날씨"
            forged = sign("not-the-secret", body, now)
            async with session.post(url, data=body, headers={**form, **forged}) as bad:
                assert bad.status == 401
            stale = sign(standin.signing_secret, body, now - 600)  # bolt allows 5 minutes of clock skew
            async with session.post(url, data=body, headers={**form, **stale}) as old:
                assert old.status == 401
    finally:
        await runner.cleanup()
    assert [c.token for c in standin.calls_to("auth.test")] == [standin.bot_token]
