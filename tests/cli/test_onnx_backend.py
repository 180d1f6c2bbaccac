"""The ONNX Runtime embedder through configuration: a base built on it is served, refused by the torch
embedder until re-embedded, and a tampered export is refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kbservice.index.embedder import SentenceTransformerEmbedder
from tests.cli.runner import Cli
from tests.conftest import DEMO_GUIDELINES


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_base_built_on_onnx_serves_and_switching_backends_needs_a_reembed(
    run: Cli, monkeypatch: pytest.MonkeyPatch, onnx_export_dir: Path
) -> None:
    monkeypatch.delenv("KB_EMBEDDER__BACKEND", raising=False)  # the default: fp32 ONNX
    monkeypatch.delenv("KB_EMBEDDER__ONNX_PRECISION", raising=False)
    monkeypatch.setenv("KB_EMBEDDER__EXPORT_DIR", str(onnx_export_dir))
    run("ingest", "guidelines", str(DEMO_GUIDELINES))
    health = run.json("index", "verify")
    assert health["ok"] is True and "+onnx-fp32@" in health["embedder_id"]
    hits = run.json("search", "community-acquired pneumonia antibiotics", "--k", "3", "--mode", "dense")
    assert all("pneumonia" in hit["title"].lower() for hit in hits)

    monkeypatch.setenv("KB_EMBEDDER__ONNX_PRECISION", "int8")  # another export is another embedder
    _, err = run("search", "asthma", expect=1)
    assert "configured embedder is" in err and "+onnx-int8@" in err
    monkeypatch.setenv("KB_EMBEDDER__BACKEND", "torch")
    _, err = run("search", "asthma", expect=1)
    assert f"configured embedder is {SentenceTransformerEmbedder().embedder_id}" in err
    run("index", "rebuild", "--reembed")
    assert run.json("index", "verify")["ok"] is True
    assert run.json("search", "asthma", "--k", "1")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_tampered_export_is_refused(run: Cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    exports = tmp_path / "exports"
    monkeypatch.setenv("KB_EMBEDDER__BACKEND", "onnx")
    monkeypatch.setenv("KB_EMBEDDER__ONNX_PRECISION", "fp32")
    monkeypatch.setenv("KB_EMBEDDER__EXPORT_DIR", str(exports))
    run("ingest", "guidelines", str(DEMO_GUIDELINES))
    (folder,) = [p for p in exports.iterdir() if p.is_dir()]
    record = json.loads((folder / "kbservice-export.json").read_text())
    assert record["check"]["max_abs_difference"] < 1e-4
    with (folder / "model.onnx").open("r+b") as handle:
        handle.seek(-64, 2)
        handle.write(b"\0" * 64)
    _, err = run("search", "asthma", expect=1)
    assert "does not match its recorded checksum" in err and str(folder / "model.onnx") in err
    (folder / "kbservice-export.json").unlink()  # an unfinished export is made again, byte for byte
    run("search", "asthma")
    assert json.loads((folder / "kbservice-export.json").read_text())["sha256"] == record["sha256"]
    tokenizer = folder / "tokenizer.json"
    tokenizer.write_text(tokenizer.read_text().replace('"[UNK]"', '"[UNKNOWN]"'))
    _, err = run("search", "asthma", expect=1)
    assert "does not match its recorded checksum" in err and str(tokenizer) in err


_SEARCH_THEN_LIST_TORCH = """
import sys
from kbservice import cli
sys.argv = ["kbservice", "--quiet", "search", "asthma inhaler", "--k", "1"]
try:
    cli.main()
except SystemExit as exc:
    assert not exc.code, exc.code
print("torch imported:", "torch" in sys.modules)
"""


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_search_on_the_default_embedder_never_imports_torch(run: Cli) -> None:
    """The default backend's point on this machine: a process that only embeds queries starts without torch
    (about a second of imports, and several when `auto` asked torch about CUDA)."""
    run("ingest", "guidelines", str(DEMO_GUIDELINES))  # made the export (that needs torch) in this process
    done = subprocess.run(
        [sys.executable, "-c", _SEARCH_THEN_LIST_TORCH], env=dict(os.environ), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "Asthma" in done.stdout and "torch imported: False" in done.stdout, done.stdout
