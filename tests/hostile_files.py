"""A folder's worth of hostile uploads, each with what the server must answer and keep (issue 17's corpus).

`HOSTILE` lists (file name, bytes, expected status, phrase in the error or text in the stored document).
Files a server must store are the readable ones among them: their text is checked after the upload.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from tests.documents import docx_with_text_node, make_docx, make_pdf

SENTENCE = "The harbour ferry leaves at nine and returns at dusk."
ENCODED = {  # texts a charset detector can recognise, and the encodings they are written in
    "cp1252": "Le café de la gare ouvre à sept heures. Les élèves y déjeunent souvent après les cours.",
    "latin-1": "Für Ärzte und Bürger öffnet das Rathaus um acht Uhr; die Fähre fährt stündlich.",
    "utf-16": "Паром отправляется в девять часов утра и возвращается вечером к причалу.",
    "shift_jis": "フェリーは毎朝九時に出発し、夕方に港へ戻ります。切符は窓口で買えます。",
}


@dataclass(frozen=True)
class Hostile:
    name: str
    data: bytes
    status: int  # the upload's status when sent alone
    expect: str  # a phrase of the error message (refused) or of the stored text (stored)

    @property
    def stored(self) -> bool:
        return self.status == 200


def encrypted_pdf() -> bytes:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(make_pdf([[SENTENCE]]))))
    writer.encrypt("secret")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def broken_xref_pdf() -> bytes:
    pdf = make_pdf([[SENTENCE]])
    start = pdf.find(b"\nxref\n")
    return pdf[:start] + b"\nxref\n0 9\ngarbage garbage\n" + pdf[pdf.find(b"trailer", start) :]


def hostile_files() -> list[Hostile]:
    pdf = make_pdf([[SENTENCE]])
    files = [
        Hostile("empty.txt", b"", 422, "is empty"),
        Hostile("zero.md", b"", 422, "is empty"),
        Hostile("blank.html", b"  \n\t\n", 422, "is empty"),
        Hostile("random.txt", bytes(range(256)) * 16, 422, "not text"),
        Hostile("program.exe", b"MZ\x90\x00\x03", 415, "unsupported file type .exe"),
        Hostile("picture.pdf", b"\x89PNG\r\n\x1a\n" + bytes(200), 422, "not a readable PDF"),
        Hostile("notes.docx", b"Plain words, not a zip.", 422, "not a readable .docx"),
        Hostile("truncated.pdf", pdf[: len(pdf) // 2], 422, "not a readable PDF"),
        Hostile("encrypted.pdf", encrypted_pdf(), 422, "encrypted PDF; upload an unencrypted copy"),
        Hostile("broken-xref.pdf", broken_xref_pdf(), 422, "not a readable PDF"),
        Hostile(
            "moved-xref.pdf", pdf.replace(b"startxref\n", b"startxref\n9"), 200, SENTENCE
        ),  # pypdf recovers
        Hostile("bomb.docx", docx_with_text_node(101_000_000), 422, "unpacks to 102 MB, over the 100 MB"),
        Hostile(
            "scripts.html",
            b"<html><head><script>stealCookies()</script><title>Ferry</title></head>"
            b"<body onload='x()'><p>" + SENTENCE.encode() + b"</p><script>alert(1)</script></body></html>",
            200,
            SENTENCE,
        ),
        Hostile("../../etc/escape.txt", b"Escaped words stay inside the collection.", 200, "Escaped words"),
        Hostile("a" * 300 + ".txt", b"A very long name.", 400, "304-character file name"),
        Hostile("memo.docx", make_docx([SENTENCE]), 200, SENTENCE),
    ]
    files += [
        Hostile(f"{encoding}.txt", text.encode(encoding), 200, text) for encoding, text in ENCODED.items()
    ]
    return files
