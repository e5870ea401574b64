"""Real document files built in tests: a minimal valid PDF (Helvetica text, one stream per page) and .docx."""

from __future__ import annotations

import io


def make_pdf(pages: list[list[str]], title: str | None = None) -> bytes:
    """A PDF with one page per list of lines; pypdf extracts the lines back."""
    objects: list[bytes] = []
    page_ids = [4 + 2 * i for i in range(len(pages))]
    kids = " ".join(f"{pid} 0 R" for pid in page_ids)
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>".encode())
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    for page_id, lines in zip(page_ids, pages, strict=True):
        escaped = [line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") for line in lines]
        stream = "BT /F1 11 Tf 14 TL 72 740 Td " + " ".join(f"({line}) Tj T*" for line in escaped) + " ET"
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> "
            f"/Contents {page_id + 1} 0 R >>".encode()
        )
        objects.append(f"<< /Length {len(stream)} >>\nstream\n{stream}\nendstream".encode())
    info_ref = b""
    if title is not None:
        objects.append(f"<< /Title ({title}) >>".encode())
        info_ref = f" /Info {len(objects)} 0 R".encode()
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(f"{number} 0 obj\n".encode() + body + b"\nendobj\n")
    xref = out.tell()
    out.write(f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode())
    for offset in offsets:
        out.write(f"{offset:010d} 00000 n \n".encode())
    out.write(f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R".encode() + info_ref + b" >>\n")
    out.write(f"startxref\n{xref}\n%%EOF\n".encode())
    return out.getvalue()


def make_docx(paragraphs: list[str], title: str | None = None) -> bytes:
    from docx import Document

    document = Document()
    if title:
        document.core_properties.title = title
    for paragraph in paragraphs:
        document.add_paragraph(paragraph)
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def rewrite_zip_part(data: bytes, part: str, content: bytes) -> bytes:
    """A copy of the zip `data` (e.g. a .docx) with `part` replaced by `content`."""
    import zipfile

    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as copy:
        for info in source.infolist():
            copy.writestr(info.filename, content if info.filename == part else source.read(info.filename))
    return out.getvalue()


def docx_with_text_node(characters: int) -> bytes:
    """A .docx whose one paragraph is `characters` letters: small, but it unpacks to that many bytes."""
    body = b"a" * characters
    xml = (
        b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        b'<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
        b"<w:body><w:p><w:r><w:t>" + body + b"</w:t></w:r></w:p></w:body></w:document>"
    )
    return rewrite_zip_part(make_docx(["placeholder"]), "word/document.xml", xml)
