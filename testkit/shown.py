"""An answer as the tests compare it: without the small line under it that names the model and the time taken,
and a Discord layout's text as it shows it."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

# "\n-# kullm-polyglot-12.8b · 3.2초" on Discord, "\n_kullm-polyglot-12.8b · 3.2s_" on Slack.
FOOTER = re.compile(r"\n(?:-# (?P<discord>[^\n]+)|_(?P<slack>[^\n_]+)_)$")
FOOTER_TEXT = re.compile(r"\S+ · \d+\.\d(?:초|s)(?: · 📎 [^\n]+)?")


def without_footer(content: str) -> str:
    """The answer's text; `content` as it is when its last line is not a footer."""
    match = FOOTER.search(content)
    if match and FOOTER_TEXT.fullmatch(match["discord"] or match["slack"] or ""):
        return content[: match.start()]
    return content


def footer_of(content: str) -> str | None:
    """The footer line's text ("kullm-polyglot-12.8b · 3.2초"), or None."""
    match = FOOTER.search(content)
    found = (match["discord"] or match["slack"]) if match else None
    return found if found and FOOTER_TEXT.fullmatch(found) else None


COMPONENTS_V2 = 1 << 15  # a Discord message that is a layout: its text is in its text displays


def shown_text(message: Mapping[str, Any]) -> str:
    """What a Discord message (as the stand-in stores it, or a body sent to it) shows as text: its content, or for
    a Components V2 layout its text displays, one per line (an answer's footer display last, as `without_footer`
    expects)."""
    if int(message.get("flags") or 0) & COMPONENTS_V2:
        return "\n".join(str(c["content"]) for c in components_in(message) if c.get("type") == 10)
    return str(message.get("content") or "")


def components_in(message: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """Every component of a message, nested ones (a container's, a row's, a section's) included, in order."""

    def walk(components: list[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
        for component in components:
            yield component
            yield from walk(component.get("components") or [])
            yield from walk([c for c in (component.get("component"), component.get("accessory")) if c])

    yield from walk(message.get("components") or [])
