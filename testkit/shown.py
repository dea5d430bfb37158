"""An answer as the tests compare it: without the small line under it that names the model and the time taken."""

from __future__ import annotations

import re

# "\n-# kullm-polyglot-12.8b · 3.2초" on Discord, "\n_kullm-polyglot-12.8b · 3.2s_" on Slack.
FOOTER = re.compile(r"\n(?:-# (?P<discord>[^\n]+)|_(?P<slack>[^\n_]+)_)$")
FOOTER_TEXT = re.compile(r"\S+ · \d+\.\d(?:초|s)")


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
