"""A PDF's text, read in a child process with hard budgets, so no PDF can stall an adapter.

A PDF is a program for a parser: one 30 KB file can hold a stream that inflates to gigabytes, a page
tree that names one page thirty thousand times or loops back on itself, or arrays nested deep enough
to exhaust Python's stack. Parsed on the adapter's event loop, any of these stalls every user of the
bot (and, on Discord, long enough to lose the gateway). So each PDF is read by a fresh
`python -m bot.pdf_text`, which the adapter waits for without blocking, and which runs under:

- wall time: killed after `PdfBudget.wall_s`;
- memory: its address space capped at `PdfBudget.memory_bytes` (RLIMIT_AS), CPU at the wall time;
- decompressed bytes: pypdf's output limit of every filter, at `PdfBudget.stream_bytes`;
- pages: only the first `PdfBudget.max_pages` are read;
- output: extraction stops once `PdfBudget.max_chars` characters are out (the contract's 맥락 ceiling);
- CPU priority: NICENESS below its parent's.

At most `PdfBudget.parallel` PDFs are read at once per adapter process; later ones wait their turn.
The child answers one JSON line: `{"text": …}` or `{"refused": "unreadable" | "no_text" | "budget"}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import sys
from dataclasses import dataclass

from chatbus.messages import MAX_CONTEXT_CHARS

log = logging.getLogger(__name__)

REFUSALS = ("unreadable", "no_text", "budget")
# The child runs at a lower CPU priority than the bot and the workers beside it: a PDF being read takes the CPU
# that nothing else wants, not the one answering other people's questions.
NICENESS = 10
# Exit status of a child that ran out of its memory budget (MemoryError) or its stack (RecursionError).
EXIT_BUDGET = 3


@dataclass(frozen=True)
class PdfBudget:
    """What reading one PDF may cost."""

    wall_s: float = 10.0
    memory_bytes: int = 768 * 1024 * 1024
    stream_bytes: int = 16 * 1024 * 1024
    max_pages: int = 300
    max_chars: int = MAX_CONTEXT_CHARS
    parallel: int = 2


class PdfReader:
    """Reads PDFs in child processes under one budget; see the module docstring."""

    def __init__(self, budget: PdfBudget | None = None) -> None:
        self.budget = budget or PdfBudget()
        self._slots = asyncio.Semaphore(self.budget.parallel)
        self.running = 0  # children alive now (tests and the soak watch it)

    async def text(self, data: bytes) -> tuple[str | None, str | None]:
        """(text, None) or (None, one of REFUSALS)."""
        async with self._slots:
            return await self._run(data)

    async def _run(self, data: bytes) -> tuple[str | None, str | None]:
        budget = self.budget
        args = [str(budget.wall_s), str(budget.memory_bytes), str(budget.stream_bytes)]
        args += [str(budget.max_pages), str(budget.max_chars)]
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot.pdf_text",
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        self.running += 1
        try:
            out, _ = await asyncio.wait_for(child.communicate(data), budget.wall_s)
        except TimeoutError:
            log.warning("a PDF took over %.0fs to read: stopped", budget.wall_s)
            return None, "budget"
        finally:
            self.running -= 1
            if child.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    child.kill()
                await child.wait()
        return _answer(out, child.returncode)


def _answer(out: bytes, returncode: int | None) -> tuple[str | None, str | None]:
    if returncode == EXIT_BUDGET or returncode is None or returncode < 0:  # killed by a limit (SIGXCPU, SIGKILL)
        return None, "budget"
    try:
        answer = json.loads(out)
    except ValueError:
        return None, "unreadable"
    if isinstance(answer, dict) and isinstance(answer.get("text"), str):
        return answer["text"], None
    refused = answer.get("refused") if isinstance(answer, dict) else None
    return None, refused if refused in REFUSALS else "unreadable"


# ---------------------------------------------------------------------------------------------- the child


def _limit(wall_s: float, memory_bytes: int) -> None:
    import os
    import resource

    os.nice(NICENESS)
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    cpu_s = int(wall_s) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s))


def extract(data: bytes, stream_bytes: int, max_pages: int, max_chars: int) -> dict[str, str]:
    """The child's work: the text of the first `max_pages` pages, stopping past `max_chars`."""
    import pypdf
    from pypdf.errors import PyPdfError

    limits = {
        name: stream_bytes
        for name in vars(pypdf.Configuration)
        if name.endswith(("_output_length", "_stream_length", "_buffer_size"))
    }
    pypdf.overwrite_configuration(None, **limits)
    pages: list[str] = []
    size = 0
    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        for number, page in enumerate(reader.pages):
            if number >= max_pages or size > max_chars:
                break
            extracted = (page.extract_text() or "").strip()
            size += len(extracted) + 2
            pages.append(extracted)
    except pypdf.errors.LimitReachedError:
        return {"refused": "budget"}
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, IndexError, OSError, AssertionError):
        return {"refused": "unreadable"}
    text = "\n\n".join(page for page in pages if page)
    return {"text": text[: max_chars + 1]} if text else {"refused": "no_text"}


def main(argv: list[str]) -> int:
    """`python -m bot.pdf_text WALL_S MEMORY_BYTES STREAM_BYTES MAX_PAGES MAX_CHARS` < file.pdf"""
    wall_s, memory_bytes, stream_bytes, max_pages, max_chars = float(argv[0]), *map(int, argv[1:5])
    data = sys.stdin.buffer.read()
    _limit(wall_s, memory_bytes)
    logging.disable(logging.CRITICAL)  # pypdf warns about every oddity of a broken file: nobody reads them here
    try:
        answer = extract(data, stream_bytes, max_pages, max_chars)
    except (MemoryError, RecursionError):
        return EXIT_BUDGET
    sys.stdout.write(json.dumps(answer, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
