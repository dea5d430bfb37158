"""Files as 맥락: text in UTF-8 or the Korean legacy encodings, PDFs read in a child process within budgets.

The hostile corpus (`testkit.hostile_files`) is what a user who can mention the bot may attach: each
file is refused with the clear message naming it, or read within budget, and the event loop that serves
everyone else keeps running meanwhile.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from bot.pdf_text import PdfBudget, PdfReader
from bot.workspace import FileRefused, file_text, files_context, transcript
from chatbus.messages import MAX_CONTEXT_CHARS
from testkit.hostile_files import corpus, minimal_pdf

pytestmark = pytest.mark.e2e  # every PDF is read by a child process

LIMIT = 200_000  # MAX_FILE_BYTES' default
FAST = PdfBudget(wall_s=4.0)
# What each hostile file must come to: read (its text starts so), or refused with this message.
EXPECTED = {
    "decompression bomb": "너무 복잡해서",
    "text bomb": "너무 복잡해서",
    "double compression": "너무 복잡해서",
    # 300 pages read in about a second, or refused on a loaded machine
    "page-reference flood": "read:page|너무 복잡해서",
    "deep nesting": "읽을 수 없어요",
    "parent loop": "읽을 수 없어요",
    "bad xref": "read:xref",
    "NUL pdf": "읽을 수 없어요",
    "NUL text": "텍스트 파일이 아니에요",
    "mixed encodings": "읽을 수 없어요",
}


async def test_a_files_text_is_read_in_utf8_or_korean_legacy_encodings_and_pdf() -> None:
    pdfs = PdfReader(FAST)
    korean = "회의록: 예산은 밥이, 일정은 앨리스가 맡는다."
    assert await file_text("a.txt", korean.encode("utf-8-sig"), 1000, "ko", pdfs) == korean
    assert await file_text("a.csv", korean.encode("cp949"), 1000, "ko", pdfs) == korean
    assert await file_text("a.md", korean.encode("euc-kr"), 1000, "ko", pdfs) == korean
    read = await file_text("report.pdf", minimal_pdf("KULLM answers in Korean."), 10_000, "ko", pdfs)
    assert read == "KULLM answers in Korean."
    refusals = {
        "too large": ("a.txt", b"x" * 1001, "1 KB"),
        "binary type": ("a.png", b"\x89PNG", "텍스트 파일이 아니에요"),
        "NUL bytes": ("a.txt", b"abc\x00def", "텍스트 파일이 아니에요"),
        "undecodable": ("a.txt", b"\xff\xfe\xfd\x80", "읽을 수 없어요"),
        "broken pdf": ("a.pdf", b"%PDF-1.4 not really", "읽을 수 없어요"),
    }
    for case, (name, data, said) in refusals.items():
        with pytest.raises(FileRefused) as refused:
            await file_text(name, data, 1000, "ko", pdfs)
        assert said in refused.value.notice and name in refused.value.notice, case
    long_thread = transcript([f"사람: {i}번 메시지 " + "가" * 40 for i in range(10)], 400)
    assert long_thread.startswith("(앞의 메시지 5개는 너무 길어 빠졌습니다)\n사람: 5번") and len(long_thread) <= 400
    assert files_context([("a.txt", "가")]) == "가"
    assert files_context([("a.txt", "가"), ("b.txt", "나")]) == "[a.txt]\n가\n\n[b.txt]\n나"


@pytest.mark.parametrize("case", list(EXPECTED))
async def test_each_hostile_file_is_refused_naming_it_or_read_within_budget(case: str) -> None:
    name, data = corpus()[case]
    pdfs = PdfReader(FAST)
    try:
        read = await file_text(name, data, LIMIT, "ko", pdfs)
    except FileRefused as refused:
        refusals = [outcome for outcome in EXPECTED[case].split("|") if not outcome.startswith("read:")]
        assert any(said in refused.notice for said in refusals) and name in refused.notice, refused.notice
        return
    reads = [outcome[5:] for outcome in EXPECTED[case].split("|") if outcome.startswith("read:")]
    assert any(read.startswith(start) for start in reads), read[:80]
    assert len(read) <= MAX_CONTEXT_CHARS + 1
    assert pdfs.running == 0, "no child is left behind"


async def test_a_pdf_over_its_memory_budget_is_refused() -> None:
    # No stream limit: only the child's address-space cap stops the 400 MB this file inflates to.
    pdfs = PdfReader(PdfBudget(wall_s=20, memory_bytes=300 * 1024 * 1024, stream_bytes=1 << 40))
    with pytest.raises(FileRefused) as refused:
        await file_text("double.pdf", corpus()["double compression"][1], LIMIT, "ko", pdfs)
    assert "너무 복잡해서" in refused.value.notice


async def test_only_the_first_pages_are_read() -> None:
    pdfs = PdfReader(PdfBudget(max_pages=5))
    read = await file_text("flood.pdf", corpus()["page-reference flood"][1], LIMIT, "ko", pdfs)
    assert read.split() == ["page"] * 5


async def test_the_event_loop_runs_on_while_the_worst_pdf_is_read() -> None:
    pdfs = PdfReader(PdfBudget(wall_s=3.0, parallel=2))
    name, data = corpus()["text bomb"]
    reads = [asyncio.create_task(file_text(name, data, LIMIT, "ko", pdfs)) for _ in range(3)]
    gaps, last = [], time.monotonic()
    while not all(read.done() for read in reads):
        await asyncio.sleep(0.02)
        now = time.monotonic()
        gaps.append(now - last)
        last = now
        assert pdfs.running <= 2, "at most PDF_PARALLEL children at once"
    for read in reads:
        assert isinstance(read.exception(), FileRefused)
    # On the event loop this file held it for 31 s; here the loop only waits for children. A generous bound: a
    # loaded 2-core machine may delay a 20 ms sleep, never by whole seconds.
    assert max(gaps) < 1.0, f"the event loop stalled for {max(gaps):.2f}s"
