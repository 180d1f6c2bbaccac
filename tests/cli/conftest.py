"""CLI fixtures: `run` drives `kbservice` on a fresh data directory (SQLite and PostgreSQL); the others add
the tiny Llama (`run_with_model`) and small, fast imaging settings (`run_with_images`, SQLite)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.runner import Cli
from tests.conftest import REPO_ROOT
from tests.imaging.cases import FAST_IMAGING


def _environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **variables: str) -> None:
    monkeypatch.setenv("KB_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("KB_CONFIG", str(REPO_ROOT / "config" / "test.toml"))
    for name, value in variables.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, database_url: str, capsys) -> Cli:  # type: ignore[no-untyped-def]
    _environment(monkeypatch, tmp_path, KB_DATABASE_URL=database_url)
    runner = Cli(capsys)
    runner("init")
    return runner


@pytest.fixture
def run_with_model(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, database_url: str, tiny_lm_dir: Path, capsys
) -> Cli:  # type: ignore[no-untyped-def]
    _environment(monkeypatch, tmp_path, KB_DATABASE_URL=database_url, KB_LLM__MODEL_PATH=str(tiny_lm_dir))
    runner = Cli(capsys)
    runner("init")
    return runner


@pytest.fixture
def run_with_images(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_lm_dir: Path, capsys) -> Cli:  # type: ignore[no-untyped-def]
    imaging = {f"KB_IMAGING__{key.upper()}": str(value) for key, value in FAST_IMAGING.items()}
    _environment(monkeypatch, tmp_path, KB_LLM__MODEL_PATH=str(tiny_lm_dir), KB_LEARN__MIN_NEW_CASES="5", **imaging)
    runner = Cli(capsys)
    runner("init")
    return runner
