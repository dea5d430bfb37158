"""The Slack adapter (slack-bolt): `/kullm`, mentions, DMs and the "Ask KULLM" shortcut, answered in threads.

Thin transport: listeners ack, validate and hand an `Asked` question and a `SlackOrigin` to
the shared `Relay`, which refuses, posts and edits through `SlackSurface`. Model output is
escaped for Slack, so `<!channel>`, `<!here>` and user mentions in it never notify anyone.
`run_slack` is the process (Socket Mode, or HTTP with SLACK_MODE=http): `kullm slack` or
`python -m bot slack`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import html
import json
import logging
import re
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from dataclasses import dataclass, replace
from typing import Any, Literal

import aiohttp
from aiohttp import web
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp, AsyncAssistant
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from bot.formatting import split_message
from bot.mrkdwn import slack_escape, to_slack_mrkdwn
from bot.pdf_text import PdfReader
from bot.process import load_settings
from bot.relay import Relay
from bot.settings import SlackSettings
from bot.slack_manifest import ASK_SHORTCUT as SHORTCUT_ID
from bot.slack_manifest import TASK_SHORTCUTS
from bot.surface import Asked, CannotPost, PlaceholderGone
from bot.texts import LANGUAGES, loading_messages, persona_forms, quote_of, text
from bot.workspace import (
    MAX_THREAD_MESSAGES,
    FileRefused,
    check_size,
    file_text,
    files_context,
    is_summary_request,
    transcript,
    transcript_line,
)
from chatbus import Bus, Task
from runtime.exits import EXIT_CONFIG, EXIT_OK
from runtime.http_guard import ConnectionGuard
from runtime.signals import on_stop_signal

log = logging.getLogger(__name__)
# `persona <action>` in either language's words (`/kullm-설정 페르소나 정하기 …`, `/kullm-settings persona set …`),
# and 설정 as people also type it.
PERSONA_WORDS = frozenset(text("cmd_persona", language) for language in LANGUAGES)
PERSONA_ACTIONS = {
    text(f"cmd_{action}", language): action for action in ("show", "set", "clear") for language in LANGUAGES
}
PERSONA_ACTIONS["설정"] = "set"
# Typed alone in an assistant pane thread while its answer streams: stop it.
STOP_WORDS = frozenset(text("cancel_button", language).lower() for language in LANGUAGES)

# One message: Slack shows up to ~4,000 characters well; a section block holds 3,000.
MESSAGE_LIMIT = 3000
SECTION_LIMIT = 3000
# The question as the "asked by" line quotes it: room is left in the message for the line's own words.
QUOTED_QUESTION_CHARS = 2900
# <@U123>, <#C123|name>, <https://…|label>, <!here>: how Slack marks up people, channels, links and broadcasts.
_MARKUP = re.compile(r"<([@#!])?([^|>]+)(?:\|([^>]*))?>")
MODAL_ID = "kullm_ask_modal"
CANCEL_ACTION = "kullm_cancel"
VOTE_ACTION = "kullm_vote"  # kullm_vote_up, kullm_vote_down: plain buttons, where Slack lacks feedback_buttons
FEEDBACK_ACTION = "kullm_feedback"  # Slack's feedback_buttons element; its value is "up:<question id>" or "down:…"
MODAL_QUOTE_CHARS = 300  # how much of the chosen message the form quotes
MODAL_PLACEHOLDER_CHARS = 150  # Slack's cap on an input's placeholder
CONTEXT_IN_METADATA = 2500  # private_metadata holds 3,000 characters
STATUS_CHARS = 100  # the assistant pane's status line is short
TITLE_CHARS = 60  # an assistant thread's title, from its first question
STREAM_REFUSED = "off"  # SlackTarget.stream when chat.startStream was refused for that answer
HTTP_KEEPALIVE_TIMEOUT_S = 15.0  # HTTP mode: an idle keep-alive connection is closed after this
_MENTION = re.compile(r"<@[A-Z0-9]+>")
_NOT_IN_CHANNEL = {"not_in_channel", "channel_not_found", "is_archived"}

SLACK_APPS = "https://api.slack.com/apps"
SLACK_MISSING = {
    "SLACK_BOT_TOKEN": "your app → OAuth & Permissions → Bot User OAuth Token (xoxb-…)",
    "SLACK_APP_TOKEN": "your app → Basic Information → App-Level Tokens, with the connections:write scope (xapp-…)",
    "SLACK_SIGNING_SECRET": "your app → Basic Information → App Credentials → Signing Secret",
}


@dataclass(frozen=True)
class SlackTarget:
    """A placeholder message, the thread it is in ("" for a DM's top level), its question's id and asker, and
    the answer's streamed message once there is one.

    Native streaming (chat.startStream) writes the answer into a message of its own below the placeholder,
    which keeps the stop button while the answer streams and is deleted when it is finished. `stream` is that
    message's ts, or STREAM_REFUSED when Slack would not stream this answer (it is edited into the placeholder
    instead); `streaming` is "1" while the stream is open. A stream this process cannot continue (the adapter
    restarted, or the worker started the answer over) is stopped, and the streamed message is then edited
    with chat.update like a placeholder.
    """

    channel: str
    ts: str
    thread_ts: str
    question: str
    user: str = ""
    stream: str = ""
    streaming: str = ""
    pane: str = ""  # "1" in the assistant pane: no placeholder; the status line says it waits

    @property
    def conversation(self) -> str:
        return f"{self.channel}:{self.thread_ts}" if self.thread_ts else self.channel

    @property
    def answer_ts(self) -> str:
        """The message an edit goes to: a stopped stream's, else the placeholder (also while a stream is open)."""
        return self.stream if self.stream not in ("", STREAM_REFUSED) and not self.streaming else self.ts

    def to_fields(self) -> dict[str, str]:
        fields = {"channel": self.channel, "ts": self.ts, "thread_ts": self.thread_ts, "question": self.question}
        return fields | {"user": self.user, "stream": self.stream, "streaming": self.streaming, "pane": self.pane}


