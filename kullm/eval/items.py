"""The evaluation set: the Korean translation of self-instruct's 252 user-oriented instructions (Wang et al.
2022) that the KULLM README's evaluation used, shipped in `data/` with its licence (Apache-2.0, nlpai-lab/KULLM;
see data/NOTICE.md)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources

DATA = "user_oriented_instructions_eval.jsonl"


@dataclass(frozen=True)
class Item:
    """One instruction: asked with the instruction as 질문 and its input (often empty) as 맥락."""

    id: str
    instruction: str
    input: str
    app: str  # the application the instruction was written for (self-instruct's `motivation_app`)


def load_items(limit: int | None = None) -> list[Item]:
    """The items in the file's order (the first `limit` of them): a limited run is the same items every time."""
    lines = resources.files("kullm.eval").joinpath("data", DATA).read_text(encoding="utf-8").splitlines()
    items = []
    for line in lines[:limit]:
        record = json.loads(line)
        items.append(
            Item(record["id"], record["instruction"], record["instances"][0]["input"], record["motivation_app"])
        )
    return items
