from __future__ import annotations

import json
from pathlib import Path

import pytest

from kbservice.ingest.parsers import ParseError, discover_files, parse_file
from tests.conftest import write

MB = 1_000_000


def parse(path: Path, **kwargs):  # type: ignore[no-untyped-def]
    return parse_file(path, key=path.name, source=kwargs.pop("source", None), max_bytes=kwargs.pop("max_bytes", 5 * MB))


def text_pdf(path: Path, lines: list[str]) -> Path:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("helvetica", size=12)
    for line in lines:
        pdf.cell(0, 10, line, new_x="LMARGIN", new_y="NEXT")
    pdf.output(str(path))
    return path


def test_markdown_title_and_identity(tmp_path: Path) -> None:
    doc = parse(write(tmp_path / "cap.md", "# Pneumonia\n\n## Treatment\nAmoxicillin."), source="nice")[0]
    assert doc.title == "Pneumonia"
    assert doc.source_key == "nice:cap.md"
    assert doc.source == "nice"
    assert doc.format == "markdown"
    assert "Amoxicillin." in doc.text


def test_markdown_front_matter_carries_citation(tmp_path: Path) -> None:
    content = "---\npublisher: NICE\neffective-date: 2024-03-01\nurl: https://example.org/ng1\n---\n# CAP\nText."
    doc = parse(write(tmp_path / "cap.md", content))[0]
    assert (doc.publisher, doc.effective_date, doc.url) == ("NICE", "2024-03-01", "https://example.org/ng1")
    assert doc.text.startswith("# CAP")


def test_html_meta_carries_citation(tmp_path: Path) -> None:
    html = (
        '<html><head><meta name="publisher" content="WHO"><meta name="DC.date" content="2023-05-01">'
        '<link rel="canonical" href="https://example.org/x"></head><body><h1>X</h1><p>Y.</p></body></html>'
    )
    doc = parse(write(tmp_path / "x.html", html))[0]
    assert (doc.publisher, doc.effective_date, doc.url) == ("WHO", "2023-05-01", "https://example.org/x")


def test_plain_text_title_is_first_line(tmp_path: Path) -> None:
    doc = parse(write(tmp_path / "note.txt", "\n\nAsthma overview\nUse inhaled steroids.\r\n"))[0]
    assert doc.title == "Asthma overview"
    assert "\r" not in doc.text


def test_html_headings_become_markdown_and_scripts_are_dropped(tmp_path: Path) -> None:
    html = (
        "<html><head><title>COPD guide</title><script>alert('x')</script></head><body>"
        "<h1>COPD</h1><p>Spirometry confirms it.</p><h2>Treatment</h2><ul><li>Tiotropium</li></ul></body></html>"
    )
    doc = parse(write(tmp_path / "copd.html", html))[0]
    assert doc.title == "COPD guide"
    assert doc.text.splitlines()[0] == "# COPD"
    assert "## Treatment" in doc.text
    assert "- Tiotropium" in doc.text
    assert "alert" not in doc.text


def test_pdf_text_layer(tmp_path: Path) -> None:
    doc = parse(text_pdf(tmp_path / "ht.pdf", ["Hypertension", "Amlodipine for people over 55."]))[0]
    assert "Amlodipine for people over 55." in doc.text
    assert doc.format == "pdf"


def test_pdf_without_text_is_refused(tmp_path: Path) -> None:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_page()
    pdf.rect(10, 10, 50, 50)
    pdf.output(str(tmp_path / "scan.pdf"))
    with pytest.raises(ParseError, match="no text layer"):
        parse(tmp_path / "scan.pdf")


def test_corrupt_pdf_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ParseError, match="PDF"):
        parse(write(tmp_path / "bad.pdf", b"%PDF-1.4\n garbage garbage \n%%EOF"))


def test_jsonl_documents_with_metadata(tmp_path: Path) -> None:
    lines = [
        {
            "id": "g1",
            "title": "UTI",
            "text": "Nitrofurantoin.",
            "url": "https://example.org/uti",
            "publisher": "X",
            "effective_date": "2024-01-01",
            "grade": "A",
        },
        {"title": "PE", "text": "Apixaban."},
    ]
    path = write(tmp_path / "g.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n\n")
    docs = parse(path, source="who")
    assert [d.source_key for d in docs] == ["who:g.jsonl#g1", "who:g.jsonl#PE"]
    assert docs[0].url == "https://example.org/uti"
    assert docs[0].effective_date == "2024-01-01"
    assert docs[0].metadata == {"grade": "A"}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"title": "a", "text": "b"}\n{not json}\n', "line 2: not valid JSON"),
        ('{"title": "a"}\n', "line 1: field 'text'"),
        ("[1, 2]\n", "line 1: expected a JSON object"),
        ('{"id": 1, "title": "a", "text": "b"}\n{"id": 1, "title": "c", "text": "d"}\n', "duplicate id"),
    ],
)
def test_bad_jsonl_names_the_line(tmp_path: Path, content: str, message: str) -> None:
    with pytest.raises(ParseError, match=message):
        parse(write(tmp_path / "bad.jsonl", content))


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.md", b"", "empty file"),
        ("blob.txt", bytes(range(256)) * 8, "binary data"),
        ("latin.txt", "caf\u00e9 au lait".encode("latin-1"), "not valid UTF-8"),
        ("image.png", b"\x89PNG\r\n", "unsupported format '.png'"),
        ("noext", b"hello", "unsupported format"),
        ("blank.md", b"   \n\n  ", "no text found"),
    ],
)
def test_unusable_files_get_clear_errors(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    with pytest.raises(ParseError, match=message):
        parse(write(tmp_path / name, content))


def test_oversized_file_is_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "huge.txt"
    with path.open("wb") as handle:
        handle.truncate(50 * MB)  # a sparse 50 MB file
    with pytest.raises(ParseError, match=r"50\.0 MB, above the limit of 5\.0 MB"):
        parse(path)


def test_discover_walks_folders_and_skips_hidden(tmp_path: Path) -> None:
    write(tmp_path / "g" / "a.md", "# A")
    write(tmp_path / "g" / "sub" / "b.txt", "B")
    write(tmp_path / "g" / ".git" / "c.md", "C")
    write(tmp_path / "one.md", "# One")
    found = discover_files([tmp_path / "g", tmp_path / "one.md"])
    assert [key for _, key in found] == ["a.md", "sub/b.txt", "one.md"]