@dataclass(frozen=True)
class SlackOrigin:
    """Where a question was asked, which decides where refusals and the placeholder go."""

    kind: Literal["command", "mention", "dm", "modal", "pane", "action"]
    channel: str
    user: str
    thread_ts: str | None = None  # the thread asked in (a mention, the shortcut's message)
    respond: Any = None  # a slash command's `respond`: refusals go to its response_url, seen only by the asker
    name: str = ""  # the asker's display name, for the line quoting what they asked (no mention: nobody is pinged)


class SlackSurface:
    """Refuses, posts and edits answers with chat.postEphemeral, chat.postMessage and chat.update, and streams
    them with chat.startStream / appendStream / stopStream where Slack allows it (see SlackTarget)."""

    platform = "slack"
    max_chars = MESSAGE_LIMIT
    footer_style = "_{}_"  # italics in mrkdwn

    def __init__(
        self, client: AsyncWebClient, edit_interval_s: float, language: str, *, native: bool = True, team_id: str = ""
    ) -> None:
        self.client = client
        self.edit_interval_s = edit_interval_s
        self.language: Any = language
        self.native = native
        self.team_id = team_id
        self._appended: dict[str, str] = {}  # an open stream's ts → the answer text this process appended to it
        self.native_feedback = True  # False once Slack refused feedback_buttons: plain buttons from then on

    def target(self, fields: Mapping[str, str]) -> SlackTarget:
        optional = {k: fields.get(k, "") for k in ("user", "stream", "streaming", "pane")}
        return SlackTarget(fields["channel"], fields["ts"], fields.get("thread_ts", ""), fields["question"], **optional)

    async def refuse(self, origin: SlackOrigin, notice: str) -> None:
        if origin.kind == "pane":  # the asker's own DM thread with the app
            await self.client.chat_postMessage(channel=origin.channel, thread_ts=origin.thread_ts, text=notice)
        elif origin.kind == "command":
            await origin.respond(notice, response_type="ephemeral")
        elif origin.kind == "dm":
            await self.client.chat_postMessage(channel=origin.channel, text=notice)
        else:  # seen only by the asker: in the thread of a mention, at the channel's top level from the modal
            thread_ts = origin.thread_ts if origin.kind == "mention" else None
            await self.client.chat_postEphemeral(
                channel=origin.channel, user=origin.user, text=notice, thread_ts=thread_ts
            )

    async def post_placeholder(
        self, origin: SlackOrigin, asked: Asked, content: str, question_id: str, *, ahead: int = 0
    ) -> SlackTarget:
        pane = "1" if origin.kind == "pane" else ""
        if pane and self.native:
            # The pane's status line says the question waits (where in the queue, when others are ahead), with
            # Slack's rotating loading messages; the answer then streams in as the one message (Slack clears the
            # status at that reply).
            if ahead:
                status = text("status_waiting", self.language, ahead=ahead)
            else:
                status = text("status_thinking", self.language)
            await self.set_status(origin.channel, origin.thread_ts or "", status, loading=True)
            return SlackTarget(origin.channel, "", origin.thread_ts or "", question_id, user=origin.user, pane=pane)
        thread_ts = origin.thread_ts
        if origin.kind == "command":
            thread_ts = await self._quote(origin, asked)  # at the channel's top level: its post starts the thread
        elif origin.kind in ("modal", "action"):
            await self._quote(origin, asked)  # in the thread of the message asked about (or acted on)
        posted = await self.client.chat_postMessage(
            channel=origin.channel,
            thread_ts=thread_ts,
            text=content,
            blocks=answer_blocks(content, question_id, self.language),
        )
        return SlackTarget(origin.channel, str(posted["ts"]), thread_ts or "", question_id, user=origin.user, pane=pane)

    async def set_status(self, channel: str, thread_ts: str, status: str, *, loading: bool = False) -> None:
        """The assistant pane's status line under a thread, which Slack shows after the app's name ("KULLM is
        thinking…"; "" clears it), with rotating loading messages when `loading`; a failure only loses the status."""
        lines = loading_messages(self.language) if loading else None
        try:
            await self.client.assistant_threads_setStatus(
                channel_id=channel, thread_ts=thread_ts, status=status, loading_messages=lines
            )
        except SlackApiError as exc:
            log.info("slack: assistant.threads.setStatus failed (%s)", _error(exc))

    async def _quote(self, origin: SlackOrigin, asked: Asked) -> str:
        """Post "<user> asked: …" where the answer's thread is (or starts); returns the post's ts."""
        shown = asked.question
        if len(shown) > QUOTED_QUESTION_CHARS:
            shown = shown[: QUOTED_QUESTION_CHARS - 1] + "…"
        quote = quote_of(
            slack_escape(origin.name or origin.user), slack_escape(shown), asked.task, self.language, slack=True
        )
        try:
            posted = await self.client.chat_postMessage(channel=origin.channel, thread_ts=origin.thread_ts, text=quote)
        except SlackApiError as exc:
            if exc.response.get("error") in _NOT_IN_CHANNEL:
                raise CannotPost(text("invite_slack", self.language)) from exc
            raise
        return str(posted["ts"])

    async def edit(self, target: SlackTarget, content: str, *, final: bool, feedback: str | None = None) -> None:
        shown = to_slack_mrkdwn(content)
        if not target.answer_ts:  # the pane before any message: a final answer or notice is posted, the rest is status
            if final:
                await self.post_part(target, content, target.question, final=True, feedback=feedback)
            else:
                await self.set_status(target.channel, target.thread_ts, content[:STATUS_CHARS])
            return
        on_placeholder = target.answer_ts == target.ts
        if final:

            async def update(votes: dict[str, Any] | None) -> None:
                blocks = [_section(shown), votes] if votes else []
                await self.client.chat_update(channel=target.channel, ts=target.answer_ts, text=shown, blocks=blocks)

            async with _gone_on(GONE_ON_UPDATE):
                await self._with_feedback(update, feedback)
            return
        blocks = answer_blocks(shown, target.question, self.language) if on_placeholder else []
        async with _gone_on(GONE_ON_UPDATE):
            await self.client.chat_update(channel=target.channel, ts=target.answer_ts, text=shown, blocks=blocks)

    async def _with_feedback(self, send: Any, feedback: str | None) -> Any:
        """Call `send` with the vote block for `feedback` (a question id; None: no block): Slack's feedback_buttons,
        or plain buttons where the workspace refuses them (remembered for the process's life)."""
        if not feedback:
            return await send(None)
        if self.native_feedback:
            try:
                return await send(feedback_block(feedback, self.language))
            except SlackApiError as exc:
                if _error(exc) != "invalid_blocks":
                    raise
                log.info("slack: feedback_buttons refused (invalid_blocks): plain vote buttons from now on")
                self.native_feedback = False
        return await send(vote_buttons_block(feedback, self.language))

    async def started(self, target: SlackTarget) -> None:
        if not target.answer_ts:  # the pane, still on its status line: the queue is behind it now
            await self.set_status(target.channel, target.thread_ts, text("status_writing", self.language), loading=True)

    async def stream(self, target: SlackTarget, shown: str) -> tuple[SlackTarget, bool]:
        # Natively streamed in the pane only: there the stream is the one message of the answer. In a channel a
        # placeholder with the stop button is edited instead, so every member sees one message grow (Slack streams
        # a channel message to one recipient, and a stream cannot carry the stop button).
        if target.stream == STREAM_REFUSED or not (self.native and target.pane and target.thread_ts):
            if not target.ts:  # the pane, where Slack would not stream: a placeholder to edit, posted now
                return replace(target, ts=await self._post_controls(target)), False
            return target, False  # a DM's top level, or refused before: the placeholder is edited
        if not target.stream:
            return await self._start_stream(target, shown)
        appended = self._appended.get(target.stream)
        if target.streaming and appended is not None and shown.startswith(appended):
            try:
                if len(shown) > len(appended):
                    await self.client.chat_appendStream(
                        channel=target.channel, ts=target.stream, markdown_text=slack_escape(shown[len(appended) :])
                    )
                    self._appended[target.stream] = shown
                return target, True
            except SlackApiError as exc:
                log.info("slack: the stream cannot go on (%s): editing the streamed message", _error(exc))
        if target.streaming:  # not ours to continue (a restarted adapter), or the answer started over
            target = await self._stop_stream(target)
        return target, False

    async def finish(self, target: SlackTarget, answer: str, feedback: str | None = None) -> bool:
        if target.stream in ("", STREAM_REFUSED):
            return False
        appended = self._appended.pop(target.stream, None)
        finished = False
        if target.streaming and appended is not None and answer.startswith(appended):
            rest = slack_escape(answer[len(appended) :])

            async def stop(votes: dict[str, Any] | None) -> None:
                await self.client.chat_stopStream(
                    channel=target.channel,
                    ts=target.stream,
                    markdown_text=rest or None,
                    blocks=[votes] if votes else None,
                )

            try:
                await self._with_feedback(stop, feedback)
                finished = True
            except SlackApiError as exc:
                log.info("slack: could not finish the stream (%s): editing the streamed message", _error(exc))
        if not finished:
            target = await self._stop_stream(target) if target.streaming else target
            pieces = split_message(answer, self.max_chars) or ["…"]
            try:
                await self.edit(target, pieces[0], final=True, feedback=feedback)
            except PlaceholderGone:
                pieces.insert(0, "")  # the streamed message was deleted: all of it goes out fresh
            for piece in pieces[1:]:
                with contextlib.suppress(PlaceholderGone):
                    await self.post_part(target, piece, target.question, final=True)
        if target.ts:
            with contextlib.suppress(SlackApiError):  # the placeholder, with its stop button, is done with
                await self.client.chat_delete(channel=target.channel, ts=target.ts)
        return True

    async def _start_stream(self, target: SlackTarget, shown: str) -> tuple[SlackTarget, bool]:
        try:  # outside a DM, Slack streams to one person: the asker
            started = await self.client.chat_startStream(
                channel=target.channel,
                thread_ts=target.thread_ts,
                markdown_text=slack_escape(shown),
                recipient_user_id=target.user or None,
                recipient_team_id=(self.team_id or None) if target.user else None,
            )
        except SlackApiError as exc:  # a workspace or place that cannot stream: this answer edits the placeholder
            log.info("slack: chat.startStream refused (%s): editing the placeholder instead", _error(exc))
            return replace(target, stream=STREAM_REFUSED), False
        self._appended[str(started["ts"])] = shown
        return replace(target, stream=str(started["ts"]), streaming="1"), True

    async def _post_controls(self, target: SlackTarget) -> str:
        """Post the placeholder with the stop button where the pane could not stream; returns its ts."""
        shown = text("thinking", self.language)
        posted = await self.client.chat_postMessage(
            channel=target.channel,
            thread_ts=target.thread_ts,
            text=shown,
            blocks=answer_blocks(shown, target.question, self.language),
        )
        return str(posted["ts"])

    async def _stop_stream(self, target: SlackTarget) -> SlackTarget:
        """End a stream this process will not append to again; it is edited with chat.update from now on."""
        self._appended.pop(target.stream, None)
        try:
            await self.client.chat_stopStream(channel=target.channel, ts=target.stream)
        except SlackApiError as exc:  # already ended by Slack (idle), or deleted: the edit that follows tells
            log.info("slack: stopping the stream: %s", _error(exc))
        return replace(target, streaming="")

    async def post_part(
        self, target: SlackTarget, content: str, question_id: str, *, final: bool, feedback: str | None = None
    ) -> SlackTarget:
        shown = to_slack_mrkdwn(content)

        async def post(votes: dict[str, Any] | None) -> Any:
            if final:
                blocks = [_section(shown), votes] if votes else None
            else:
                blocks = answer_blocks(shown, question_id, self.language)
            return await self.client.chat_postMessage(
                channel=target.channel, thread_ts=target.thread_ts or None, text=shown, blocks=blocks
            )

        async with _gone_on(GONE_ON_POST):
            posted = await self._with_feedback(post, feedback if final else None)
        return replace(target, ts=str(posted["ts"]), stream="", streaming="")

    async def delete(self, target: SlackTarget) -> None:
        if target.answer_ts:
            with contextlib.suppress(SlackApiError):
                await self.client.chat_delete(channel=target.channel, ts=target.answer_ts)

    def working(self, target: SlackTarget) -> AbstractAsyncContextManager[None]:
        return nullcontext()  # Slack has no typing indicator for bots


