"""A scripted engine: the tiny model's trained answers without the model (no torch, no weights).

`ScriptedEngine` speaks the `Engine` protocol the way `BuiltinEngine` does — requests join
at the next step, each step adds a few characters to every running answer, a finished or
cancelled request leaves at once — but its answers come from a script: the prompts the tiny
model was trained on map to the answers it was trained on, so a test can assert the same text
whichever engine ran. A step sleeps `step_s` (about the tiny model's pace on a CPU), so an
answer takes as long to stream and a process can be killed in the middle of one.

Where it is used: the worker loop in-process (tests/test_worker.py), and worker processes for
the adapters' tests (`ENGINE=testkit.engines:scripted`), which then start in about a
second instead of loading torch. The real model keeps its own tests (test_engine, test_worker_e2e).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest

from chatbus.messages import FinishReason
from inference import tasks
from inference.engine import Engine, GenerationRequest, GenerationUpdate, Loaded
from inference.prompt import PromptBuilder, Template
from inference.settings import WorkerSettings
from inference.worker import Worker
from testkit import trained
from testkit.settings import settings_of

# How a worker process is told to use it: ENGINE=testkit.engines:scripted.
SCRIPTED = "testkit.engines:scripted"
# Tests that build a transformers model in the test process: pytest-xdist runs them in one process, so only one
# pays for importing transformers' model code (about 4 s on 2 cores) and the other process's share is the rest.
IN_PROCESS_MODEL = pytest.mark.xdist_group("in_process_model")
CHARS_PER_STEP = 3  # the tiny model's pace: about 3 characters of Korean per token
STEP_S = 0.004  # and about 4 ms per step on a CPU
MAX_STEPS_PER_ANSWER = 400  # a longer scripted answer streams in bigger pieces (the 4,500-character one: 12)
CONTEXT_WINDOW = 2048
UNSCRIPTED = "스크립트에 없는 질문입니다."
LONG_CODE_QUESTION = "코드 예제를 길게 보여줘"


def long_code_answer() -> str:
    """A 4,500-character answer with two code blocks: prose, code, prose."""
    paragraph = "구름은 고려대학교에서 만든 한국어 언어 모델입니다. 질문에 답하고 글을 요약합니다. " * 6
    code = "```python\n" + "\n".join(f"print('줄 {i}')  # 설명 {i}" for i in range(60)) + "\n```"
    text = f"{paragraph}\n\n{code}\n\n{paragraph}\n\n{paragraph}\n\n{code}\n\n"
    return text + ("끝맺는 문단입니다. " * 100)[: 4499 - len(text)].rstrip() + "."


_KULLM_V1 = re.compile(r"### 질문: (?P<task>.*?)\n\n### 맥락: (?P<text>.*)\n\n### 답변:", re.DOTALL)


def task_answer(prompt: str) -> str | None:
    """What the scripted engine answers a task's prompt (kullm-v1), made from its text so a test can tell which
    text each request got and in what order the outputs were put together:

    - translate: `[EN] text` / `[KO] text`; proofread: `[교정] text`;
    - summarize (all at once, or one part): `요약(first line ~ last line, N줄)`, each line cut to 20 characters;
    - merge: `합친 요약(first summary ~ last summary, N부)`, the first one's head and the last one's tail.

    Short, like a real summary: merging never outgrows what it merges.
    """
    match = _KULLM_V1.fullmatch(prompt)
    if match is None:
        return None
    task, text = match["task"], match["text"]
    if task in (tasks.TRANSLATE_TO_ENGLISH, tasks.TRANSLATE_TO_KOREAN, tasks.PROOFREAD):
        label = {tasks.TRANSLATE_TO_ENGLISH: "EN", tasks.TRANSLATE_TO_KOREAN: "KO"}.get(task, "교정")
        return f"[{label}] {text}"
    lines = text.split("\n")
    if task in (tasks.SUMMARIZE, tasks.SUMMARIZE_PART):
        return f"요약({lines[0][:20]} ~ {lines[-1][:20]}, {len(lines)}줄)"
    if task == tasks.MERGE:
        return f"합친 요약({lines[0][:40]} ~ {lines[-1][-40:]}, {len(lines)}부)"
    return None


def knowledge_answer(prompt: str) -> str | None:
    """What the scripted engine answers a question asked of the workspace (맥락 of numbered passages, "[1] who ·
    when · where" then the text): the first passage's first line of text, cited, so a test can tell which message
    an answer was built from ("[1]에 따르면: 배포 날짜는 12월 3일로 정했어요")."""
    match = _KULLM_V1.fullmatch(prompt)
    if match is None or not match["text"].startswith("[1] "):
        return None
    lines = match["text"].split("\n")
    return f"[1]에 따르면: {lines[1]}" if len(lines) > 1 else None


def trained_answers() -> dict[str, str]:
    """Each prompt the tiny model was trained on, and the answer greedy decoding gives for it."""
    return {example.prompt: example.answer for example in trained.EXAMPLES}


@dataclass
class _Running:
    request: GenerationRequest
    answer: str
    chars_per_step: int
    shown: int = 0
    tokens: int = 0
    cancelled: bool = False


class ScriptedEngine:
    """Streams scripted answers, CHARS_PER_STEP characters per request per step."""

    model_id = "scripted"
    logprobs = False

    def __init__(
        self,
        max_batch_size: int,
        script: Mapping[str, str] | None = None,
        *,
        chars_per_step: int = CHARS_PER_STEP,
        step_s: float = STEP_S,
    ) -> None:
        self.max_batch_size = max_batch_size
        self.script = dict(script if script is not None else trained_answers())
        self.chars_per_step = chars_per_step
        self.step_s = step_s
        self.last_batch = self.last_tokens = 0
        self.steps = 0
        self._waiting: list[GenerationRequest] = []
        self._running: list[_Running] = []
        self.received: list[GenerationRequest] = []  # every request added, in order

    @property
    def active(self) -> int:
        return len(self._waiting) + len(self._running)

    def answer_for(self, prompt: str) -> str:
        """The scripted answer: the trained one for a trained prompt, a long code example when asked for one, a
        task's answer made from its text (`task_answer`)."""
        if prompt in self.script:
            return self.script[prompt]
        found = task_answer(prompt) or knowledge_answer(prompt)
        return found or (long_code_answer() if LONG_CODE_QUESTION in prompt else UNSCRIPTED)

    def add(self, request: GenerationRequest) -> None:
        self._waiting.append(request)
        self.received.append(request)

    def cancel(self, request_id: str) -> None:
        self._waiting = [r for r in self._waiting if r.id != request_id]
        for row in self._running:
            if row.request.id == request_id:
                row.cancelled = True

    def reset(self) -> list[str]:
        ids = [row.request.id for row in self._running] + [r.id for r in self._waiting]
        self._waiting, self._running = [], []
        return ids

    def close(self) -> None:
        """Nothing held."""

    def step(self) -> list[GenerationUpdate]:
        self.steps += 1
        self._running = [row for row in self._running if not row.cancelled]
        room = self.max_batch_size - len(self._running)
        joining, self._waiting = self._waiting[:room], self._waiting[room:]
        for request in joining:
            answer = self.answer_for(request.prompt)
            pace = max(self.chars_per_step, -(-len(answer) // MAX_STEPS_PER_ANSWER))
            self._running.append(_Running(request, answer, pace))
        self.last_batch = self.last_tokens = len(self._running)
        if self.step_s:
            time.sleep(self.step_s)
        updates = [self._advance(row) for row in self._running]
        self._running = [row for row in self._running if row.shown < len(row.answer)]
        return updates

    def _advance(self, row: _Running) -> GenerationUpdate:
        """One token more: `chars_per_step` characters of the answer; past max_new_tokens it ends at "length"."""
        row.shown = min(len(row.answer), row.shown + row.chars_per_step)
        row.tokens += 1
        text = row.answer[: row.shown]
        reason: FinishReason | None = (
            "stop" if text == row.answer else "length" if row.tokens >= row.request.max_new_tokens else None
        )
        if reason:
            row.shown = len(row.answer)  # leaves the batch
        return GenerationUpdate(row.request.id, text, reason is not None, reason, len(row.request.prompt), row.tokens)


def scripted_prompts(settings: WorkerSettings) -> PromptBuilder:
    """The prompt builder of a scripted worker: the configured template, a character per token."""
    return PromptBuilder(Template(settings.template), len, settings.context_window or CONTEXT_WINDOW)


def scripted(settings: WorkerSettings) -> Loaded:
    """ENGINE=testkit.engines:scripted (SCRIPTED_STEP_S sets the pace; SCRIPTED_LOAD_S, how long "loading the
    model" takes)."""
    time.sleep(float(os.environ.get("SCRIPTED_LOAD_S", 0)))
    step_s = float(os.environ.get("SCRIPTED_STEP_S", STEP_S))
    return Loaded(ScriptedEngine(settings.max_batch_size, step_s=step_s), scripted_prompts(settings))


def threads_recorded(settings: WorkerSettings) -> Loaded:
    """ENGINE=testkit.engines:threads_recorded: the tiny model, writing to THREADS_FILE the thread that
    loaded it and the thread of every step (one name a line)."""
    import threading

    from inference.engine import DelegatingEngine
    from inference.engines import builtin

    record = Path(os.environ["THREADS_FILE"])

    def write(what: str) -> None:
        with record.open("a") as file:
            file.write(f"{what} {threading.current_thread().name}\n")

    class Recorded(DelegatingEngine):
        def step(self) -> list[GenerationUpdate]:
            write("step")
            return self.inner.step()

    write("load")
    loaded = builtin.build(settings)
    return Loaded(Recorded(loaded.engine), loaded.prompts)


def worker_settings(redis_url: str, **overrides: object) -> WorkerSettings:
    """A worker's settings as the process tests give them (fast heartbeats and reclaims), without .env."""
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "metrics_port": 0,
        "heartbeat_interval_s": 0.2,
        "reclaim_interval_s": 0.2,
        "reclaim_idle_s": 2.0,
        "delta_interval_s": 0.05,
        "cancel_poll_s": 0.05,
        "idle_read_s": 0.05,
        "worker_name": "inprocess",
        **overrides,
    }
    return settings_of(WorkerSettings, **values)


class RunWorker(Protocol):
    """The `run_worker` fixture: a `Worker` in the test's own loop, drained after the test."""

    def __call__(
        self, engine: str = "scripted", wrap: Callable[[Engine], Engine] | None = None, **settings: Any
    ) -> Worker: ...
