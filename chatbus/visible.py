"""What counts as visible text. Shared by the front-ends (a question of only blank or invisible
characters is refused as empty) and the worker's prompt builder (invisible characters cannot hide
a forged template section)."""

from __future__ import annotations

import unicodedata

# Spaces, separators, controls, format characters (zero-width, direction marks) and combining marks.
_INVISIBLE_CATEGORIES = frozenset({"Zs", "Zl", "Zp", "Cc", "Cf", "Mn", "Me"})


def is_invisible(c: str) -> bool:
    """True for a character that shows nothing by itself: the categories above, plus the blank letters and
    symbols (Hangul fillers, the braille blank)."""
    if unicodedata.category(c) in _INVISIBLE_CATEGORIES:
        return True
    name = unicodedata.name(c, "")
    return name.endswith("FILLER") or name == "BRAILLE PATTERN BLANK"


def is_blank(text: str) -> bool:
    """True when nothing in `text` would show: empty, whitespace, or only invisible characters."""
    return all(c.isspace() or is_invisible(c) for c in text)
