"""Turn uploaded files into plain text with a title: .txt, .md, .html, .pdf (pypdf), .docx (python-docx).

Every loader works on bytes, so uploads and files on disk share one path. Text files are decoded as UTF-8
or, failing that, with charset detection; bytes that are not text in any encoding are refused rather than
stored as mojibake. PDFs keep page boundaries as character spans so citations can name the page.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePath
from zipfile import BadZipFile, ZipFile

from rag.errors import InvalidDocumentNameError, RagError, UnreadableDocumentError, UnsupportedDocumentError

CONTROL_CHARS = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")
MAX_CONTROL_FRACTION = 0.01
MAX_NAME_CHARS = 255  # a file name's usual limit; longer ones would also crowd every prompt's titles
MAX_DOCX_UNPACKED_BYTES = 100_000_000  # a zip bomb's parts are refused before any is unpacked


@dataclass(frozen=True)
class PageSpan:
    number: int  # 1-based
    start: int  # character offsets into LoadedDocument.text
    end: int


@dataclass(frozen=True)
class LoadedDocument:
    name: str  # file name (uploads) or path relative to the ingested folder (`lcrag ingest`)
    title: str
    text: str
    sha256: str  # of the raw bytes: identical files are one document
    pages: tuple[PageSpan, ...] = field(default=())

    def page_at(self, offset: int) -> int | None:
        for page in self.pages:
            if page.start <= offset < page.end:
                return page.number
        return None


def safe_name(name: str) -> str:
    """The bare file name: directory parts (and so path traversal like '../../x') are dropped."""
    bare = PurePath(name.replace("\\", "/")).name
    if bare in ("", ".", ".."):
        raise InvalidDocumentNameError(f"{name!r} is not a file name.")
    if len(bare) > MAX_NAME_CHARS:
        raise InvalidDocumentNameError(
            f"{bare[:40]}... is a {len(bare)}-character file name; rename it to at most {MAX_NAME_CHARS}."
        )
    return bare


def load_path(path: Path, name: str | None = None) -> LoadedDocument:
    """Read a local file; `name` (default: the file name) is what the collection calls it, e.g. its path
    relative to an ingested folder, so `a/README.md` and `b/README.md` are two documents."""
    document = load_bytes(path.name, path.read_bytes())
    return replace(document, name=name) if name else document


def load_bytes(name: str, data: bytes) -> LoadedDocument:
    """Read `data` by the type its file name says; raise a clear error for unsupported or unreadable files."""
    name = safe_name(name)
    suffix = PurePath(name).suffix.lower()
    reader = READERS.get(suffix)
    if reader is None:
        supported = ", ".join(sorted(READERS))
        raise UnsupportedDocumentError(
            f"{name}: unsupported file type {suffix or '(none)'}; supported: {supported}."
        )
    if not data.strip():
        raise UnreadableDocumentError(f"{name} is empty.")
    try:
        title, text, pages = reader(name, data)
    except RagError:
        raise
    except (MemoryError, RecursionError):
        raise UnreadableDocumentError(f"{name} is too large or too deeply nested to read.") from None
    except Exception as error:  # parsers fail on hostile files in ways nobody lists: all are the file's fault
        raise UnreadableDocumentError(
            f"{name} could not be read as {suffix} ({type(error).__name__}: {error})."
        ) from None
    if not text.strip():
        raise UnreadableDocumentError(f"{name} contains no text lcrag can read.")
    return LoadedDocument(name, title, text, hashlib.sha256(data).hexdigest(), pages)


def decode_text(name: str, data: bytes) -> str:
    """UTF-8 (with or without BOM), else the encoding charset detection is confident in; never binary."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        from charset_normalizer import from_bytes

        best = from_bytes(data).best()
        if best is None:
            raise UnreadableDocumentError(f"{name} is not text in any encoding lcrag recognises.") from None
        text = str(best)
    if len(CONTROL_CHARS.findall(text)) > MAX_CONTROL_FRACTION * len(text):
        raise UnreadableDocumentError(f"{name} looks like binary data, not text.")
    return text


