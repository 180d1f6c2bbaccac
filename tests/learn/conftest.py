from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kbservice.config import LearnSettings, LLMSettings
from kbservice.services import Services, build_services, initialise
from tests.conftest import make_settings


def learn_services_for(data_dir: Path, database_url: str | None, tiny_lm_dir: Path, **learn) -> Services:  # type: ignore[no-untyped-def]
    learn.setdefault("min_new_cases", 5)
    learn.setdefault("replay_cases", 8)
    settings = make_settings(
        data_dir, database_url, llm=LLMSettings(model_path=tiny_lm_dir), learn=LearnSettings(**learn)
    )
    initialise(settings)
    return build_services(settings)


@pytest.fixture
def learn_services(tmp_path: Path, tiny_lm_dir: Path) -> Iterator[Services]:
    """SQLite services on the tiny Llama, with a learning loop that updates on 5 new cases."""
    built = learn_services_for(tmp_path / "data", None, tiny_lm_dir)
    yield built
    built.close()
