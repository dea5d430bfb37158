"""Where a run keeps what it has done, written as it arrives so that a rerun continues where one stopped.

    OUT/<deployment fingerprint>/deployment.json      what the workers reported (and the persona, if any)
    OUT/<deployment fingerprint>/answers.jsonl        one line per answered item
    OUT/<fingerprint>/<protocol>-<judge>/run.json     protocol, judge, scoring method
    OUT/<fingerprint>/<protocol>-<judge>/judgments.jsonl   one line per judged item (a later line replaces one)
    OUT/<fingerprint>/<protocol>-<judge>/report.md, scores.png

Answers depend only on the deployment, so every protocol and judge of one deployment judges the same answers.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict


class Answer(BaseModel):
    """One item's answer from the deployment, as the asker got it (or why there is none)."""

    model_config = ConfigDict(extra="ignore")

    id: str
    answer: str | None  # None: the deployment gave no answer (`error` says why); the item is left out of scores
    error: str | None = None
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    model: str = ""
    template: str = ""
    engine: str = ""


class Judgment(BaseModel):
    """One item's judgment: the judge's raw replies and the scores read from them, or why it is unscored."""

    model_config = ConfigDict(extra="ignore")

    id: str
    raw: list[str]
    logprobs: list[Any] | None = None  # the scored reply's tokens as the judge sent them: [token, logprob, top]
    scores: dict[str, float] | None = None  # None: unscored (`unscored` says why)
    written: dict[str, int] | None = None  # the scores as the judge wrote them (its first readable reply)
    method: str = ""  # "logprobs" or "samples"
    unscored: str | None = None  # "unreadable" (kept on a rerun) or "judge_error: …" (asked again on a rerun)
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def final(self) -> bool:
        """Whether a rerun keeps it (a judge that failed to reply is asked again)."""
        return self.scores is not None or self.unscored == "unreadable"


def fingerprint(deployment: dict[str, str]) -> str:
    """A short, stable name for a deployment's answering configuration."""
    canonical = json.dumps(deployment, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def judge_folder(protocol: str, judge_model: str, judge_url: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9.]+", "-", judge_model).strip("-")[:40] or "judge"
    return f"{protocol}-{slug}-{hashlib.sha256(judge_url.encode()).hexdigest()[:6]}"


def read_lines(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of `path` (none when it does not exist); a torn last line (a crash mid-write) is skipped."""
    if not path.exists():
        return []
    found = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            found.append(record)
    return found


def answers_in(folder: Path) -> dict[str, Answer]:
    return {record["id"]: Answer.model_validate(record) for record in read_lines(folder / "answers.jsonl")}


def judgments_in(folder: Path) -> dict[str, Judgment]:
    return {record["id"]: Judgment.model_validate(record) for record in read_lines(folder / "judgments.jsonl")}


def append(path: Path, record: BaseModel) -> None:
    """One JSON line, flushed to disk before returning: a kill loses at most the line being written."""
    with path.open("a", encoding="utf-8") as file:
        file.write(record.model_dump_json() + "\n")
        file.flush()
        os.fsync(file.fileno())


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.write_text(json.dumps(document, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def read_json(path: Path) -> dict[str, Any]:
    document = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(document, dict):
        raise ValueError(f"{path} is not a JSON object")
    return document


def mend(path: Path) -> None:
    """Cut a line torn by a kill mid-write, so that the next line appended starts on its own."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        path.write_bytes(data[: data.rfind(b"\n") + 1])
