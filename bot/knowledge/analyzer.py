"""Korean-aware terms for lexical search, so "배포 날짜를" finds "배포 날짜는" (and the words asking for a search).

Korean glues particles and endings to every word (배포를, 배포는, 배포했어요), so matching surfaces fails where the
words are the same. Kiwi (kiwipiepy, maintained by bab2min; its model ships as the `kiwipiepy_model` package, so
nothing is downloaded at run time) splits each word into morphemes and tags them; the terms are the morphemes that
carry meaning — nouns, roots, verb and adjective stems, numbers, and Latin or Chinese words (lower-cased) — and
not particles, endings or the light verbs every sentence has. Loading the model takes about a second and 300 MB,
so it is loaded once per process, on first use (only channels with knowledge on ever need it).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from typing import Any

# Kiwi's tags (Sejong): general and proper nouns, numerals, roots, verb and adjective stems, foreign words and
# Chinese characters, numbers. Left out: particles (J*), endings (E*), affixes (X* but XR), symbols, pronouns.
CONTENT_TAGS = frozenset({"NNG", "NNP", "NR", "XR", "VV", "VA", "SL", "SH", "SN", "W_HASHTAG"})

# Stems in nearly every sentence, which would only make every message match every question.
LIGHT_STEMS = frozenset(
    {"하", "되", "있", "없", "같", "보", "주", "오", "가", "알", "않", "그렇", "이렇", "받", "나", "말"}
)

# "찾아줘: 배포 날짜", "찾아 줘 배포 날짜", "검색: …", "find: …" — the request word, then the question.
ASKING = re.compile(
    r"^\s*(?:찾아\s*줘|찾아봐\s*줘?|찾기|검색해\s*줘|검색|find|search)(?:\s*[:：]\s*|\s+)(?P<question>\S.*)$",
    re.S | re.I,
)

MAX_TERM_CHARS = 40  # a longer "word" (a hash, a URL fragment) is noise, not a term


class KoreanAnalyzer:
    """Terms of Korean (and mixed) text; thread-safe, the model loaded on first use."""

    def __init__(self) -> None:
        self._kiwi: Any = None
        self._lock = threading.Lock()

    def _model(self) -> Any:
        with self._lock:
            if self._kiwi is None:
                from kiwipiepy import Kiwi  # type: ignore[import-untyped]  # here: 300 MB only where needed

                self._kiwi = Kiwi()
            return self._kiwi

    def terms(self, text: str) -> list[str]:
        """The text's terms in order, repeats kept (their counts weigh a message's match)."""
        return _content(self._model().tokenize(text))

    def terms_of_many(self, texts: list[str]) -> list[list[str]]:
        """`terms` of each text, analysed as one batch (several times faster for a backfill)."""
        if not texts:
            return []
        return [_content(tokens) for tokens in self._model().tokenize(texts)]


def _content(tokens: Iterable[Any]) -> list[str]:
    terms = []
    for token in tokens:
        if token.tag not in CONTENT_TAGS:
            continue
        form = token.form.lower() if token.tag == "SL" else token.form
        if token.tag in ("VV", "VA") and form in LIGHT_STEMS:
            continue
        if 0 < len(form) <= MAX_TERM_CHARS:
            terms.append(form)
    return terms
