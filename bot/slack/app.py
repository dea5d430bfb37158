"""The Slack listeners (slack-bolt): `/kullm`, the settings command, mentions, DMs, the "Ask KULLM" and task
shortcuts, the form, stop and vote buttons, and the assistant pane. Thin transport: each listener acks,
validates and hands an `Asked` question and a `SlackOrigin` to the shared `Relay`, which refuses, posts and edits
through `SlackSurface` (`bot.slack.surface`)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import re
from dataclasses import replace
from typing import Any, Literal

from slack_bolt.async_app import AsyncApp, AsyncAssistant
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.knowledge.asking import knowledge_question
from bot.knowledge.service import ACTIONS, Action
from bot.relay import Relay
from bot.settings import SlackSettings
from bot.slack.blocks import CANCEL_ACTION, CONTEXT_IN_METADATA, FEEDBACK_ACTION, MODAL_ID, VOTE_ACTION, ask_modal
from bot.slack.knowledge import SlackKnowledge
from bot.slack.manifest import ASK_SHORTCUT as SHORTCUT_ID
from bot.slack.manifest import TASK_SHORTCUTS
from bot.slack.reading import MENTION, SlackReader
from bot.slack.surface import SlackSurface
from bot.slack.targets import SlackOrigin, SlackTarget
from bot.surface import Asked, Source
from bot.texts import LANGUAGES, persona_forms, text
from bot.workspace import (
    FileRefused,
    is_summary_request,
)
from chatbus import Bus, Task

log = logging.getLogger(__name__)


# `persona <action>` in either language's words (`/kullm-설정 페르소나 정하기 …`, `/kullm-settings persona set …`),
# and 설정 as people also type it.
PERSONA_WORDS = frozenset(text("cmd_persona", language) for language in LANGUAGES)


PERSONA_ACTIONS = {
    text(f"cmd_{action}", language): action for action in ("show", "set", "clear") for language in LANGUAGES
}


PERSONA_ACTIONS["설정"] = "set"


# `지식 켜기|끄기|상태|잊기` (`knowledge on|off|status|forget`).
KNOWLEDGE_WORDS = frozenset(text("cmd_knowledge", language) for language in LANGUAGES)
KNOWLEDGE_ACTIONS: dict[str, Action] = {
    text(f"cmd_{action}", language): action for action in ACTIONS for language in LANGUAGES
}


# Typed alone in an assistant pane thread while its answer streams: stop it.
STOP_WORDS = frozenset(text("cancel_button", language).lower() for language in LANGUAGES)


TITLE_CHARS = 60  # an assistant thread's title, from its first question


class KullmSlack:
    """The bolt app and its listeners, with the bus and Web API client injected."""

    def __init__(self, settings: SlackSettings, bus: Bus, client: AsyncWebClient, team_id: str = "") -> None:
        self.settings = settings
        self.bus = bus
        self.client = client
        self.language: Any = settings.bot_language
        self.reader = SlackReader(client, settings)
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
            sessions=settings.slack_agent_sessions,
        )
        self.surface = surface
        self.relay: Relay[SlackOrigin, SlackTarget] = Relay(bus, surface, settings)
        self.knowledge = SlackKnowledge(client, settings, bus, self.relay, self.reader)
        self.app.command("/kullm")(self.on_command)
        self.app.command(self.settings.settings_command)(self.on_settings)
        self.app.event("app_mention")(self.on_mention)
        self.app.event("message")(self.on_message)
        self.app.shortcut(SHORTCUT_ID)(self.on_shortcut)
        for callback_id in TASK_SHORTCUTS:
            self.app.shortcut(callback_id)(self.on_task_shortcut)
        self.app.view(MODAL_ID)(self.on_modal)
        self.app.action(CANCEL_ACTION)(self.on_cancel)
        self.app.event("agent_session_stopped")(self.on_session_stopped)
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
        """`/kullm-설정 페르소나` (보기), `… 정하기 <text>`, `… 지우기`, and `/kullm-설정 지식 켜기|끄기|상태|잊기`
        (or the English words): all but showing by admins only."""
        await ack()
        if not await self.relay.first_delivery(f"command:{command.get('trigger_id')}"):
            return
        user, channel, name = command["user_id"], command["channel_id"], self.settings.settings_command
        words = command.get("text", "").strip().split(maxsplit=2)
        action = (words[1] if len(words) > 1 else "show").lower()
        if words and words[0].lower() in KNOWLEDGE_WORDS:
            reply = await self._knowledge_setting(user, channel, words[1].lower() if len(words) > 1 else "")
        elif not words or words[0].lower() not in PERSONA_WORDS or action not in PERSONA_ACTIONS:
            reply = self._settings_usage()
        elif action != "show" and not await self._is_admin(user):
            reply = text("persona_admins_only", self.language, who=text("slack_admins", self.language))
        else:
            instructions = words[2] if len(words) > 2 else ""
            reply = await self.relay.personas.command(name, channel, user, PERSONA_ACTIONS[action], instructions)
        await respond(text=reply, response_type="ephemeral")

    async def _knowledge_setting(self, user: str, channel: str, word: str) -> str:
        action = KNOWLEDGE_ACTIONS.get(word or text("cmd_status", self.language))
        if action is None:
            return self._settings_usage()
        if action != "status" and not await self._is_admin(user):
            return text("knowledge_admins_only", self.language, who=text("slack_admins", self.language))
        return await self.knowledge.command(channel, user, action)

    def _settings_usage(self) -> str:
        name = self.settings.settings_command
        persona = text("persona_usage", self.language, **persona_forms(name, self.language))
        words = "|".join(text(f"cmd_{action}", self.language) for action in ACTIONS)
        knowledge = f"/{name.lstrip('/')} {text('cmd_knowledge', self.language)} {words}"
        return f"{persona}\n{text('knowledge_usage', self.language, knowledge=knowledge)}"

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
        question = MENTION.sub("", event.get("text", "")).strip()
        if event.get("thread_ts") and is_summary_request(question):  # `@KULLM 요약` in a thread
            transcript = await self.reader.transcript(channel, event["thread_ts"], until=event["ts"])
            sources = await self.reader.message_source(channel, event["thread_ts"], "thread")
            await self._ask_task(origin, "summarize", transcript, sources)
            return
        files = event.get("files") or []
        context = await self._files_text(origin, files)
        if context is None:
            return
        if not question and context:
            question = text("file_question", self.language)
        if not question:  # said in the thread for everyone: how to ask
            await self.client.chat_postMessage(
                channel=channel, thread_ts=origin.thread_ts, text=text("usage_slack", self.language)
            )
            return
        sources = self.reader.file_sources(files)
        await self._ask(origin, Asked(user, question, context, bool(event.get("thread_ts")), sources=sources))

    async def on_message(self, body: dict[str, Any], event: dict[str, Any]) -> None:
        # Direct messages are questions (a file shared in the DM is 맥락); what is said in channels reaches the bot as
        # app_mention when it is asked, and is otherwise kept where the channel's knowledge is on.
        if event.get("channel_type") in ("channel", "group"):
            await self.knowledge.on_event(event)
            return
        if event.get("channel_type") != "im" or event.get("subtype") not in (None, "file_share") or event.get("bot_id"):
            return
        if not await self._first_delivery(body):
            return
        channel, user = event["channel"], event.get("user", "")
        question = MENTION.sub("", event.get("text", "")).strip()
        origin = SlackOrigin("dm", channel, user)
        files = event.get("files") or []
        context = await self._files_text(origin, files)
        if context is None:
            return
        question = question or (text("file_question", self.language) if context else "")
        asked = Asked(user, question, context, continues=True, sources=self.reader.file_sources(files))
        await self._ask(origin, asked, usage=text("usage_slack", self.language))

    async def on_shortcut(self, ack: Any, shortcut: dict[str, Any]) -> None:
        await ack()
        message = shortcut.get("message", {})
        chosen = await self.reader.plain(message.get("text", ""))
        metadata = {
            "channel": shortcut["channel"]["id"],
            "thread_ts": message.get("thread_ts") or message.get("ts"),
            "ts": message.get("ts"),
            "context": chosen[:CONTEXT_IN_METADATA],
        }
        await self.client.views_open(trigger_id=shortcut["trigger_id"], view=ask_modal(metadata, chosen, self.language))

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
                await self.relay.refuse(origin, text("no_thread", self.language))
                return
            context = await self.reader.transcript(channel, thread_ts)
            sources = await self.reader.message_source(channel, thread_ts, "thread")
        else:
            files = await self._files_text(origin, message.get("files") or [])
            if files is None:
                return
            context = "\n\n".join(part for part in (await self.reader.plain(message.get("text", "")), files) if part)
            sources = await self.reader.message_source(channel, str(message.get("ts") or ""), "message")
            sources += self.reader.file_sources(message.get("files") or [])
        await self._ask_task(origin, task, context, sources)

    async def _ask_task(self, origin: SlackOrigin, task: Task, context: str, sources: tuple[Source, ...]) -> None:
        label = text(f"task_{task}", self.language)
        if not context.strip():
            await self.relay.refuse(origin, text("task_empty", self.language, task=label))
            return
        await self._ask(origin, Asked(origin.user, label, context, task=task, sources=sources))

    async def _files_text(self, origin: SlackOrigin, files: list[dict[str, Any]]) -> str | None:
        """The text of the files shared with a question; None after a refusal was shown (too large, not text)."""
        try:
            return await self.reader.files_text(files)
        except FileRefused as refused:
            await self.relay.refuse(origin, refused.notice)
            return None

    async def on_modal(self, ack: Any, body: dict[str, Any], view: dict[str, Any]) -> None:
        await ack()
        metadata = json.loads(view.get("private_metadata") or "{}")
        question = view["state"]["values"]["question"]["value"]["value"].strip()
        user = body["user"]["id"]
        origin = SlackOrigin("modal", metadata["channel"], user, thread_ts=metadata["thread_ts"])
        ts = str(metadata.get("ts") or "")
        sources = await self.reader.message_source(origin.channel, ts, "message") if ts else ()
        await self._ask(origin, Asked(user, question, metadata["context"], sources=sources))

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
        await self.bus.answers.cancel(question_id, by=await self.reader.name(user))
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
        question = MENTION.sub("", payload.get("text", "")).strip()
        origin = SlackOrigin("pane", channel, user, thread_ts=thread_ts)
        if question.lower() in STOP_WORDS and await self._stop_in_pane(channel, thread_ts, user):
            return
        files = payload.get("files") or []
        context = await self._files_text(origin, files)
        if context is None:
            return
        sources = self.reader.file_sources(files)
        if context and is_summary_request(question):  # a file shared with "요약": summarised part by part
            await self._ask_task(origin, "summarize", context, sources)
            return
        question = question or (text("file_question", self.language) if context else "")
        if question and not await self.relay.history(f"{channel}:{thread_ts}"):  # the first: it names the thread
            with contextlib.suppress(SlackApiError):
                await set_title(question[:TITLE_CHARS])
        asked = Asked(user, question, context, continues=True, sources=sources)
        await self._ask(origin, asked, usage=text("usage_slack", self.language))

    async def _stop_in_pane(self, channel: str, thread_ts: str, user: str) -> bool:
        """ "그만" (or "stop") typed in a pane thread whose answer is streaming stops it: a stream carries no
        button. False when nothing of this user's is being answered there (then it is a question like any)."""
        return await self._stop_thread(channel, thread_ts, user, "the pane") is True

    async def on_session_stopped(self, body: dict[str, Any], event: dict[str, Any]) -> None:
        """Slack's stop button on an agent session: the thread's answer stops like by our own stop button (its asker
        only; anyone else is told so). Slack changes no status itself: with nothing left to stop, the session is
        active again; a stopped answer closes it when its end is posted (`SlackSurface.ended`)."""
        if not await self._first_delivery(body):
            return
        channel, thread_ts, user = event["channel"], str(event.get("thread_ts") or ""), event.get("user", "")
        self.surface.streams_stopped([str(ts) for ts in event.get("streaming_message_ts") or []])
        stopped = await self._stop_thread(channel, thread_ts, user, "the session's stop button")
        if stopped is False:
            notice = text("cancel_not_yours", self.language)
            await self.client.chat_postEphemeral(channel=channel, user=user, text=notice, thread_ts=thread_ts or None)
        elif stopped is None:
            await self.surface.sessions.set(channel, thread_ts, "active")

    async def _stop_thread(self, channel: str, thread_ts: str, user: str, how: str) -> bool | None:
        """Stop the answer in flight in a thread if `user` asked it: True; False when it is someone else's; None
        when nothing is being answered there."""
        conversation = f"{channel}:{thread_ts}"
        record = await self.relay.record_at(lambda target: target.conversation == conversation)
        if record is None or await self.relay.record_for(record.question_id) is None:
            return None
        if record.user != user:
            return False
        await self.bus.answers.cancel(record.question_id, by=await self.reader.name(user))
        log.info("slack question %s: stopped from %s", record.question_id, how)
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
            await self.relay.refuse(origin, usage)
        elif allowed and origin.channel not in allowed:
            await self.relay.refuse(origin, text("not_allowed", self.language))
        else:
            if origin.kind in ("command", "modal", "action"):  # its post quotes the asker by name
                origin = replace(origin, name=await self.reader.name(origin.user))
            asking = knowledge_question(asked.question) if asked.task == "ask" and not asked.context else None
            if asking is not None:  # "찾아줘: …", `/kullm 찾기: …`: from the channels' history
                await self.knowledge.ask_workspace(origin, asking)
                return
            await self.relay.ask(origin, dataclasses.replace(asked, channel=origin.channel))

    async def _first_delivery(self, body: dict[str, Any]) -> bool:
        """Slack retries events it thinks were missed: answer each event id once."""
        event_id = body.get("event_id") or body.get("event", {}).get("client_msg_id") or body.get("event", {}).get("ts")
        return await self.relay.first_delivery(str(event_id))
