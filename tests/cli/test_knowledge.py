"""Every command through the real CLI entry point, on SQLite and PostgreSQL, plus the bad-input list."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.runner import Cli
from tests.cli.snapshots import check_json_keys
from tests.conftest import DEMO_GUIDELINES, REPO_ROOT, write
from tests.helpers import guideline

# The newest migration file, read from the folder rather than from kbservice's own head lookup, so that a
# migration added without its revision chain (or a lookup that stops early) shows up here.
MIGRATION_FILES = (REPO_ROOT / "migrations" / "versions").glob("[0-9][0-9][0-9][0-9]_*.py")
NEWEST_MIGRATION = max(path.name[:4] for path in MIGRATION_FILES)


def state_of(run: Cli) -> tuple:
    """Everything a failed command must leave as it was."""
    versions = run.json("versions")
    documents = run.json("documents")
    health = run.json("index", "verify", expect=0)
    return versions, documents, health["sql_chunks"], health["index_vectors"], health["applied_seq"]


def test_init_is_idempotent(run: Cli) -> None:
    out, _ = run("init")
    assert f"migration {NEWEST_MIGRATION}" in out


def test_full_command_tour(run: Cli, tmp_path: Path) -> None:
    report = run.json(
        "ingest", "guidelines", str(DEMO_GUIDELINES), "--source", "demo", "--author", "ana", "--message", "starter"
    )
    assert report["version"] == 1 and len(report["added"]) == 8
    check_json_keys("ingest guidelines", report)

    versions = run.json("versions")
    assert len(versions) == 1
    check_json_keys("versions", versions)
    assert {"version", "parent", "created_at", "author", "message", "content_hash", "documents", "chunks"} <= set(
        versions[0]
    )
    assert (versions[0]["author"], versions[0]["message"], versions[0]["documents"]) == ("ana", "starter", 8)

    docs = run.json("documents")
    assert len(docs) == 8
    check_json_keys("documents", docs)
    assert {"document_id", "title", "source", "content_hash", "version_added"} <= set(docs[0])

    hits = run.json("search", "CURB-65 severity score", "--k", "3")
    assert len(hits) == 3
    check_json_keys("search", hits)
    assert {"chunk_id", "document_id", "title", "score", "text", "version_added"} <= set(hits[0])
    assert "CURB-65" in hits[0]["text"]
    for mode in ("dense", "lexical"):
        assert run.json("search", "post-bronchodilator FEV1/FVC ratio", "--mode", mode)[0]["title"].startswith(
            "Chronic obstructive"
        )

    out, _ = run("search", "anticoagulation for pulmonary embolism")
    assert "hit(s) at version 1" in out and "Pulmonary embolism" in out

    copd = next(d for d in docs if d["title"].startswith("Chronic obstructive"))
    out, _ = run("retract", str(copd["document_id"]), "--reason", "withdrawn")
    assert "version 2" in out
    assert all(h["document_id"] != copd["document_id"] for h in run.json("search", "tiotropium", "--k", "50"))
    assert run.json("search", "tiotropium", "--as-of", "1")[0]["document_id"] == copd["document_id"]

    diff = run.json("diff", "1", "2")
    check_json_keys("diff", diff)
    assert [d["document_id"] for d in diff["documents_removed"]] == [copd["document_id"]]
    assert diff["documents_added"] == [] and diff["chunks_removed"] > 0
    assert len(run.json("documents")) == 7
    assert len(run.json("documents", "--as-of", "1")) == 8

    health = run.json("index", "verify")
    assert health["ok"] is True
    check_json_keys("index verify", health)
    assert health["sql_chunks"] == health["index_vectors"] > 0
    assert health["missing"] == [] and health["orphans"] == []
    out, _ = run("index", "rebuild")
    assert "index rebuilt" in out
    out, _ = run("versions")
    assert "withdrawn" in out
    entries = run.json("audit", "list")
    assert [e["kind"] for e in entries] == ["knowledge.version", "knowledge.version"]
    check_json_keys("audit list knowledge", entries)
    verified = run.json("audit", "verify")
    assert verified["ok"] is True
    check_json_keys("audit verify", verified)


def test_reingest_says_nothing_changed(run: Cli, tmp_path: Path) -> None:
    path = guideline(tmp_path, "a.md", "Asthma", "Inhaled corticosteroids.")
    run("ingest", "guidelines", str(path))
    out, _ = run("ingest", "guidelines", str(path))
    assert "nothing changed" in out


# The demo is the README's main job on the embedded default (SQLite, the packaged models, about 2.5 minutes
# here); PostgreSQL runs every other CLI test, so the demo is not repeated on it (CI's pytest time).
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_demo(run: Cli) -> None:
    out, _ = run("demo")
    assert "DEMONSTRATION" not in out or "not clinical advice" in out
    assert "knowledge version 1" in out
    assert "Amoxicillin" in out
    out, _ = run("demo")
    assert "already present" in out


def _pdf_without_text(path: Path) -> Path:
    from fpdf import FPDF

    path.parent.mkdir(parents=True, exist_ok=True)
    pdf = FPDF()
    pdf.add_page()
    pdf.rect(10, 10, 50, 50)
    pdf.output(str(path))
    return path


def _big_file(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        handle.truncate(50_000_000)
    return path


BAD_FILES = {
    "empty.md": lambda p: write(p, ""),
    "garbage.txt": lambda p: write(p, bytes(range(256)) * 64),
    "scan.pdf": _pdf_without_text,
    "big.txt": _big_file,
    "latin1.md": lambda p: write(p, "# Caf\u00e9\n".encode("latin-1")),
    "lines.jsonl": lambda p: write(p, '{"title": "a", "text": "b"}\n{"title": \n'),
    "photo.png": lambda p: write(p, b"\x89PNG\r\n\x1a\n"),
}
BAD_MESSAGES = {
    "empty.md": "empty file",
    "garbage.txt": "binary data",
    "scan.pdf": "no text layer",
    "big.txt": "above the limit",
    "latin1.md": "not valid UTF-8",
    "lines.jsonl": "line 2: not valid JSON",
    "photo.png": "unsupported format",
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_files_fail_clearly_and_change_nothing(run: Cli, tmp_path: Path, name: str) -> None:
    run("ingest", "guidelines", str(guideline(tmp_path, "ok.md", "Asthma", "ICS.")))
    before = state_of(run)
    bad = BAD_FILES[name](tmp_path / "bad" / name)
    good = guideline(tmp_path / "bad", "good.md", "COPD", "LAMA.")
    _, err = run("ingest", "guidelines", str(bad), str(good), expect=1)
    assert BAD_MESSAGES[name] in err and name in err and "nothing was changed" in err
    assert state_of(run) == before


def test_bad_references_fail_clearly_and_change_nothing(run: Cli, tmp_path: Path) -> None:
    run("ingest", "guidelines", str(guideline(tmp_path, "ok.md", "Asthma", "ICS.")))
    before = state_of(run)
    _, err = run("retract", "4242", expect=1)
    assert "document 4242 does not exist" in err
    _, err = run("search", "asthma", "--as-of", "5", expect=1)
    assert "knowledge version 5 does not exist" in err
    _, err = run("diff", "1", "9", expect=1)
    assert "version 9 does not exist" in err
    _, err = run("ingest", "guidelines", str(tmp_path / "missing.md"), expect=1)
    assert "no such file" in err
    assert state_of(run) == before


@pytest.mark.parametrize(
    "args",
    [
        ("search", "asthma", "--as-of", "100000000000000000000"),
        ("diff", "1", "100000000000000000000"),
        ("documents", "--as-of", "100000000000000000000"),
        ("cases", "--as-of", "100000000000000000000"),
        ("recommend", "--findings", "wheeze", "--as-of", "100000000000000000000"),
        ("audit", "list", "--after", "100000000000000000000"),
        ("search", "asthma", "--as-of", "-1"),
    ],
)
def test_a_version_beyond_64_bits_is_one_clear_line(run: Cli, tmp_path: Path, args: tuple[str, ...]) -> None:
    # Issue 15, defect 5: these printed an OverflowError traceback from the database driver.
    run("ingest", "guidelines", str(guideline(tmp_path, "ok.md", "Asthma", "ICS.")))
    out, err = run(*args, expect=1)
    assert "out of range" in err and "Traceback" not in err + out
    assert len(err.strip().splitlines()) == 1


def test_corrupt_snapshot_fails_search_and_verify(run: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run("ingest", "guidelines", str(DEMO_GUIDELINES))
    index_dir = tmp_path / "data" / "index"
    manifest = json.loads((index_dir / "manifest.json").read_text())
    index_file = index_dir / manifest["index_file"]
    index_file.write_bytes(index_file.read_bytes()[:1000])
    _, err = run("search", "asthma", expect=1)
    assert "corrupt or truncated" in err and "index rebuild" in err
    health = run.json("index", "verify", expect=1)
    assert health["ok"] is False
    run("index", "rebuild")
    assert run.json("index", "verify")["ok"] is True
    assert run.json("search", "asthma", "--k", "1")


def test_index_from_other_embedder_is_refused(
    run: Cli, monkeypatch: pytest.MonkeyPatch, tiny_embedder_dir: Path
) -> None:
    run("ingest", "guidelines", str(DEMO_GUIDELINES))
    monkeypatch.setenv("KB_EMBEDDER__MODEL_PATH", str(tiny_embedder_dir))
    _, err = run("search", "asthma", expect=1)
    assert "configured embedder is tiny" in err
    assert run.json("index", "verify", expect=1)["ok"] is False
    run("index", "rebuild", "--reembed")
    assert run.json("index", "verify")["ok"] is True


def test_database_at_older_migration_is_refused(run: Cli, database_url: str) -> None:
    from kbservice.db import make_engine, migrate

    engine = make_engine(database_url)
    from alembic import command

    command.downgrade(migrate.alembic_config(engine), "0001")
    engine.dispose()
    _, err = run("versions", expect=1)
    assert f"at migration 0001 but this kbservice needs {NEWEST_MIGRATION}" in err and "kbservice init" in err
    run("init")
    assert run.json("versions") == []


def test_uninitialised_database_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("KB_DATA_DIR", str(tmp_path / "fresh"))
    monkeypatch.delenv("KB_DATABASE_URL", raising=False)
    _, err = Cli(capsys)("versions", expect=1)
    assert "not initialised" in err and "kbservice init" in err


def test_help_explains_commands(capsys) -> None:  # type: ignore[no-untyped-def]
    out, _ = Cli(capsys)("--help")
    for command in ("init", "ingest", "search", "versions", "diff", "retract", "documents", "index", "demo"):
        assert command in out
