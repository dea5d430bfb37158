"""Where answers appear in Slack (`SlackSurface`, the relay's `Surface`): a placeholder edited in place in
channels and threads, Slack's native streaming (chat.startStream/appendStream/stopStream) in the assistant
pane with a fallback to editing when Slack refuses it, the pane's status line, parts of a long answer, and
the stop and vote controls. Model output is escaped for Slack, so `<!channel>`, `<!here>` and user mentions in
it never notify anyone."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from dataclasses import replace
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.formatting import split_message
from bot.slack.blocks import answer_blocks, feedback_block, section, vote_buttons_block
from bot.slack.mrkdwn import slack_escape, to_slack_mrkdwn
from bot.slack.sessions import STATUS_AFTER, AgentSessions
from bot.slack.targets import STREAM_REFUSED, SlackOrigin, SlackTarget
from bot.slack.work import parts_task, source_tasks, sources_block
from bot.surface import Asked, CannotPost, Outcome, PlaceholderGone, decode_sources, encode_sources
from bot.texts import loading_messages, quote_of, text

log = logging.getLogger(__name__)


# One message: Slack shows up to ~4,000 characters well; a section block holds 3,000.
MESSAGE_LIMIT = 3000


# The question as the "asked by" line quotes it: room is left in the message for the line's own words.
QUOTED_QUESTION_CHARS = 2900


STATUS_CHARS = 100  # the assistant pane's status line is short


NOT_IN_CHANNEL = {"not_in_channel", "channel_not_found", "is_archived"}


class SlackSurface:
    """Refuses, posts and edits answers with chat.postEphemeral, chat.postMessage and chat.update, and streams
    them with chat.startStream / appendStream / stopStream where Slack allows it (see SlackTarget)."""

    platform = "slack"
    max_chars = MESSAGE_LIMIT
    footer_style = "_{}_"  # italics in mrkdwn

    def __init__(
        self,
        client: AsyncWebClient,
        edit_interval_s: float,
        language: str,
        *,
        native: bool = True,
        team_id: str = "",
        sessions: bool = True,
    ) -> None:
        self.client = client
        self.sessions = AgentSessions(client, sessions)  # each answer thread as one of Slack's agent sessions
        self.edit_interval_s = edit_interval_s
        self.language: Any = language
        self.native = native
        self.team_id = team_id
        self._appended: dict[str, str] = {}  # an open stream's ts → the answer text this process appended to it
        self._reading: dict[str, int] = {}  # an open stream's ts → how many parts its summary's open card counts
        self.native_feedback = True  # False once Slack refused feedback_buttons: plain buttons from then on

    def target(self, fields: Mapping[str, str]) -> SlackTarget:
        optional = {k: fields.get(k, "") for k in ("user", "stream", "streaming", "pane", "sources")}
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
        target = await self._post_placeholder(origin, asked, content, question_id, ahead=ahead)
        target = replace(target, sources=encode_sources(asked.sources))
        # The thread is a session now (Slack's stop button stops the answer): processing while it waits and is answered.
        title = asked.question if asked.task == "ask" else text(f"task_{asked.task}", self.language)
        await self.sessions.set(target.channel, target.thread_ts, "processing", title=title, user=origin.user)
        return target

    async def _post_placeholder(
        self, origin: SlackOrigin, asked: Asked, content: str, question_id: str, *, ahead: int
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
            log.info("slack: assistant.threads.setStatus failed (%s)", slack_error(exc))

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
            if exc.response.get("error") in NOT_IN_CHANNEL:
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
                blocks = [section(shown), *self._sources_under(target), votes] if votes else []
                await self.client.chat_update(channel=target.channel, ts=target.answer_ts, text=shown, blocks=blocks)

            async with gone_on(GONE_ON_UPDATE):
                await self._with_feedback(update, feedback)
            return
        blocks = answer_blocks(shown, target.question, self.language) if on_placeholder else []
        async with gone_on(GONE_ON_UPDATE):
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
                if slack_error(exc) != "invalid_blocks":
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
        if not self._streams(target):
            if not target.ts:  # the pane, where Slack would not stream: a placeholder to edit, posted now
                return replace(target, ts=await self._post_controls(target)), False
            return target, False  # a DM's top level, or refused before: the placeholder is edited
        if not target.stream:
            return await self._start_stream(target, shown)
        appended = self._appended.get(target.stream)
        if target.streaming and appended is not None and shown.startswith(appended):
            try:
                if len(shown) > len(appended):
                    more = slack_escape(shown[len(appended) :])
                    chunks = self._parts_read(target.stream, more)
                    await self.client.chat_appendStream(
                        channel=target.channel, ts=target.stream, markdown_text=None if chunks else more, chunks=chunks
                    )
                    self._appended[target.stream] = shown
                return target, True
            except SlackApiError as exc:
                log.info("slack: the stream cannot go on (%s): editing the streamed message", slack_error(exc))
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

            cards = self._parts_read(target.stream, rest)

            async def stop(votes: dict[str, Any] | None) -> None:
                await self.client.chat_stopStream(
                    channel=target.channel,
                    ts=target.stream,
                    markdown_text=None if cards else rest or None,
                    chunks=cards,
                    blocks=[votes] if votes else None,
                )

            try:
                await self._with_feedback(stop, feedback)
                finished = True
            except SlackApiError as exc:
                log.info("slack: could not finish the stream (%s): editing the streamed message", slack_error(exc))
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

    async def _start_stream(
        self, target: SlackTarget, shown: str, task: dict[str, Any] | None = None
    ) -> tuple[SlackTarget, bool]:
        """Start the answer's stream with `shown`, after a card per source it read (and `task`, a summary's parts)."""
        cards = source_tasks(decode_sources(target.sources), self.language) + ([task] if task else [])
        text_chunks = [{"type": "markdown_text", "text": slack_escape(shown)}] if shown else []
        try:  # outside a DM, Slack streams to one person: the asker
            started = await self.client.chat_startStream(
                channel=target.channel,
                thread_ts=target.thread_ts,
                markdown_text=None if cards else slack_escape(shown),
                chunks=cards + text_chunks if cards else None,
                task_display_mode="timeline" if cards else None,
                recipient_user_id=target.user or None,
                recipient_team_id=(self.team_id or None) if target.user else None,
            )
        except SlackApiError as exc:  # a workspace or place that cannot stream: this answer edits the placeholder
            log.info("slack: chat.startStream refused (%s): editing the placeholder instead", slack_error(exc))
            return replace(target, stream=STREAM_REFUSED), False
        self._appended[str(started["ts"])] = shown
        return replace(target, stream=str(started["ts"]), streaming="1"), True

    async def progress(self, target: SlackTarget, done: int, total: int) -> tuple[SlackTarget, bool]:
        """A summary's parts as they are read: a task card in the answer's stream, where the answer streams."""
        if not self._streams(target):
            return target, False
        task = parts_task(done, total, self.language)
        if not target.stream:
            target, started = await self._start_stream(target, "", task)
        elif target.streaming and self._appended.get(target.stream) == "":  # ours, and no text in it yet
            try:
                await self.client.chat_appendStream(channel=target.channel, ts=target.stream, chunks=[task])
                started = True
            except SlackApiError as exc:
                log.info("slack: the stream cannot go on (%s)", slack_error(exc))
                started = False
        else:
            started = False
        if started and done < total:
            self._reading[target.stream] = total  # the card is completed with the answer's first text
        return target, started

    def _parts_read(self, stream: str, markdown: str) -> list[dict[str, Any]] | None:
        """The chunks that carry `markdown` into a stream whose summary's parts card is still open: the card,
        completed (the answer's text means every part was read), then the text; None when no card is open."""
        total = self._reading.pop(stream, 0)
        if not total:
            return None
        return [parts_task(total, total, self.language), {"type": "markdown_text", "text": markdown}]

    def _streams(self, target: SlackTarget) -> bool:
        """Whether this answer streams natively: in the pane only (see `stream`), where Slack has not refused."""
        return target.stream != STREAM_REFUSED and self.native and bool(target.pane and target.thread_ts)

    def _sources_under(self, target: SlackTarget) -> list[dict[str, Any]]:
        """The line naming what the answer read, under its last message (none where it read nothing)."""
        sources = decode_sources(target.sources)
        return [sources_block(sources, self.language)] if sources else []

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
            log.info("slack: stopping the stream: %s", slack_error(exc))
        return replace(target, streaming="")

    async def post_part(
        self, target: SlackTarget, content: str, question_id: str, *, final: bool, feedback: str | None = None
    ) -> SlackTarget:
        shown = to_slack_mrkdwn(content)

        async def post(votes: dict[str, Any] | None) -> Any:
            if final:
                blocks = [section(shown), *self._sources_under(target), votes] if votes else None
            else:
                blocks = answer_blocks(shown, question_id, self.language)
            return await self.client.chat_postMessage(
                channel=target.channel, thread_ts=target.thread_ts or None, text=shown, blocks=blocks
            )

        async with gone_on(GONE_ON_POST):
            posted = await self._with_feedback(post, feedback if final else None)
        return replace(target, ts=str(posted["ts"]), stream="", streaming="")

    async def delete(self, target: SlackTarget) -> None:
        if target.answer_ts:
            with contextlib.suppress(SlackApiError):
                await self.client.chat_delete(channel=target.channel, ts=target.answer_ts)

    def working(self, target: SlackTarget) -> AbstractAsyncContextManager[None]:
        return nullcontext()  # Slack has no typing indicator for bots

    async def ended(self, target: SlackTarget, outcome: Outcome) -> None:
        """The thread's agent session moves on: active once answered (or failed), closed once stopped."""
        await self.sessions.set(target.channel, target.thread_ts, STATUS_AFTER[outcome])

    def streams_stopped(self, stopped: list[str]) -> None:
        """Slack stopped these streams itself (its session's stop button): nothing more is appended to them, and the
        answer's end is edited into them like a placeholder."""
        for ts in stopped:
            self._appended.pop(ts, None)
            self._reading.pop(ts, None)


def slack_error(exc: SlackApiError) -> str:
    return str(exc.response.get("error"))


# Slack's errors that mean the placeholder (or the place to post) is gone for good.
GONE_ON_POST = frozenset({"channel_not_found", "is_archived", "not_in_channel", "thread_not_found"})


GONE_ON_UPDATE = GONE_ON_POST | {"message_not_found", "cant_update_message"}


@asynccontextmanager
async def gone_on(errors: frozenset[str]) -> AsyncIterator[None]:
    try:
        yield
    except SlackApiError as exc:
        if exc.response.get("error") in errors:
            raise PlaceholderGone(str(exc.response.get("error"))) from exc
        raise
