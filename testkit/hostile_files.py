"""Files a hostile user attaches to a question: PDFs written by hand to cost a parser as much as possible.

Each is small enough to pass MAX_FILE_BYTES (200 KB by default): what they cost is inside. `corpus()` maps a
case to (file name, bytes); tests and the soak's "hostile users" row read them through the adapters' reader.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Sequence

TEXT_PAGE = b"BT /F1 18 Tf 72 720 Td (%s) Tj ET"
FONT = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"


def pdf(objects: Sequence[bytes], *, xref: bool = True) -> bytes:
    """Objects 1…n (1 is the catalog) with a cross-reference table and trailer; `xref=False` writes one whose
    offsets all point at byte 0."""
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out) if xref else 0)
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    start = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, start)
    return bytes(out)


def stream(data: bytes, filters: str = "") -> bytes:
    head = b"<< /Length %d%s >>\nstream\n" % (len(data), (b" /Filter " + filters.encode()) if filters else b"")
    return head + data + b"\nendstream"


def one_page(contents: bytes, *, kids: bytes = b"[3 0 R]", count: int = 1) -> list[bytes]:
    """Catalog, page tree, one page whose content stream is object 4, its font."""
    return [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids %s /Count %d >>" % (kids, count),
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        contents,
        FONT,
    ]


def minimal_pdf(line: str) -> bytes:
    """A one-page PDF showing `line` in Helvetica."""
    return pdf(one_page(stream(TEXT_PAGE % line.encode())))


def zeros(size: int) -> bytes:
    """`size` zero bytes, Flate-compressed without ever holding them."""
    packer, chunk = zlib.compressobj(9), bytes(1 << 20)
    return b"".join(packer.compress(chunk) for _ in range(size >> 20)) + packer.flush()


def decompression_bomb() -> bytes:
    """80 MB of zeros as one 80 KB Flate stream."""
    return pdf(one_page(stream(zeros(80 << 20), "/FlateDecode")))


def text_bomb() -> bytes:
    """10 MB of text operators (what took 31 s and 318 MB on the event loop) in a 30 KB stream."""
    operators = b"BT /F1 12 Tf 72 720 Td " + b"(KULLM) Tj " * 900_000 + b"ET"
    return pdf(one_page(stream(zlib.compress(operators, 9), "/FlateDecode")))


def double_compression() -> bytes:
    """A bomb compressed twice: 2 KB that inflate to 400 MB."""
    inner = zeros(400 << 20)
    return pdf(one_page(stream(zlib.compress(inner, 9), "[/FlateDecode /FlateDecode]")))


def page_flood() -> bytes:
    """One page named 30,000 times in the page tree."""
    kids = b"[" + b"3 0 R " * 30_000 + b"]"
    return pdf(one_page(stream(TEXT_PAGE % b"page"), kids=kids, count=30_000))


def deep_nesting() -> bytes:
    """Arrays nested 5,000 deep in the page's resources (992 bytes of them already exhausted the stack)."""
    page = one_page(stream(TEXT_PAGE % b"deep"))
    page[2] = page[2].replace(b"/MediaBox [0 0 612 792]", b"/MediaBox [0 0 612 792] /Deep " + b"[" * 5000 + b"]" * 5000)
    return pdf(page)


def parent_loop() -> bytes:
    """A page tree whose node is its own kid."""
    return pdf(one_page(stream(TEXT_PAGE % b"loop"), kids=b"[2 0 R 3 0 R]", count=2))


def bad_xref() -> bytes:
    """Every cross-reference offset wrong."""
    return pdf(one_page(stream(TEXT_PAGE % b"xref")), xref=False)


@functools.cache
def corpus() -> dict[str, tuple[str, bytes]]:
    """Case → (file name, bytes): built once, on first use."""
    return {
        "decompression bomb": ("bomb.pdf", decompression_bomb()),
        "text bomb": ("text.pdf", text_bomb()),
        "double compression": ("double.pdf", double_compression()),
        "page-reference flood": ("flood.pdf", page_flood()),
        "deep nesting": ("deep.pdf", deep_nesting()),
        "parent loop": ("loop.pdf", parent_loop()),
        "bad xref": ("xref.pdf", bad_xref()),
        "NUL pdf": ("nul.pdf", bytes(4096)),
        "NUL text": ("nul.txt", b"abc" + bytes(100)),
        "mixed encodings": ("mixed.txt", "앞은 UTF-8, ".encode() + "뒤는 CP949".encode("cp949")),
    }
