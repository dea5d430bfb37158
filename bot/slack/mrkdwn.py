"""Slack's mrkdwn: model output (Markdown) converted, and escaped so it can never notify anyone."""

from __future__ import annotations

import re

_MD_BOLD = re.compile(r"\*\*(.+?)\*\*|__(.+?)__")
_MD_STRIKE = re.compile(r"~~(.+?)~~")
_MD_HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*$", re.MULTILINE)
_MD_LINK = re.compile(r"\[([^\]\n]+)\]\((https?://[^)\s]+)\)")


def slack_escape(text: str) -> str:
    """Escape `&`, `<`, `>` as Slack requires; this also disarms `<!channel>`, `<!here>` and `<@U…>`."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_slack_mrkdwn(markdown: str) -> str:
    """Model output (Markdown) as Slack mrkdwn: escaped, with bold, strike, headings and links converted.

    Code blocks and inline code are escaped but otherwise left alone.
    """
    parts = re.split(r"(```.*?```|`[^`\n]+`)", markdown, flags=re.DOTALL)
    converted = []
    for i, part in enumerate(parts):
        part = slack_escape(part)
        if i % 2 == 0:  # outside code
            part = _MD_LINK.sub(lambda m: f"<{m.group(2)}|{m.group(1)}>", part)
            part = _MD_BOLD.sub(lambda m: f"*{m.group(1) or m.group(2)}*", part)
            part = _MD_STRIKE.sub(r"~\1~", part)
            part = _MD_HEADING.sub(r"*\1*", part)
        converted.append(part)
    return "".join(converted)
