"""What the adapters read out of a workspace for a task: a thread as a transcript, a file as text.

A transcript is one line per message, `name: text` (display names, not ids), oldest first: the worker
splits a long one between messages (`inference.tasks`). A file — attached in chat, or given to `kullm ask`
with --context-file — becomes 맥락 when it is text (a known text type, or no extension): UTF-8,
or the Korean legacy encodings CP949 / EUC-KR, up to MAX_FILE_BYTES, or a PDF read within its budget in a
child process (`bot.pdf_text`); anything else is refused with a reason naming the file and the limit.
Nothing read here is stored beyond the question.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import PurePosixPath

from bot.errors import BotError
from bot.pdf_text import PdfReader
from bot.texts import Language, human_size, text
from chatbus.messages import MAX_CONTEXT_CHARS

log = logging.getLogger(__name__)

# Past this many messages a thread is summarised from its latest ones (a note says how many were left out).
MAX_THREAD_MESSAGES = 2000
# Asked in a thread, these ask for its summary (`/kullm 요약`, `@KULLM 요약`).
SUMMARY_WORDS = frozenset({"요약", "요약해줘", "요약해 줘", "스레드 요약", "summary", "summarize", "summarise"})
TEXT_EXTENSIONS = frozenset(
    {
        ".txt", ".md", ".markdown", ".csv", ".tsv", ".json", ".jsonl", ".yaml", ".yml", ".toml", ".ini", ".cfg",
        ".log", ".xml", ".html", ".htm", ".rst", ".tex", ".srt", ".vtt",
        ".py", ".js", ".ts", ".tsx", ".jsx", ".java", ".kt", ".c", ".h", ".cpp", ".hpp", ".cs", ".go", ".rs",
        ".rb", ".php", ".swift", ".scala", ".sh", ".bash", ".zsh", ".sql", ".r", ".m", ".lua", ".pl", ".css",
    }
)  # fmt: skip
PDF = ".pdf"


def is_summary_request(question: str) -> bool:
    return " ".join(question.split()).strip(" .!?").lower() in SUMMARY_WORDS


def transcript(lines: list[str], limit: int = MAX_CONTEXT_CHARS) -> str:
    """Transcript lines as one 맥락, the oldest left out (and said so) when all of them exceed `limit`."""
    kept: list[str] = []
    size = 0
    for line in reversed(lines):
        size += len(line) + 1
        if size > limit - 100:  # room for the note
            break
        kept.append(line)
    kept.reverse()
    if len(kept) < len(lines):
        kept.insert(0, f"(앞의 메시지 {len(lines) - len(kept)}개는 너무 길어 빠졌습니다)")
    return "\n".join(kept)


def transcript_line(name: str, message: str) -> str:
    """One message as one line: `name: text`, its own line breaks folded into spaces."""
    return f"{name}: {' '.join(message.split())}"


@dataclass(frozen=True)
class FileRefused(BotError):
    """A file that cannot be 맥락; `notice` says why, in the user's language."""

    notice: str


def check_size(name: str, size: int, max_bytes: int, language: Language) -> None:
    """FileRefused naming the limit when a file is over it (adapters check the size a platform reports before
    downloading; `file_text` checks the bytes it got)."""
    if size > max_bytes:
        raise FileRefused(
            text("file_too_large", language, name=name, size=human_size(size), limit=human_size(max_bytes))
        )


async def file_text(name: str, data: bytes, max_bytes: int, language: Language, pdfs: PdfReader) -> str:
    """The text of an attached file, or FileRefused: too large, not a text type, not decodable, or a PDF past its
    reading budget (`bot.pdf_text`: PDFs are read in a child process, never on the event loop)."""
    check_size(name, len(data), max_bytes, language)
    if PurePosixPath(name).suffix.lower() == PDF:
        extracted, refused = await pdfs.text(data)
        if extracted is None:
            key = {"no_text": "file_no_text", "budget": "file_too_complex"}.get(refused or "", "file_not_decodable")
            log.info("a PDF was not read: %s", refused or "unreadable")
            raise FileRefused(text(key, language, name=name))
        return extracted
    return decoded_text(name, data, language)


def is_text_name(name: str) -> bool:
    """A name a text file may have: a known text type, or no extension at all (README, stdin)."""
    suffix = PurePosixPath(name).suffix.lower()
    return suffix in TEXT_EXTENSIONS or not suffix


def decoded_text(name: str, data: bytes, language: Language) -> str:
    """A text file's bytes as text (UTF-8, or CP949 which covers EUC-KR); FileRefused for anything else. The one
    rule for every file that becomes 맥락: chat attachments, `kullm ask/prompt --context-file`. Linear in the
    bytes, which the caller has already held to its size limit: cheap enough for the event loop."""
    if not is_text_name(name) or b"\x00" in data:
        raise FileRefused(text("file_not_text", language, name=name))
    for encoding in ("utf-8-sig", "cp949"):  # CP949 is a superset of EUC-KR
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise FileRefused(text("file_not_decodable", language, name=name))


def files_context(files: list[tuple[str, str]]) -> str:
    """Files' texts as one 맥락: a lone file as it is, several each under its name."""
    if len(files) == 1:
        return files[0][1]
    return "\n\n".join(f"[{name}]\n{body}" for name, body in files)
