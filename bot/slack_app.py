"""The Slack adapter (slack-bolt): `/kullm`, mentions, DMs and the "KULLM에게 묻기" shortcut, answered in threads.

Thin transport: listeners ack, validate and hand the question to the shared `Relay`, which
posts and edits the answer through `SlackSurface`. Model output is escaped for Slack, so
`<!channel>`, `<!here>` and user mentions in it never notify anyone.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient

from bot.formatting import slack_escape, to_slack_mrkdwn
from bot.relay import PlaceholderGone, Relay
from bot.settings import SlackSettings
from bot.texts import text
from chatbus import Bus
from chatbus.messages import new_question_id

log = logging.getLogger(__name__)

# One message: Slack shows up to ~4,000 characters well; a section block holds 3,000.
MESSAGE_LIMIT = 3000
SHORTCUT_ID = "kullm_ask"
MODAL_ID = "kullm_ask_modal"
CANCEL_ACTION = "kullm_cancel"
CONTEXT_IN_METADATA = 2500  # private_metadata holds 3,000 characters
_MENTION = re.compile(r"<@[A-Z0-9]+>")
_NOT_IN_CHANNEL = {"not_in_channel", "channel_not_found", "is_archived"}


class SlackSurface:
    """Posts and edits answers with chat.postMessage / chat.update."""

    platform = "slack"
    max_chars = MESSAGE_LIMIT

    def __init__(self, client: AsyncWebClient, edit_interval_s: float, language: str) -> None:
        self.client = client
        self.edit_interval_s = edit_interval_s
        self.language = language

    async def edit(self, target: dict[str, str], content: str, *, final: bool) -> None:
        shown = to_slack_mrkdwn(content)
        blocks = [] if final else answer_blocks(shown, target["question"], self.language)
        async with _gone_on(GONE_ON_UPDATE):
            await self.client.chat_update(channel=target["channel"], ts=target["ts"], text=shown, blocks=blocks)

    async def post_more(self, target: dict[str, str], content: str) -> None:
        async with _gone_on(GONE_ON_POST):
            await self.client.chat_postMessage(
                channel=target["channel"], thread_ts=target.get("thread_ts") or None, text=to_slack_mrkdwn(content)
            )

    def working(self, target: dict[str, str]) -> AbstractAsyncContextManager[None]:
        return nullcontext()  # Slack has no typing indicator for bots


# Slack's errors that mean the placeholder (or the place to post) is gone for good.
GONE_ON_POST = frozenset({"channel_not_found", "is_archived", "not_in_channel", "thread_not_found"})
GONE_ON_UPDATE = GONE_ON_POST | {"message_not_found", "cant_update_message"}


@asynccontextmanager
async def _gone_on(errors: frozenset[str]) -> AsyncIterator[None]:
    try:
        yield
    except SlackApiError as exc:
        if exc.response.get("error") in errors:
            raise PlaceholderGone(str(exc.response.get("error"))) from exc
        raise


def answer_blocks(shown: str, question_id: str, language: str) -> list[dict[str, Any]]:
    """The placeholder while streaming: the text so far and a "그만" button."""
    return [
        {"type": "section", "text": {"type": "mrkdwn", "text": shown[:3000] or "…"}},
        {
            "type": "actions",
            "block_id": "kullm_controls",
            "elements": [
                {
                    "type": "button",
                    "action_id": CANCEL_ACTION,
                    "value": question_id,
                    "text": {"type": "plain_text", "text": "⏹️ " + text("cancel_button", language)},  # type: ignore[arg-type]
                }
            ],
        },
    ]


class KullmSlack:
    """The bolt app and its listeners, with the bus and relay injected."""

    def __init__(self, settings: SlackSettings, bus: Bus, client: AsyncWebClient) -> None:
        self.settings = settings
        self.bus = bus
        self.client = client
        self.language: Any = settings.bot_language
        signing = settings.slack_signing_secret.get_secret_value() if settings.slack_signing_secret else None
        self.app = AsyncApp(
            client=client,
            signing_secret=signing,
            request_verification_enabled=settings.slack_mode == "http",
            process_before_response=False,
        )
        self.relay = Relay(bus, SlackSurface(client, settings.slack_edit_interval_s, settings.bot_language), settings)
        self.app.command("/kullm")(self.on_command)
        self.app.event("app_mention")(self.on_mention)
        self.app.event("message")(self.on_message)
        self.app.shortcut(SHORTCUT_ID)(self.on_shortcut)
        self.app.view(MODAL_ID)(self.on_modal)
        self.app.action(CANCEL_ACTION)(self.on_cancel)

    # ------------------------------------------------------------------ listeners

    async def on_command(self, ack: Any, command: dict[str, Any], respond: Any) -> None:
        await ack()
        # Each invocation has its own trigger_id: a replayed request (same body and signature) asks nothing.
        if not await self.relay.first_delivery(f"command:{command.get('trigger_id')}"):
            log.warning("slack: a /kullm request was delivered twice (replayed?): ignored")
            return
        user, channel, question = command["user_id"], command["channel_id"], command.get("text", "").strip()
        if not question:
            await respond(text("usage_slack", self.language), response_type="ephemeral")
            return
        refusal = self._channel_refusal(channel) or await self.relay.refusal(user, question)
        if refusal:
            await respond(refusal, response_type="ephemeral")
            return
        shown = question if len(question) <= 2900 else question[:2899] + "…"
        try:
            asked = await self.client.chat_postMessage(
                channel=channel, text=text("asked_by_slack", self.language, user=user, question=slack_escape(shown))
            )
        except SlackApiError as exc:
            if exc.response.get("error") in _NOT_IN_CHANNEL:
                await respond(text("invite_slack", self.language), response_type="ephemeral")
                return
            raise
        await self._answer(channel, str(asked["ts"]), user, question, "", history_key=None)

    async def on_mention(self, body: dict[str, Any], event: dict[str, Any]) -> None:
        if not await self._first_delivery(body):
            return
        channel, user = event["channel"], event.get("user", "")
        thread_ts = event.get("thread_ts") or event["ts"]
        question = _MENTION.sub("", event.get("text", "")).strip()
        await self._ask_in_thread(channel, thread_ts, user, question, continues=bool(event.get("thread_ts")))

    async def on_message(self, body: dict[str, Any], event: dict[str, Any]) -> None:
        # Only direct messages: channel messages reach the bot as app_mention.
        if event.get("channel_type") != "im" or event.get("subtype") or event.get("bot_id"):
            return
        if not await self._first_delivery(body):
            return
        channel, user = event["channel"], event.get("user", "")
        question = _MENTION.sub("", event.get("text", "")).strip()
        refusal = self._question_refusal(question) or self._channel_refusal(channel)
        refusal = refusal or await self.relay.refusal(user, question)
        if refusal:
            await self.client.chat_postMessage(channel=channel, text=refusal)
            return
        history = await self.relay.history(channel)
        await self._answer(channel, None, user, question, "", history_key=channel, history=history)

    async def on_shortcut(self, ack: Any, shortcut: dict[str, Any]) -> None:
        await ack()
        message = shortcut.get("message", {})
        metadata = {
            "channel": shortcut["channel"]["id"],
            "thread_ts": message.get("thread_ts") or message.get("ts"),
            "context": message.get("text", "")[:CONTEXT_IN_METADATA],
        }
        await self.client.views_open(trigger_id=shortcut["trigger_id"], view=self._modal(metadata))

    async def on_modal(self, ack: Any, body: dict[str, Any], view: dict[str, Any]) -> None:
        await ack()
        metadata = json.loads(view.get("private_metadata") or "{}")
        question = view["state"]["values"]["question"]["value"]["value"].strip()
        user = body["user"]["id"]
        channel, thread_ts = metadata["channel"], metadata["thread_ts"]
        refusal = self._channel_refusal(channel) or await self.relay.refusal(user, question, metadata["context"])
        if refusal:
            await self.client.chat_postEphemeral(channel=channel, user=user, text=refusal)
            return
        await self.client.chat_postMessage(
            channel=channel,
            thread_ts=thread_ts,
            text=text("asked_by_slack", self.language, user=user, question=slack_escape(question)),
        )
        await self._answer(channel, thread_ts, user, question, metadata["context"], history_key=None)

    async def on_cancel(self, ack: Any, body: dict[str, Any], action: dict[str, Any]) -> None:
        await ack()
        user, question_id = body["user"]["id"], action["value"]
        record = await self.relay.record_for(question_id)
        channel = body.get("channel", {}).get("id")
        if record is None or record.user != user:
            notice = text("answer_gone" if record is None else "cancel_not_yours", self.language)
            if channel:
                await self.client.chat_postEphemeral(channel=channel, user=user, text=notice)
            return
        await self.bus.request_cancel(question_id)
        log.info("slack question %s: cancelled by button", question_id)

    # ------------------------------------------------------------------ helpers

    async def _ask_in_thread(self, channel: str, thread_ts: str, user: str, question: str, continues: bool) -> None:
        refusal = self._question_refusal(question) or self._channel_refusal(channel)
        refusal = refusal or await self.relay.refusal(user, question)
        if refusal:
            if question:
                await self.client.chat_postEphemeral(channel=channel, user=user, text=refusal, thread_ts=thread_ts)
            else:
                await self.client.chat_postMessage(channel=channel, thread_ts=thread_ts, text=refusal)
            return
        key = f"{channel}:{thread_ts}"
        history = await self.relay.history(key) if continues else []
        await self._answer(channel, thread_ts, user, question, "", history_key=key, history=history)

    async def _answer(
        self,
        channel: str,
        thread_ts: str | None,
        user: str,
        question: str,
        context: str,
        *,
        history_key: str | None,
        history: list[Any] | None = None,
    ) -> None:
        """Post the placeholder (in the thread) and hand the question to the relay."""
        question_id = new_question_id()
        placeholder = await self.relay.placeholder()
        posted = await self.client.chat_postMessage(
            channel=channel,
            thread_ts=thread_ts,
            text=placeholder,
            blocks=answer_blocks(placeholder, question_id, self.settings.bot_language),
        )
        target = {"channel": channel, "ts": str(posted["ts"]), "thread_ts": thread_ts or "", "question": question_id}
        thread = history_key or (f"{channel}:{thread_ts}" if thread_ts else channel)
        await self.relay.submit(
            target,
            user=user,
            question=question,
            context=context,
            thread=thread,
            history=history or [],
            question_id=question_id,
        )

    async def _first_delivery(self, body: dict[str, Any]) -> bool:
        """Slack retries events it thinks were missed: answer each event id once."""
        event_id = body.get("event_id") or body.get("event", {}).get("client_msg_id") or body.get("event", {}).get("ts")
        return await self.relay.first_delivery(str(event_id))

    def _question_refusal(self, question: str) -> str | None:
        return text("usage_slack", self.language) if not question else None

    def _channel_refusal(self, channel: str) -> str | None:
        allowed = self.settings.allowed_channel_ids
        return text("not_allowed", self.language) if allowed and channel not in allowed else None

    def _modal(self, metadata: dict[str, str]) -> dict[str, Any]:
        return {
            "type": "modal",
            "callback_id": MODAL_ID,
            "private_metadata": json.dumps(metadata, ensure_ascii=False),
            "title": {"type": "plain_text", "text": text("modal_title", self.language)},
            "submit": {"type": "plain_text", "text": text("modal_submit", self.language)},
            "blocks": [
                {
                    "type": "input",
                    "block_id": "question",
                    "label": {"type": "plain_text", "text": text("modal_label", self.language)},
                    "element": {"type": "plain_text_input", "action_id": "value", "multiline": True},
                }
            ],
        }


def web_client(settings: SlackSettings) -> AsyncWebClient:
    """The Web API client: rate-limited calls (429) are retried after Retry-After."""
    assert settings.slack_bot_token is not None
    kwargs: dict[str, Any] = {"token": settings.slack_bot_token.get_secret_value()}
    if settings.slack_api_base:
        kwargs["base_url"] = settings.slack_api_base
    client = AsyncWebClient(**kwargs)
    client.retry_handlers.append(AsyncRateLimitErrorRetryHandler(max_retry_count=5))
    return client


def http_app(kullm: KullmSlack, port: int) -> Any:
    """The aiohttp application of HTTP mode: bolt's, behind a gate that refuses what Slack never sends.

    bolt parses a body before it checks its signature, so a malformed unsigned body made it fail
    with a 500. The gate checks the signature first (401 for unsigned, forged or stale requests) and
    answers an undecodable body 400; only then does bolt see the request.
    """
    from aiohttp import web
    from slack_sdk.signature import SignatureVerifier

    secret = kullm.settings.slack_signing_secret
    verifier = SignatureVerifier(secret.get_secret_value() if secret else "")

    @web.middleware
    async def gate(request: web.Request, handler: Any) -> web.StreamResponse:
        body = await request.read()
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return web.Response(status=400, text="the request body is not UTF-8")
        if not verifier.is_valid_request(text, dict(request.headers)):
            return web.Response(status=401, text="invalid request signature")
        try:
            response: web.StreamResponse = await handler(request)
        except ValueError:  # a signed body bolt cannot parse
            return web.Response(status=400, text="malformed request body")
        return response

    app = kullm.app.web_app(path="/slack/events", port=port)
    app.middlewares.append(gate)
    return app