def _error(exc: SlackApiError) -> str:
    return str(exc.response.get("error"))


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


def _section(shown: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": shown[:SECTION_LIMIT] or "…"}}


def feedback_block(question_id: str, language: Any) -> dict[str, Any]:
    """Slack's own 👍 / 👎 (feedback_buttons in a context_actions block) under a finished answer."""
    return {
        "type": "context_actions",
        "block_id": "kullm_feedback",
        "elements": [
            {
                "type": "feedback_buttons",
                "action_id": FEEDBACK_ACTION,
                "positive_button": {
                    "text": {"type": "plain_text", "text": text("vote_up_button", language)},
                    "accessibility_label": text("vote_up_label", language),
                    "value": f"up:{question_id}",
                },
                "negative_button": {
                    "text": {"type": "plain_text", "text": text("vote_down_button", language)},
                    "accessibility_label": text("vote_down_label", language),
                    "value": f"down:{question_id}",
                },
            }
        ],
    }


def vote_buttons_block(question_id: str, language: Any) -> dict[str, Any]:
    """👍 / 👎 as plain buttons, where a workspace lacks feedback_buttons."""
    buttons = [
        {
            "type": "button",
            "action_id": f"{VOTE_ACTION}_{vote}",
            "value": question_id,
            "text": {"type": "plain_text", "text": f"{emoji} " + text(f"vote_{vote}_button", language)},
        }
        for vote, emoji in (("up", "👍"), ("down", "👎"))
    ]
    return {"type": "actions", "block_id": "kullm_feedback", "elements": buttons}


def answer_blocks(shown: str, question_id: str, language: Any) -> list[dict[str, Any]]:
    """The placeholder while streaming: the text so far and the stop button."""
    return [
        _section(shown),
        {
            "type": "actions",
            "block_id": "kullm_controls",
            "elements": [
                {
                    "type": "button",
                    "action_id": CANCEL_ACTION,
                    "value": question_id,
                    "text": {"type": "plain_text", "text": "⏹️ " + text("cancel_button", language)},
                }
            ],
        },
    ]


class KullmSlack:
    """The bolt app and its listeners, with the bus and Web API client injected."""

    def __init__(self, settings: SlackSettings, bus: Bus, client: AsyncWebClient, team_id: str = "") -> None:
        self.settings = settings
        self.bus = bus
        self.client = client
        self.language: Any = settings.bot_language
        self.pdfs = PdfReader(settings.pdf_budget())
        signing = settings.slack_signing_secret.get_secret_value() if settings.slack_signing_secret else None
        self.app = AsyncApp(
            client=client,
            signing_secret=signing,
            request_verification_enabled=settings.slack_mode == "http",
            process_before_response=False,
        )
        surface = SlackSurface(
            client,
            settings.slack_edit_interval_s,
            settings.bot_language,
            native=settings.slack_native_streaming,
            team_id=team_id,
        )
        self.relay: Relay[SlackOrigin, SlackTarget] = Relay(bus, surface, settings)
        self.app.command("/kullm")(self.on_command)
        self.app.command(self.settings.settings_command)(self.on_settings)
        self.app.event("app_mention")(self.on_mention)
        self.app.event("message")(self.on_message)
        self.app.shortcut(SHORTCUT_ID)(self.on_shortcut)
        for callback_id in TASK_SHORTCUTS:
            self.app.shortcut(callback_id)(self.on_task_shortcut)
        self._names: dict[str, str] = {}  # user id → display name, for transcripts
        self._bot_user_id = ""
        self.app.view(MODAL_ID)(self.on_modal)
        self.app.action(CANCEL_ACTION)(self.on_cancel)
        # The assistant pane (Slack's AI app surface): a thread per conversation in the user's DM with the app.
        assistant = AsyncAssistant()
        assistant.thread_started(self.on_pane_opened)
        assistant.user_message(self.on_pane_message)
        self.app.use(assistant)
        self.app.action(re.compile(f"^{VOTE_ACTION}_(up|down)$"))(self.on_vote)
        self.app.action(FEEDBACK_ACTION)(self.on_vote)

    # ------------------------------------------------------------------ listeners

    async def on_command(self, ack: Any, command: dict[str, Any], respond: Any) -> None:
        await ack()
        # Each invocation has its own trigger_id: a replayed request (same body and signature) asks nothing.
        if not await self.relay.first_delivery(f"command:{command.get('trigger_id')}"):
            log.warning("slack: a /kullm request was delivered twice (replayed?): ignored")
            return
        user, channel, question = command["user_id"], command["channel_id"], command.get("text", "").strip()
        origin = SlackOrigin("command", channel, user, respond=respond)
        await self._ask(origin, Asked(user, question), usage=text("usage_slack", self.language))

    async def on_settings(self, ack: Any, command: dict[str, Any], respond: Any) -> None:
        """`/kullm-설정 페르소나` (보기), `… 정하기 <text>`, `… 지우기` (or the English words): set and clear by admins
        only."""
        await ack()
        if not await self.relay.first_delivery(f"command:{command.get('trigger_id')}"):
            return
        user, channel, name = command["user_id"], command["channel_id"], self.settings.settings_command
        words = command.get("text", "").strip().split(maxsplit=2)
        action = (words[1] if len(words) > 1 else "show").lower()
        if not words or words[0].lower() not in PERSONA_WORDS or action not in PERSONA_ACTIONS:
            reply = text("persona_usage", self.language, **persona_forms(name, self.language))
        elif action != "show" and not await self._is_admin(user):
            reply = text("persona_admins_only", self.language, who=text("slack_admins", self.language))
        else:
            instructions = words[2] if len(words) > 2 else ""
            reply = await self.relay.personas.command(name, channel, user, PERSONA_ACTIONS[action], instructions)
        await respond(text=reply, response_type="ephemeral")

    async def _is_admin(self, user: str) -> bool:
        """A workspace admin or owner (users.info), or one of SLACK_ADMIN_USER_IDS."""
        if user in self.settings.admin_user_ids:
            return True
        try:
            info = (await self.client.users_info(user=user)).get("user") or {}
        except SlackApiError as exc:
            log.warning("slack: users.info failed (%s): treated as not an admin", exc.response.get("error"))
            return False
        return bool(info.get("is_admin") or info.get("is_owner") or info.get("is_primary_owner"))

    async def on_mention(self, body: dict[str, Any], event: dict[str, Any]) -> None:
        if not await self._first_delivery(body):
            return
        channel, user = event["channel"], event.get("user", "")
        origin = SlackOrigin("mention", channel, user, thread_ts=event.get("thread_ts") or event["ts"])
        question = _MENTION.sub("", event.get("text", "")).strip()
        if event.get("thread_ts") and is_summary_request(question):  # `@KULLM 요약` in a thread
            transcript = await self._transcript(channel, event["thread_ts"], until=event["ts"])
            await self._ask_task(origin, "summarize", transcript)
            return
        context = await self._files_text(origin, event.get("files") or [])
        if context is None:
            return
        if not question and context:
            question = text("file_question", self.language)
        if not question:  # said in the thread for everyone: how to ask
            await self.client.chat_postMessage(
                channel=channel, thread_ts=origin.thread_ts, text=text("usage_slack", self.language)
            )
            return
        await self._ask(origin, Asked(user, question, context, continues=bool(event.get("thread_ts"))))

    async def on_message(self, body: dict[str, Any], event: dict[str, Any]) -> None:
        # Only direct messages: channel messages reach the bot as app_mention. A file shared in the DM is 맥락.
        if event.get("channel_type") != "im" or event.get("subtype") not in (None, "file_share") or event.get("bot_id"):
            return
        if not await self._first_delivery(body):
            return
        channel, user = event["channel"], event.get("user", "")
        question = _MENTION.sub("", event.get("text", "")).strip()
        origin = SlackOrigin("dm", channel, user)
        context = await self._files_text(origin, event.get("files") or [])
        if context is None:
            return
        question = question or (text("file_question", self.language) if context else "")
        asked = Asked(user, question, context, continues=True)
        await self._ask(origin, asked, usage=text("usage_slack", self.language))

    async def on_shortcut(self, ack: Any, shortcut: dict[str, Any]) -> None:
        await ack()
        message = shortcut.get("message", {})
        chosen = await self._plain(message.get("text", ""))
        metadata = {
            "channel": shortcut["channel"]["id"],
            "thread_ts": message.get("thread_ts") or message.get("ts"),
            "context": chosen[:CONTEXT_IN_METADATA],
        }
        await self.client.views_open(trigger_id=shortcut["trigger_id"], view=self._modal(metadata, chosen))

    async def on_task_shortcut(self, ack: Any, shortcut: dict[str, Any]) -> None:
        """스레드 요약 / 한↔영 번역 / 맞춤법 교정 on a message: the answer goes in that message's thread."""
        await ack()
        if not await self.relay.first_delivery(f"shortcut:{shortcut.get('trigger_id')}"):
            return
        task = TASK_SHORTCUTS[shortcut["callback_id"]]
        channel, user, message = shortcut["channel"]["id"], shortcut["user"]["id"], shortcut.get("message") or {}
        thread_ts = str(message.get("thread_ts") or message.get("ts") or "")
        origin = SlackOrigin("action", channel, user, thread_ts=thread_ts)
        if task == "summarize":
            if not message.get("thread_ts") and not message.get("reply_count"):
                await self.relay.surface.refuse(origin, text("no_thread", self.language))
                return
            context = await self._transcript(channel, thread_ts)
        else:
            files = await self._files_text(origin, message.get("files") or [])
            if files is None:
                return
            context = "\n\n".join(part for part in (await self._plain(message.get("text", "")), files) if part)
        await self._ask_task(origin, task, context)

    async def _ask_task(self, origin: SlackOrigin, task: Task, context: str) -> None:
        label = text(f"task_{task}", self.language)
        if not context.strip():
            await self.relay.surface.refuse(origin, text("task_empty", self.language, task=label))
            return
        await self._ask(origin, Asked(origin.user, label, context, task=task))

    # ------------------------------------------------------------------ reading the workspace

    async def _transcript(self, channel: str, thread_ts: str, until: str | None = None) -> str:
        """The thread as `name: text` lines, oldest first (up to `until`, the message asking for it, excluded);
        bots' messages and the bot's own answers only with SUMMARY_INCLUDE_BOTS."""
        if not self._bot_user_id:
            self._bot_user_id = str((await self.client.auth_test()).get("user_id") or "")
        messages: list[dict[str, Any]] = []
        cursor: str | None = None
        while len(messages) < MAX_THREAD_MESSAGES:
            page = await self.client.conversations_replies(channel=channel, ts=thread_ts, cursor=cursor, limit=200)
            messages += page.get("messages") or []
            cursor = (page.get("response_metadata") or {}).get("next_cursor") or None
            if not cursor:
                break
        lines = []
        for message in messages[-MAX_THREAD_MESSAGES:]:
            if until is not None and message.get("ts") == until:
                continue
            from_bot = bool(message.get("bot_id")) or message.get("user") == self._bot_user_id
            if from_bot and not self.settings.summary_include_bots:
                continue
            if is_summary_request(_MENTION.sub("", message.get("text", ""))):  # an earlier `@KULLM 요약`
                continue
            user = str(message.get("user") or "")
            name = await self._name(user) if user else str(message.get("username") or "bot")
            body = await self._plain(message.get("text", ""))
            if body.strip():
                lines.append(transcript_line(name, body))
        return transcript(lines)

    async def _name(self, user: str) -> str:
        """A person's display name (users.info, cached); their id if Slack will not say."""
        if user not in self._names:
            try:
                profile = ((await self.client.users_info(user=user)).get("user") or {}).get("profile") or {}
                self._names[user] = profile.get("display_name") or profile.get("real_name") or user
            except SlackApiError:
                self._names[user] = user
        return self._names[user]

    async def _plain(self, mrkdwn: str) -> str:
        """Slack's markup as a reader sees it: `@name` for people, `#name` for channels, link labels."""
        parts, last = [], 0
        for match in _MARKUP.finditer(mrkdwn):
            parts.append(html.unescape(mrkdwn[last : match.start()]))
            sigil, target, label = match.group(1), match.group(2), match.group(3)
            if sigil == "@":
                parts.append("@" + (label or await self._name(target)))
            elif sigil == "#":
                parts.append("#" + (label or target))
            elif sigil == "!":
                parts.append("@" + (label or target.split("^")[0]))
            else:
                parts.append(label or target)
            last = match.end()
        parts.append(html.unescape(mrkdwn[last:]))
        return "".join(parts)

    async def _files_text(self, origin: SlackOrigin, files: list[dict[str, Any]]) -> str | None:
        """The text of the files shared with a question, read with the bot's token (files:read) and kept only in
        the question; None after a refusal was shown (too large, not text, unreadable)."""
        texts: list[tuple[str, str]] = []
        for shared in files:
            name = str(shared.get("name") or shared.get("title") or "file")
            try:
                check_size(name, int(shared.get("size") or 0), self.settings.max_file_bytes, self.language)
                data = await self._download(str(shared.get("url_private_download") or shared.get("url_private")))
                texts.append(
                    (name, await file_text(name, data, self.settings.max_file_bytes, self.language, self.pdfs))
                )
            except FileRefused as refused:
                await self.relay.surface.refuse(origin, refused.notice)
                return None
        return files_context(texts)

    async def _download(self, url: str) -> bytes:
        """A private file's bytes (at most MAX_FILE_BYTES + 1); FileRefused when Slack will not hand it over."""
        headers = {"Authorization": f"Bearer {self.client.token}"}
        limit = self.settings.max_file_bytes
        try:
            async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as response:
                html_page = response.content_type == "text/html"  # Slack's sign-in page: the token may not read it
                if response.status != 200 or html_page:
                    raise FileRefused(text("file_not_decodable", self.language, name=url.rsplit("/", 1)[-1]))
                return await response.content.read(limit + 1)
        except aiohttp.ClientError as exc:
            log.warning("slack: a shared file could not be fetched (%s)", type(exc).__name__)
            raise FileRefused(text("file_not_decodable", self.language, name=url.rsplit("/", 1)[-1])) from exc

    async def on_modal(self, ack: Any, body: dict[str, Any], view: dict[str, Any]) -> None:
        await ack()
        metadata = json.loads(view.get("private_metadata") or "{}")
        question = view["state"]["values"]["question"]["value"]["value"].strip()
        user = body["user"]["id"]
        origin = SlackOrigin("modal", metadata["channel"], user, thread_ts=metadata["thread_ts"])
        await self._ask(origin, Asked(user, question, metadata["context"]))

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
        await self.bus.queue.request_cancel(question_id, by=await self._name(user))
        log.info("slack question %s: cancelled by button", question_id)

    async def on_pane_opened(self, body: dict[str, Any], set_suggested_prompts: Any) -> None:
        if not await self._first_delivery(body):
            return
        await set_suggested_prompts(
            prompts=self.settings.suggested_prompts, title=text("pane_prompts_title", self.language)
        )

    async def on_pane_message(self, body: dict[str, Any], payload: dict[str, Any], set_title: Any) -> None:
        """A question in the pane: answered in its thread, with the thread's earlier turns as history."""
        if not await self._first_delivery(body):
            return
        channel, user, thread_ts = payload["channel"], payload.get("user", ""), payload["thread_ts"]
        question = _MENTION.sub("", payload.get("text", "")).strip()
        origin = SlackOrigin("pane", channel, user, thread_ts=thread_ts)
        if question.lower() in STOP_WORDS and await self._stop_in_pane(channel, thread_ts, user):
            return
        if question and not await self.relay.history(f"{channel}:{thread_ts}"):  # the first: it names the thread
            with contextlib.suppress(SlackApiError):
                await set_title(question[:TITLE_CHARS])
        await self._ask(origin, Asked(user, question, continues=True), usage=text("usage_slack", self.language))

    async def _stop_in_pane(self, channel: str, thread_ts: str, user: str) -> bool:
        """ "그만" (or "stop") typed in a pane thread whose answer is streaming stops it: a stream carries no
        button. False when nothing of this user's is being answered there (then it is a question like any)."""
        conversation = f"{channel}:{thread_ts}"
        record = await self.relay.record_at(lambda target: target.conversation == conversation)
        if record is None or record.user != user:
            return False
        await self.bus.queue.request_cancel(record.question_id, by=await self._name(user))
        log.info("slack question %s: stopped from the pane", record.question_id)
        return True

    async def on_vote(self, ack: Any, body: dict[str, Any], action: dict[str, Any]) -> None:
        """👍/👎: Slack's feedback_buttons (value "up:<question id>") or the plain buttons (action id `…_up`)."""
        await ack()
        value = str(action.get("value") or "")
        if action["action_id"] == FEEDBACK_ACTION:
            kind, _, question_id = value.partition(":")
        else:
            kind, question_id = ("up" if action["action_id"].endswith("_up") else "down"), value
        vote: Literal["up", "down"] = "up" if kind == "up" else "down"
        user = body["user"]["id"]
        notice = await self.relay.feedback.vote(question_id, user, vote)
        channel = body.get("channel", {}).get("id")
        if channel:
            thread_ts = (body.get("message") or {}).get("thread_ts")
            await self.client.chat_postEphemeral(channel=channel, user=user, text=notice, thread_ts=thread_ts)

    # ------------------------------------------------------------------ helpers

    async def _ask(self, origin: SlackOrigin, asked: Asked, usage: str | None = None) -> None:
        """Refuse an empty question (with `usage`) or one from a channel not allowed; else hand it to the relay."""
        allowed = self.settings.allowed_channel_ids
        if usage and not asked.question:
            await self.relay.surface.refuse(origin, usage)
        elif allowed and origin.channel not in allowed:
            await self.relay.surface.refuse(origin, text("not_allowed", self.language))
        else:
            if origin.kind in ("command", "modal", "action"):  # its post quotes the asker by name
                origin = replace(origin, name=await self._name(origin.user))
            await self.relay.ask(origin, dataclasses.replace(asked, channel=origin.channel))

    async def _first_delivery(self, body: dict[str, Any]) -> bool:
        """Slack retries events it thinks were missed: answer each event id once."""
        event_id = body.get("event_id") or body.get("event", {}).get("client_msg_id") or body.get("event", {}).get("ts")
        return await self.relay.first_delivery(str(event_id))

    def _modal(self, metadata: dict[str, str], chosen: str) -> dict[str, Any]:
        """The form asking about a message: the message quoted, and the question's field with an example."""
        blocks: list[dict[str, Any]] = []
        if chosen.strip():
            shown = chosen.strip()
            shown = shown if len(shown) <= MODAL_QUOTE_CHARS else shown[: MODAL_QUOTE_CHARS - 1] + "…"
            quote = "\n".join(f"&gt; {slack_escape(line)}" for line in shown.splitlines())
            blocks.append(_section(f"*{text('modal_quote', self.language)}*\n{quote}"))
        blocks.append(
            {
                "type": "input",
                "block_id": "question",
                "label": {"type": "plain_text", "text": text("modal_label", self.language)},
                "element": {
                    "type": "plain_text_input",
                    "action_id": "value",
                    "multiline": True,
                    "placeholder": {
                        "type": "plain_text",
                        "text": text("modal_placeholder", self.language)[:MODAL_PLACEHOLDER_CHARS],
                    },
                },
            }
        )
        return {
            "type": "modal",
            "callback_id": MODAL_ID,
            "private_metadata": json.dumps(metadata, ensure_ascii=False),
            "title": {"type": "plain_text", "text": text("modal_title", self.language)},
            "submit": {"type": "plain_text", "text": text("modal_submit", self.language)},
            "blocks": blocks,
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


def http_app(kullm: KullmSlack, port: int) -> web.Application:
    """The aiohttp application of HTTP mode: bolt's, behind a gate that refuses what Slack never sends.

    bolt parses a body before it checks its signature, so a malformed unsigned body made it fail
    with a 500. The gate checks the signature first (401 for unsigned, forged or stale requests) and
    answers an undecodable body 400; only then does bolt see the request.
    """
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


def run_slack() -> int:
    """Start the Slack adapter (Socket Mode by default, HTTP with SLACK_MODE=http) until SIGTERM/SIGINT."""
    settings = load_settings(SlackSettings)
    if settings is None:
        return EXIT_CONFIG
    needed = ["SLACK_BOT_TOKEN", "SLACK_APP_TOKEN" if settings.slack_mode == "socket" else "SLACK_SIGNING_SECRET"]
    for variable in needed:
        if getattr(settings, variable.lower()) is None:
            log.error(_token_error(variable))
            return EXIT_CONFIG
    return asyncio.run(_serve(settings))


def _token_error(variable: str, problem: str = "is not set") -> str:
    return f"{variable} {problem}. Find it at {SLACK_APPS} → {SLACK_MISSING[variable]} and put it in .env."


async def _serve(settings: SlackSettings) -> int:
    client = web_client(settings)
    try:
        identity = await client.auth_test()
    except SlackApiError as exc:
        log.error(_token_error("SLACK_BOT_TOKEN", f"was rejected ({exc.response.get('error')})"))
        return EXIT_CONFIG
    bus = Bus.open(settings.redis_url, settings.redis_password, settings.key_prefix)
    kullm = KullmSlack(settings, bus, client, str(identity.get("team_id") or ""))
    stop = asyncio.Event()
    on_stop_signal(stop.set)
    kullm.relay.start()
    try:
        if settings.slack_mode == "socket":
            return await _serve_socket_mode(kullm, str(identity.get("user")), stop)
        await _serve_http(kullm, stop)
        return EXIT_OK
    finally:
        await kullm.relay.close()
        await bus.aclose()


async def _serve_socket_mode(kullm: KullmSlack, name: str, stop: asyncio.Event) -> int:
    assert kullm.settings.slack_app_token is not None
    handler = AsyncSocketModeHandler(kullm.app, kullm.settings.slack_app_token.get_secret_value())
    try:
        await handler.connect_async()  # type: ignore[no-untyped-call]
    except SlackApiError as exc:
        log.error(_token_error("SLACK_APP_TOKEN", f"was rejected ({exc.response.get('error')})"))
        return EXIT_CONFIG
    log.info("connected to Slack as %s (Socket Mode)", name)
    await stop.wait()
    await handler.close_async()  # type: ignore[no-untyped-call]
    return EXIT_OK


async def _serve_http(kullm: KullmSlack, stop: asyncio.Event) -> None:
    settings = kullm.settings
    runner = web.AppRunner(http_app(kullm, settings.slack_http_port), keepalive_timeout=HTTP_KEEPALIVE_TIMEOUT_S)
    await runner.setup()
    assert runner.server is not None
    listener = await ConnectionGuard().serve(runner.server, settings.slack_http_host, settings.slack_http_port)
    log.info("serving Slack events on %s:%d/slack/events", settings.slack_http_host, settings.slack_http_port)
    await stop.wait()
    listener.close()
    await runner.cleanup()