def _stem(name: str) -> str:
    return PurePath(name).stem


def _read_text(name: str, data: bytes) -> tuple[str, str, tuple[PageSpan, ...]]:
    return _stem(name), decode_text(name, data), ()


def _read_markdown(name: str, data: bytes) -> tuple[str, str, tuple[PageSpan, ...]]:
    text = decode_text(name, data)
    heading = re.search(r"^#\s+(.+?)\s*#*\s*$", text, flags=re.MULTILINE)
    return (heading.group(1) if heading else _stem(name)), text, ()


def _read_html(name: str, data: bytes) -> tuple[str, str, tuple[PageSpan, ...]]:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(decode_text(name, data), "html.parser")
    for hidden in soup(["script", "style", "noscript", "template"]):
        hidden.decompose()
    title = soup.title.get_text(strip=True) if soup.title else ""
    lines = (line.strip() for line in soup.get_text("\n").splitlines())
    return title or _stem(name), "\n".join(line for line in lines if line), ()


def _read_pdf(name: str, data: bytes) -> tuple[str, str, tuple[PageSpan, ...]]:
    logging.getLogger("pypdf").setLevel(logging.ERROR)  # its warnings on damaged files repeat our 422s
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise UnreadableDocumentError(f"{name} is an encrypted PDF; upload an unencrypted copy.")
        page_texts = [page.extract_text() or "" for page in reader.pages]
        title = (reader.metadata.title if reader.metadata else None) or _stem(name)
    except RagError:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, OSError) as error:
        raise UnreadableDocumentError(f"{name} is not a readable PDF ({error}).") from None
    parts, pages, offset = [], [], 0
    for number, page_text in enumerate(page_texts, start=1):
        parts.append(page_text)
        pages.append(PageSpan(number, offset, offset + len(page_text)))
        offset += len(page_text) + 2  # the "\n\n" joining pages belongs to no page
    return str(title), "\n\n".join(parts), tuple(pages)


def _read_docx(name: str, data: bytes) -> tuple[str, str, tuple[PageSpan, ...]]:
    from docx import Document
    from docx.opc.exceptions import PackageNotFoundError

    try:
        _check_unpacked_size(name, data)
        document = Document(io.BytesIO(data))
    except RagError:
        raise
    except (PackageNotFoundError, BadZipFile, ValueError, KeyError, OSError) as error:
        raise UnreadableDocumentError(f"{name} is not a readable .docx file ({error}).") from None
    paragraphs = [paragraph.text for paragraph in document.paragraphs if paragraph.text.strip()]
    return document.core_properties.title or _stem(name), "\n\n".join(paragraphs), ()


def _check_unpacked_size(name: str, data: bytes) -> None:
    """Refuse a zip whose parts unpack to more than MAX_DOCX_UNPACKED_BYTES (zipfile never returns more
    bytes than a part declares, so the declared sizes bound what python-docx will read)."""
    with ZipFile(io.BytesIO(data)) as archive:
        unpacked = sum(info.file_size for info in archive.infolist())
    if unpacked > MAX_DOCX_UNPACKED_BYTES:
        raise UnreadableDocumentError(
            f"{name} unpacks to {unpacked / 1e6:.0f} MB, over the {MAX_DOCX_UNPACKED_BYTES / 1e6:.0f} MB "
            "lcrag reads from a .docx; split it into smaller files."
        )


READERS: dict[str, Callable[[str, bytes], tuple[str, str, tuple[PageSpan, ...]]]] = {
    ".txt": _read_text,
    ".text": _read_text,
    ".md": _read_markdown,
    ".markdown": _read_markdown,
    ".html": _read_html,
    ".htm": _read_html,
    ".pdf": _read_pdf,
    ".docx": _read_docx,
}
