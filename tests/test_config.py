from __future__ import annotations

from pathlib import Path

import pytest

from kbservice.config import load_settings
from kbservice.errors import ConfigError
from kbservice.recommend.calibrate import selection_settings


def test_defaults_come_from_default_toml(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("KB_CONFIG", raising=False)
    monkeypatch.delenv("KB_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    settings = load_settings()
    assert settings.data_dir == tmp_path / "xdg" / "kbservice"
    assert settings.resolved_database_url == f"sqlite:///{tmp_path / 'xdg' / 'kbservice' / 'kb.sqlite3'}"
    assert settings.index.kind == "auto"
    assert settings.embedder.model_path is None


def test_precedence_argument_env_file_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "site.toml"
    config.write_text(
        'database_url = "postgresql+psycopg://db/kb"\n'
        '[index]\nkind = "hnsw"\nhnsw_m = 16\n[chunking]\nmax_tokens = 128\n'
    )
    monkeypatch.setenv("KB_CONFIG", str(config))
    monkeypatch.setenv("KB_INDEX__HNSW_M", "48")
    monkeypatch.setenv("KB_DATA_DIR", str(tmp_path / "env-dir"))
    settings = load_settings()
    assert settings.resolved_database_url == "postgresql+psycopg://db/kb"
    assert settings.index.kind == "hnsw"  # from the file
    assert settings.index.hnsw_m == 48  # env beats file
    assert settings.chunking.max_tokens == 128
    assert settings.chunking.overlap_tokens == 32  # default.toml still fills the rest
    assert settings.data_dir == tmp_path / "env-dir"
    assert load_settings(data_dir=tmp_path / "arg").data_dir == tmp_path / "arg"  # --data-dir beats env


def test_missing_config_file_is_an_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KB_CONFIG", str(tmp_path / "nope.toml"))
    with pytest.raises(ConfigError, match=r"nope\.toml"):
        load_settings()


def test_invalid_values_are_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KB_CONFIG", raising=False)
    monkeypatch.setenv("KB_INDEX__KIND", "magic")
    with pytest.raises(ConfigError, match=r"invalid configuration: index\.kind"):
        load_settings()


def test_the_fusion_selection_settings_reach_every_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Calibration, the gates and the evals all fit the fusion through `selection_settings`: the modality
    holder set once in the configuration is the one each of them passes to the selection."""
    monkeypatch.delenv("KB_CONFIG", raising=False)
    monkeypatch.setenv("KB_RECOMMEND__FUSION_MODALITY_HOLDER", "text and image")
    assert selection_settings(load_settings().recommend) == {
        "margin": None,
        "modality_margin": 0.0,
        "modality_holder": "text and image",
    }
    monkeypatch.setenv("KB_RECOMMEND__FUSION_MODALITY_HOLDER", "image")
    with pytest.raises(ConfigError, match=r"recommend\.fusion_modality_holder"):
        load_settings()
