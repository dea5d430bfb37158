"""Messages as Slack stores and returns them: threads, blocks, permalinks."""

from __future__ import annotations

from typing import Any

from testkit.standins.slack.common import (
    MAX_MARKDOWN_TOTAL,
    MAX_TEXT,
    TEAM_ID,
    SlackError,
    _markdown_total,
    block_errors,
)
from testkit.standins.slack.state import SlackState

# What the stand-in keeps about a message that Slack does not send: edits and appends counted, stream state.
BOOKKEEPING = frozenset({"edits", "channel", "streaming", "streamed", "stream_idle_since", "appends"})


class Messages(SlackState):
    """Messages as Slack stores and returns them: threads, blocks, permalinks."""

    def _store(self, channel: str, *, text: str, user: str, thread_ts: str | None, **extra: Any) -> dict[str, Any]:
        ts = self._next_ts()
        message: dict[str, Any] = {
            "type": "message",
            "ts": ts,
            "channel": channel,
            "text": text,
            "blocks": extra.pop("blocks", None),
            "thread_ts": thread_ts,
            "user": user,
            "team": TEAM_ID,
            "edits": 0,
            "metadata": extra.pop("metadata", None),
            **extra,
        }
        self.messages[(channel, ts)] = message
        parent = self.messages.get((channel, thread_ts)) if thread_ts else None
        if parent is not None:
            # Slack marks the parent as a thread root and keeps its reply summary current.
            parent["thread_ts"] = parent["ts"]
            parent["reply_count"] = parent.get("reply_count", 0) + 1
            parent["reply_users"] = sorted({*parent.get("reply_users", []), user})
            parent["latest_reply"] = ts
        return message

    @staticmethod
    def _wire(message: dict[str, Any]) -> dict[str, Any]:
        """A stored message as Slack serialises it: no bookkeeping keys, no nulls, no channel."""
        return {k: v for k, v in message.items() if v is not None and k not in BOOKKEEPING}

    def _content(self, args: dict[str, Any], *, for_update: bool = False) -> dict[str, Any]:
        """Validated text/blocks/metadata of chat.postMessage, chat.update and chat.postEphemeral."""
        text, blocks, markdown_text = args.get("text"), args.get("blocks"), args.get("markdown_text")
        if markdown_text and (text or blocks):
            raise SlackError("markdown_text_conflict")
        if markdown_text:
            if len(markdown_text) > MAX_MARKDOWN_TOTAL:
                raise SlackError("msg_too_long")
            text, blocks = markdown_text, [{"type": "markdown", "text": markdown_text}]
        if not for_update and not text and not blocks and not args.get("attachments"):
            raise SlackError("no_text")
        if text is not None and len(text) > MAX_TEXT:
            raise SlackError("msg_too_long")
        if blocks is not None:
            errors = block_errors(blocks, feedback_buttons=self.feedback_buttons)
            if errors:
                raise SlackError("invalid_blocks", errors=errors, response_metadata={"messages": errors})
            if _markdown_total(blocks) > MAX_MARKDOWN_TOTAL:
                raise SlackError("msg_blocks_too_long")
        metadata = args.get("metadata")
        if metadata is not None and not (
            isinstance(metadata, dict)
            and isinstance(metadata.get("event_type"), str)
            and isinstance(metadata.get("event_payload"), dict)
        ):
            raise SlackError("invalid_metadata_format")
        out: dict[str, Any] = {"text": text if text is not None else ("" if not for_update else None)}
        if blocks is not None:
            out["blocks"] = blocks
        if metadata is not None:
            out["metadata"] = metadata
        if args.get("attachments") is not None:
            out["attachments"] = args["attachments"]
        return out

    def _user_profile(self, user_id: str) -> dict[str, Any]:
        """The `user_profile` of an event about a person's message."""
        user = self.users[user_id]
        profile = user["profile"]
        return {
            "avatar_hash": "g0000000000a",
            "image_72": profile["image_72"],
            "first_name": profile["first_name"],
            "real_name": profile["real_name"],
            "display_name": profile["display_name"],
            "team": TEAM_ID,
            "name": user["name"],
            "is_restricted": False,
            "is_ultra_restricted": False,
        }

    def _bot_fields(self) -> dict[str, Any]:
        return {
            "bot_id": self.bot_id,
            "app_id": self.app_id,
            "bot_profile": {"id": self.bot_id, "app_id": self.app_id, "name": "kullm", "team_id": TEAM_ID},
        }

    def _message(self, channel: Any, ts: Any) -> dict[str, Any]:
        message = self.messages.get((str(channel), str(ts)))
        if message is None:
            raise SlackError("message_not_found")
        return message
