"""Where a question was asked in Slack (`SlackOrigin`) and where its answer is shown (`SlackTarget`, stored in the
in-flight record so a restarted adapter finishes the same messages)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

STREAM_REFUSED = "off"  # SlackTarget.stream when chat.startStream was refused for that answer


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
    sources: str = ""  # what the answer is grounded on (`Asked.sources`), as `encode_sources` stores them

    @property
    def conversation(self) -> str:
        return f"{self.channel}:{self.thread_ts}" if self.thread_ts else self.channel

    @property
    def answer_ts(self) -> str:
        """The message an edit goes to: a stopped stream's, else the placeholder (also while a stream is open)."""
        return self.stream if self.stream not in ("", STREAM_REFUSED) and not self.streaming else self.ts

    def to_fields(self) -> dict[str, str]:
        fields = {"channel": self.channel, "ts": self.ts, "thread_ts": self.thread_ts, "question": self.question}
        fields |= {"user": self.user, "stream": self.stream, "streaming": self.streaming, "pane": self.pane}
        return fields | ({"sources": self.sources} if self.sources else {})


@dataclass(frozen=True)
class SlackOrigin:
    """Where a question was asked, which decides where refusals and the placeholder go."""

    kind: Literal["command", "mention", "dm", "modal", "pane", "action"]
    channel: str
    user: str
    thread_ts: str | None = None  # the thread asked in (a mention, the shortcut's message)
    respond: Any = None  # a slash command's `respond`: refusals go to its response_url, seen only by the asker
    name: str = ""  # the asker's display name, for the line quoting what they asked (no mention: nobody is pinged)
