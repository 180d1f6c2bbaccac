"""Readers per format: Markdown, plain text, HTML, PDF (text layer) and JSONL. Each yields ParsedDocuments.

HTML is rendered to Markdown-style text (headings as `#` lines) so one heading-aware chunker serves all
formats, and character offsets point into the text that is stored.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path

from kbservice.control_characters import drop_control_characters, drop_control_characters_in
from kbservice.types import ParsedDocument

SUPPORTED_SUFFIXES = {
    ".md": "markdown",
    ".markdown": "markdown",
    ".txt": "text",
    ".html": "html",
    ".htm": "html",
    ".pdf": "pdf",
    ".jsonl": "jsonl",
}


class ParseError(Exception):
    """A file cannot be ingested; the message says why, for a person."""


def discover_files(paths: list[Path]) -> list[tuple[Path, str]]:
    """Every file under `paths` (folders walked recursively, hidden files skipped) with its relative key."""
    found: list[tuple[Path, str]] = []
    for path in paths:
        if path.is_dir():
            for file in sorted(path.rglob("*")):
                relative = file.relative_to(path)
                if file.is_file() and not any(part.startswith(".") for part in relative.parts):
                    found.append((file, relative.as_posix()))
        else:
            found.append((path, path.name))
    return found


def parse_file(path: Path, *, key: str, source: str | None, max_bytes: int) -> list[ParsedDocument]:
    """Reads one file into documents. Raises ParseError with a clear reason for anything unusable."""
    if not path.exists():
        raise ParseError("no such file")
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        supported = ", ".join(sorted(SUPPORTED_SUFFIXES))
        raise ParseError(f"unsupported format {suffix or '(no extension)'!r}; supported: {supported}")
    size = path.stat().st_size
    if size == 0:
        raise ParseError("empty file")
    if size > max_bytes:
        raise ParseError(
            f"file is {size / 1e6:.1f} MB, above the limit of {max_bytes / 1e6:.1f} MB (ingest.max_file_mb)"
        )
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ParseError(f"cannot read: {exc.strerror or exc}") from exc
    format_name = SUPPORTED_SUFFIXES[suffix]
    source_name = source or "local"
    if format_name == "jsonl":
        return list(_parse_jsonl(_decode(data), key=key, source=source_name))
    reader = _READERS[format_name]
    text, title, citation = reader(data)
    text = _normalise(text)
    if not text.strip():
        raise ParseError("no text found in the file")
    return [
        ParsedDocument(
            source_key=f"{source_name}:{key}",
            source=source_name,
            title=citation.pop("title", None) or title or _first_line(text) or path.stem,
            text=text,
            format=format_name,
            publisher=citation.get("publisher"),
            effective_date=citation.get("effective_date"),
            url=citation.get("url"),
            metadata={"conditions": citation["conditions"]} if citation.get("conditions") else {},
        )
    ]


def _decode(data: bytes) -> str:
    if b"\x00" in data[:8192]:
        raise ParseError("binary data, not text (NUL bytes found)")
    try:
        return drop_control_characters(data.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise ParseError(f"not valid UTF-8 (bad byte at offset {exc.start})") from exc


def _normalise(text: str) -> str:
    text = drop_control_characters(text).replace("\r\n", "\n").replace("\r", "\n")
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _first_line(text: str) -> str:
    for line in text.splitlines():
        stripped = line.strip().lstrip("#").strip()
        if stripped:
            return stripped[:200]
    return ""


Citation = dict[str, str]
_FRONT_MATTER = re.compile(r"\A---[ \t]*\n(.*?)\n---[ \t]*(?:\n|\Z)", re.DOTALL)
CITATION_KEYS = ("title", "publisher", "effective_date", "url")
# Front-matter keys naming the conditions a guideline covers: they join the candidate diagnoses.
CONDITION_KEYS = ("condition", "conditions")


def _read_markdown(data: bytes) -> tuple[str, str | None, Citation]:
    """Markdown with optional front matter (`---` lines around `key: value` pairs for title, publisher,
    effective_date, url, and `conditions`: the comma-separated conditions the guideline covers)."""
    text = _decode(data)
    citation: Citation = {}
    front = _FRONT_MATTER.match(text)
    if front:
        for line in front.group(1).splitlines():
            key, _, value = line.partition(":")
            key = key.strip().lower().replace("-", "_")
            if key in CITATION_KEYS and value.strip():
                citation[key] = value.strip().strip("\"'")
            elif key in CONDITION_KEYS and value.strip():
                citation["conditions"] = value.strip().strip("\"'")
        text = text[front.end() :]
    match = re.search(r"^#\s+(.+)$", text, flags=re.MULTILINE)
    return text, match.group(1).strip() if match else None, citation


def _read_text(data: bytes) -> tuple[str, str | None, Citation]:
    return _decode(data), None, {}


def _html_citation(soup) -> Citation:  # type: ignore[no-untyped-def]
    citation: Citation = {}
    for name, key in (
        ("publisher", "publisher"),
        ("dc.publisher", "publisher"),
        ("date", "effective_date"),
        ("dc.date", "effective_date"),
        ("citation_date", "effective_date"),
    ):
        tag = soup.find("meta", attrs={"name": re.compile(f"^{re.escape(name)}$", re.I)})
        if tag and tag.get("content") and key not in citation:
            citation[key] = tag["content"].strip()
    canonical = soup.find("link", rel="canonical")
    if canonical and canonical.get("href"):
        citation["url"] = canonical["href"].strip()
    return citation


def _read_html(data: bytes) -> tuple[str, str | None, Citation]:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(_decode(data), "html.parser")
    citation = _html_citation(soup)
    for tag in soup(["script", "style", "noscript", "nav", "footer"]):
        tag.decompose()
    title = soup.title.get_text(" ", strip=True) if soup.title else None
    blocks: list[str] = []
    body = soup.body or soup
    for element in body.find_all(["h1", "h2", "h3", "h4", "h5", "h6", "p", "li", "pre", "td", "dt", "dd"]):
        if element.find_parent(["li", "p", "td"]) is not None and element.name in ("p", "li"):
            continue  # nested block: its text is already part of the enclosing one
        content = " ".join(element.get_text(" ", strip=True).split())
        if not content:
            continue
        if element.name.startswith("h"):
            blocks.append(f"{'#' * int(element.name[1])} {content}")
        elif element.name == "li":
            blocks.append(f"- {content}")
        else:
            blocks.append(content)
    if not blocks:  # HTML without block elements: keep its bare text
        blocks = [body.get_text("\n", strip=True)]
    if title is None:
        heading = body.find(["h1", "h2"])
        title = heading.get_text(" ", strip=True) if heading else None
    return "\n\n".join(blocks), title, citation


def _read_pdf(data: bytes) -> tuple[str, str | None, Citation]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        pages = [page.extract_text() or "" for page in reader.pages]
        title = (reader.metadata.title if reader.metadata else None) or None
    except (PdfReadError, ValueError, KeyError, TypeError) as exc:
        raise ParseError(f"cannot read PDF: {exc}") from exc
    text = "\n\n".join(page.strip() for page in pages if page.strip())
    if not text:
        raise ParseError("the PDF has no text layer (scanned image?); OCR it first")
    return text, title, {}


_READERS: dict[str, Callable[[bytes], tuple[str, str | None, Citation]]] = {
    "markdown": _read_markdown,
    "text": _read_text,
    "html": _read_html,
    "pdf": _read_pdf,
}

_JSONL_META = ("publisher", "effective_date", "url")


def _parse_jsonl(text: str, *, key: str, source: str) -> Iterator[ParsedDocument]:
    """One document per line: `title` and `text` required; `id` (identity), publisher, effective_date, url,
    and any other fields kept as metadata."""
    seen_ids: set[str] = set()
    count = 0
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = drop_control_characters_in(json.loads(line))  # "\u0000" escapes decode to real NULs
        except json.JSONDecodeError as exc:
            raise ParseError(f"line {line_number}: not valid JSON ({exc.msg})") from exc
        if not isinstance(record, dict):
            raise ParseError(f"line {line_number}: expected a JSON object")
        for field_name in ("title", "text"):
            value = record.get(field_name)
            if not isinstance(value, str) or not value.strip():
                raise ParseError(f"line {line_number}: field {field_name!r} is missing or not a non-empty string")
        doc_id = str(record.get("id") or record.get("source_id") or record["title"])
        if doc_id in seen_ids:
            raise ParseError(f"line {line_number}: duplicate id {doc_id!r} in the same file")
        seen_ids.add(doc_id)
        meta = {k: v for k, v in record.items() if k not in ("title", "text", "id", "source", *_JSONL_META)}
        count += 1
        yield ParsedDocument(
            source_key=f"{source}:{key}#{doc_id}",
            source=record["source"] if isinstance(record.get("source"), str) else source,
            title=record["title"].strip(),
            text=_normalise(record["text"]),
            format="jsonl",
            publisher=_optional_str(record.get("publisher")),
            effective_date=_optional_str(record.get("effective_date")),
            url=_optional_str(record.get("url")),
            metadata=meta,
        )
    if count == 0:
        raise ParseError("no JSON lines found")


def _optional_str(value: object) -> str | None:
    return str(value) if value not in (None, "") else None
