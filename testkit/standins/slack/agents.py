"""Slack's agent sessions (docs.slack.dev/ai/agent-sessions): agents.sessions.setStatus, and the session's stop
button, which Slack answers with an `agent_session_stopped` event.

No recorded sample of these exists among the publisher's samples: the arguments, statuses and limits follow the
method's and the event's reference pages (tests/reference/slack/documented/ holds the shapes the conformance check
uses, with where each came from).
"""

from __future__ import annotations

from typing import Any

from testkit.standins.slack.common import (
    AGENT_SESSION_STATUSES,
    AGENT_SESSION_TITLE_CHARS,
    SlackError,
    manifest_events,
)
from testkit.standins.slack.state import SlackState


class AgentSessions(SlackState):
    """Sessions by (channel, thread_ts): their status, title and who started them; and the stop button."""

    async def _session_status(self, args: dict[str, Any], token: str) -> dict[str, Any]:
        if not self.agent_sessions:  # an app not declared as an agent, or a workspace without agent sessions
            raise SlackError("not_allowed")
        channel = self._resolve_channel(args.get("channel_id"))
        thread_ts = str(args.get("thread_ts") or "")
        if not thread_ts:  # thread-based sessions (the only kind outside session channels) name their thread
            raise SlackError("invalid_arguments", response_metadata={"messages": ["[ERROR] missing thread_ts"]})
        if (channel["id"], thread_ts) not in self.messages:
            raise SlackError("thread_not_found")
        status, title = args.get("status"), args.get("title")
        if status not in AGENT_SESSION_STATUSES:
            raise SlackError("invalid_arguments", response_metadata={"messages": ["[ERROR] status"]})
        if title is not None and not (isinstance(title, str) and 0 < len(title) <= AGENT_SESSION_TITLE_CHARS):
            raise SlackError("invalid_arguments", response_metadata={"messages": ["[ERROR] title: 1 to 200 chars"]})
        initiator = args.get("initiator_user_id")
        if initiator and initiator not in channel.get("members", []):
            raise SlackError("invalid_arguments", response_metadata={"messages": ["[ERROR] initiator not a member"]})
        key = (channel["id"], thread_ts)
        session = self.sessions.get(key)
        if session is None:  # created by this call: the title and initiator count only now
            session = {"title": title or "", "initiator": initiator or ""}
            self.sessions[key] = session
        session["status"] = status
        self.session_history.append((key, str(status)))
        body: dict[str, Any] = {"status": status, "title": session["title"]}
        if "agent_session_stopped" not in manifest_events():  # users would see a stop button that does nothing
            body["warning"] = "missing_agent_session_stopped_event_subscription"
        return body

    async def stop_agent_session(self, channel: str, thread_ts: str, user: str) -> dict[str, Any]:
        """`user` clicks the stop button Slack shows on a processing session: Slack stops the app's streams in the
        thread and sends agent_session_stopped; the session's status is the app's to change. Returns the event."""
        session = self.sessions.get((channel, thread_ts))
        assert session and session["status"] == "processing", f"stand-in: no stop button on {session}"
        stopped = [
            m["ts"] for m in self.thread(channel, thread_ts) if m.get("bot_id") == self.bot_id and m.get("streaming")
        ]
        for ts in stopped:
            self.messages[(channel, ts)]["streaming"] = False
        event = {
            "type": "agent_session_stopped",
            "channel": channel,
            "thread_ts": thread_ts,
            "user": user,
            "streaming_message_ts": stopped,
            "event_ts": self._next_ts(),
        }
        await self._send_envelope("events_api", self.event_callback(event), retry=(0, ""))
        return event

    def _stream_chunks(self, message: dict[str, Any], args: dict[str, Any]) -> None:
        """The structured chunks of a chat.*Stream call (docs.slack.dev/messaging/sending-and-scheduling-messages
        #text-streaming): task cards by id (a later update of an id replaces it) and the plan's title; their text
        is the markdown chunks' (`_stream_text`)."""
        chunks = args.get("chunks") or []
        if not isinstance(chunks, list):
            raise SlackError("invalid_arguments", response_metadata={"messages": ["[ERROR] chunks"]})
        for chunk in chunks:
            kind = chunk.get("type") if isinstance(chunk, dict) else None
            if kind == "task_update":
                _check_task(chunk)
                message.setdefault("tasks", {})[chunk["id"]] = chunk
            elif kind == "plan_update" and isinstance(chunk.get("title"), str):
                message["plan"] = chunk["title"]
            elif kind not in ("markdown_text", "blocks"):
                raise SlackError("invalid_arguments", response_metadata={"messages": [f"[ERROR] chunk {kind}"]})
        mode = args.get("task_display_mode")
        if mode is not None and mode not in TASK_DISPLAY_MODES:
            raise SlackError("invalid_arguments", response_metadata={"messages": ["[ERROR] task_display_mode"]})

    def _stream_session(self, channel: str, message: dict[str, Any], args: dict[str, Any]) -> None:
        """chat.stopStream's `session_status`: the thread's agent session moves with the stream's end."""
        status = args.get("session_status")
        if status is None:
            return
        if status not in AGENT_SESSION_STATUSES:
            raise SlackError("invalid_arguments", response_metadata={"messages": ["[ERROR] session_status"]})
        key = (channel, str(message.get("thread_ts") or ""))
        if key in self.sessions:
            self.sessions[key]["status"] = status
            self.session_history.append((key, str(status)))


TASK_DISPLAY_MODES = ("timeline", "plan")
TASK_STATUSES = ("pending", "in_progress", "complete", "error")


def _check_task(chunk: dict[str, Any]) -> None:
    """A task_update chunk as Slack's TaskUpdateChunk type gives it: id, title, status; sources are URL elements."""
    valid = isinstance(chunk.get("id"), str) and chunk["id"] and isinstance(chunk.get("title"), str)
    valid = valid and chunk.get("status") in TASK_STATUSES
    for source in chunk.get("sources") or []:
        valid = valid and isinstance(source, dict) and source.get("type") == "url"
        valid = valid and str(source.get("url", "")).startswith("https://") and bool(source.get("text"))
    if not valid:
        raise SlackError("invalid_arguments", response_metadata={"messages": ["[ERROR] task_update chunk"]})
