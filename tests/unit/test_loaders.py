"""Loaders: each supported type gives text and a title; bad files are refused with a clear error."""

import pytest

from rag.errors import InvalidDocumentNameError, UnreadableDocumentError, UnsupportedDocumentError
from rag.loaders import MAX_DOCX_UNPACKED_BYTES, load_bytes, safe_name
from tests.documents import docx_with_text_node, make_docx, make_pdf, rewrite_zip_part


def test_plain_text_keeps_its_content_and_hashes_its_bytes() -> None:
    doc = load_bytes("notes.txt", b"Line one.\nLine two.")
    assert (doc.name, doc.title, doc.text, doc.pages) == ("notes.txt", "notes", "Line one.\nLine two.", ())
    assert len(doc.sha256) == 64 and doc.sha256 == load_bytes("other.txt", b"Line one.\nLine two.").sha256


def test_markdown_title_is_its_first_heading() -> None:
    doc = load_bytes("guide.md", b"Intro\n\n# Installing lcrag\n\nRun make serve.\n")
    assert doc.title == "Installing lcrag" and "Run make serve." in doc.text


def test_html_gives_visible_text_and_its_title() -> None:
    html = b"<html><head><title>Release notes</title><style>p{}</style><script>var x=1;</script></head>" \
        b"<body><h1>Version 2</h1><p>Faster &amp; smaller.</p></body></html>"  # fmt: skip
    doc = load_bytes("notes.html", html)
    assert doc.title == "Release notes"
    assert doc.text.splitlines() == ["Release notes", "Version 2", "Faster & smaller."]


def test_pdf_pages_become_spans_and_the_metadata_title_is_used() -> None:
    doc = load_bytes(
        "report.pdf", make_pdf([["First page text."], ["Second page text."]], title="Annual report")
    )
    assert doc.title == "Annual report"
    assert [page.number for page in doc.pages] == [1, 2]
    assert doc.text[doc.pages[1].start : doc.pages[1].end].strip() == "Second page text."
    assert doc.page_at(doc.text.index("Second")) == 2 and doc.page_at(0) == 1


def test_docx_paragraphs_and_title() -> None:
    doc = load_bytes("memo.docx", make_docx(["Budget approved.", "Meeting on Friday."], title="Memo"))
    assert doc.title == "Memo" and doc.text == "Budget approved.\n\nMeeting on Friday."


def test_non_utf8_text_is_decoded_by_detection() -> None:
    text = "Le café de la gare ouvre à sept heures. Les élèves y déjeunent souvent après les cours du matin."
    doc = load_bytes("menu.txt", text.encode("cp1252"))
    assert doc.text == text


@pytest.mark.parametrize(
    ("name", "data", "error", "phrase"),
    [
        ("empty.txt", b"", UnreadableDocumentError, "empty"),
        ("blank.md", b"   \n\n", UnreadableDocumentError, "empty"),
        ("junk.txt", bytes(range(256)) * 8, UnreadableDocumentError, "not text"),
        ("tool.exe", b"MZ\x90\x00", UnsupportedDocumentError, "unsupported file type .exe"),
        ("noext", b"hello", UnsupportedDocumentError, r"unsupported file type \(none\)"),
        ("broken.pdf", b"%PDF-1.4\nthis is not really a pdf", UnreadableDocumentError, "not a readable PDF"),
        ("broken.docx", b"PK\x03\x04 not a zip", UnreadableDocumentError, "not a readable .docx"),
        ("empty.html", b"<html><script>x()</script></html>", UnreadableDocumentError, "no text"),
    ],
)
def test_bad_files_are_refused_with_a_clear_message(name: str, data: bytes, error: type, phrase: str) -> None:
    with pytest.raises(error, match=phrase):
        load_bytes(name, data)


def test_a_docx_python_docx_cannot_parse_is_refused_naming_the_file() -> None:
    broken = rewrite_zip_part(make_docx(["Budget approved."]), "[Content_Types].xml", b"<Types/>")
    with pytest.raises(UnreadableDocumentError, match=r"^memo.docx could not be read as .docx"):
        load_bytes("memo.docx", broken)


def test_a_docx_that_unpacks_past_the_cap_is_refused_before_parsing() -> None:
    bomb = docx_with_text_node(MAX_DOCX_UNPACKED_BYTES + 1)
    assert len(bomb) < 1_000_000  # a small upload
    with pytest.raises(UnreadableDocumentError, match=r"^bomb.docx unpacks to 101 MB, over the 100 MB"):
        load_bytes("bomb.docx", bomb)


def test_a_docx_text_node_past_lxmls_limit_is_a_clear_refusal() -> None:
    with pytest.raises(
        UnreadableDocumentError, match=r"long.docx could not be read as .docx \(XMLSyntaxError"
    ):
        load_bytes("long.docx", docx_with_text_node(20_000_000))


@pytest.mark.parametrize(
    ("given", "kept"),
    [("../../etc/passwd.txt", "passwd.txt"), ("..\\..\\boot.ini.txt", "boot.ini.txt"), ("a/b/c.md", "c.md")],
)
def test_path_traversal_in_file_names_is_reduced_to_the_bare_name(given: str, kept: str) -> None:
    assert safe_name(given) == kept
    assert load_bytes(given, b"text").name == kept


@pytest.mark.parametrize("given", ["..", "/", ""])
def test_names_without_a_file_part_are_refused(given: str) -> None:
    with pytest.raises(InvalidDocumentNameError, match="is not a file name"):
        safe_name(given)


def test_a_name_over_255_characters_is_refused() -> None:
    assert safe_name("a" * 251 + ".txt") == "a" * 251 + ".txt"
    with pytest.raises(
        InvalidDocumentNameError, match=r"is a 256-character file name; rename it to at most 255"
    ):
        safe_name("a" * 252 + ".txt")
