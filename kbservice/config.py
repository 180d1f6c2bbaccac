"""Settings: config/default.toml, then the TOML file named in KB_CONFIG, then KB_* environment.

Nothing is built at import time; callers construct `Settings()` (or `load_settings`) explicitly.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from kbservice.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG_FILE = REPO_ROOT / "config" / "default.toml"


def default_data_dir() -> Path:
    """The per-user data directory: $XDG_DATA_HOME/kbservice, else ~/.local/share/kbservice."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "kbservice"


class EmbedderSettings(BaseModel):
    model_path: Path | None = None  # None: the packaged all-MiniLM-L6-v2
    batch_size: int = Field(16, ge=1)
    device: str = "cpu"


class ChunkingSettings(BaseModel):
    max_tokens: int = Field(256, ge=16)
    overlap_tokens: int = Field(32, ge=0)


class IngestSettings(BaseModel):
    max_file_mb: float = Field(20, gt=0)
    max_case_field_chars: int = Field(20_000, ge=100)  # per free-text field of a case or a request


class RecommendSettings(BaseModel):
    guideline_passages: int = Field(3, ge=0)  # in the prompt
    similar_cases: int = Field(5, ge=0)  # in the prompt
    evidence_depth: int = Field(20, ge=1)  # cases each ranker contributes to the similar-case evidence
    passage_chars: int = Field(600, ge=100)  # a treatment source is cut to this in its prompt
    prompt_guideline_chars: int = Field(160, ge=0)  # a guideline passage in the diagnosis prompt (latency)
    prompt_case_chars: int = Field(0, ge=0)  # a similar case's findings in the diagnosis prompt (0: label only)
    abstain_below: float = Field(0.5, ge=0, le=1)  # abstain when the top probability is lower
    treatment_sources: int = Field(3, ge=0)  # treatment sentences, one per source
    treatment_max_new_tokens: int = Field(48, ge=8)
    calibration_cases: int = Field(300, ge=10)  # held-out cases sampled to fit the fusion weights


class IndexSettings(BaseModel):
    kind: Literal["auto", "flat", "hnsw", "pq"] = "auto"
    exact_below: int = Field(200_000, ge=0)
    approximate_kind: Literal["hnsw", "pq"] = "pq"  # what `auto` switches to at exact_below
    pq_k_factor: int = Field(64, ge=1)  # pq: candidates re-ranked exactly = k * pq_k_factor
    hnsw_m: int = Field(32, ge=4)
    hnsw_ef_construction: int = Field(64, ge=8)
    hnsw_ef_search: int = Field(128, ge=8)


class LLMSettings(BaseModel):
    model_path: Path | None = None  # None: the packaged SmolLM2-135M-Instruct, converted once into data_dir/models
    device: str = "cpu"


class RetrievalSettings(BaseModel):
    default_k: int = Field(10, ge=1)
    rrf_k: int = Field(60, ge=1)
    candidates: int = Field(100, ge=1)


class Settings(BaseSettings):
    """Every tunable of the service. Precedence: arguments > KB_* env > KB_CONFIG file > default.toml."""

    model_config = SettingsConfigDict(env_prefix="KB_", env_nested_delimiter="__", extra="ignore")

    data_dir: Path = Field(default_factory=default_data_dir)
    database_url: str | None = None  # None: sqlite file kb.sqlite3 in data_dir
    embedder: EmbedderSettings = EmbedderSettings()
    chunking: ChunkingSettings = ChunkingSettings()
    ingest: IngestSettings = IngestSettings()
    index: IndexSettings = IndexSettings()
    retrieval: RetrievalSettings = RetrievalSettings()
    llm: LLMSettings = LLMSettings()
    recommend: RecommendSettings = RecommendSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_files = [p for p in (DEFAULT_CONFIG_FILE, _user_config_file()) if p is not None and p.exists()]
        return (
            init_settings,
            env_settings,
            *(TomlConfigSettingsSource(settings_cls, toml_file=p) for p in reversed(toml_files)),
        )

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'kb.sqlite3'}"

    @property
    def index_dir(self) -> Path:
        return self.data_dir / "index"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"


def _user_config_file() -> Path | None:
    named = os.environ.get("KB_CONFIG")
    if not named:
        return None
    path = Path(named)
    if not path.exists():
        raise ConfigError(f"KB_CONFIG names {path}, which does not exist")
    return path


def load_settings(*, data_dir: Path | None = None) -> Settings:
    """Settings from files and environment, with `data_dir` (e.g. from --data-dir) taking precedence."""
    overrides = {"data_dir": data_dir} if data_dir is not None else {}
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid configuration: {problems}") from exc
