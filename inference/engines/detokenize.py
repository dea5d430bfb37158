"""Incremental detokenisation: text per new token without re-decoding the whole answer."""

from __future__ import annotations

from typing import Any

REPLACEMENT_CHAR = "\ufffd"


class IncrementalDecoder:
    """Turns a growing list of token ids into text deltas.

    Decodes only a short window (from `prefix_offset`), and holds text back while it ends
    in an incomplete UTF-8 sequence, so a Korean syllable split over byte tokens never
    shows up as `�`.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.text = ""
        self._prefix_offset = 0
        self._read_offset = 0

    def push(self, token_id: int) -> str:
        """Add one token; returns the text it completes (possibly empty)."""
        self.ids.append(token_id)
        prefix = self._decode(self.ids[self._prefix_offset : self._read_offset])
        current = self._decode(self.ids[self._prefix_offset :])
        if len(current) > len(prefix) and not current.endswith(REPLACEMENT_CHAR):
            delta = current[len(prefix) :]
            self._prefix_offset = self._read_offset
            self._read_offset = len(self.ids)
            self.text += delta
            return delta
        return ""

    def _decode(self, ids: list[int]) -> str:
        return str(self.tokenizer.decode(ids, skip_special_tokens=True)) if ids else ""
