"""The torch embedder knows its id without loading its model once a data directory has seen it: commands
that only compare ids (`index verify`, `index compact`) start in about a second instead of six."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kbservice.errors import KBError
from kbservice.index.embedder import SentenceTransformerEmbedder


def test_the_second_embedder_on_a_data_directory_knows_its_id_without_loading(
    tiny_embedder_dir: Path, tmp_path: Path
) -> None:
    first = SentenceTransformerEmbedder(tiny_embedder_dir, shape_cache_dir=tmp_path)
    assert "model" in first.__dict__  # nothing remembered yet: measured by loading
    second = SentenceTransformerEmbedder(tiny_embedder_dir, shape_cache_dir=tmp_path)
    assert "model" not in second.__dict__
    assert (second.embedder_id, second.dimension, second.max_tokens) == (
        first.embedder_id,
        first.dimension,
        first.max_tokens,
    )
    assert second.encode(["fever and cough"]).shape == (1, first.dimension)  # loads on first use
    uncached = SentenceTransformerEmbedder(tiny_embedder_dir)
    assert uncached.embedder_id == first.embedder_id


def test_a_remembered_shape_that_disagrees_with_the_model_is_refused_when_it_loads(
    tiny_embedder_dir: Path, tmp_path: Path
) -> None:
    SentenceTransformerEmbedder(tiny_embedder_dir, shape_cache_dir=tmp_path)
    (shape_file,) = tmp_path.glob("embedder-shape-*.json")
    shape_file.write_text(json.dumps({"dimension": 7, "max_tokens": 256}))
    wrong = SentenceTransformerEmbedder(tiny_embedder_dir, shape_cache_dir=tmp_path)
    assert wrong.dimension == 7
    with pytest.raises(KBError, match="delete that embedder-shape"):
        wrong.encode(["fever"])


def test_an_unreadable_shape_file_is_measured_again(tiny_embedder_dir: Path, tmp_path: Path) -> None:
    reference = SentenceTransformerEmbedder(tiny_embedder_dir, shape_cache_dir=tmp_path)
    (shape_file,) = tmp_path.glob("embedder-shape-*.json")
    shape_file.write_text("{half a fi")
    again = SentenceTransformerEmbedder(tiny_embedder_dir, shape_cache_dir=tmp_path)
    assert "model" in again.__dict__ and again.dimension == reference.dimension
    assert json.loads(shape_file.read_text())["dimension"] == reference.dimension
