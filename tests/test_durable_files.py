"""A staged folder is published whole or not at all; a second builder of the same result yields to the first."""

from __future__ import annotations

from pathlib import Path

import pytest

from kbservice.durable_files import staged_directory


def test_a_finished_folder_is_published_and_a_failed_one_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "cache" / "model"
    with pytest.raises(RuntimeError), staged_directory(target, complete_marker="done.json") as staging:
        (staging / "weights").write_text("half")
        raise RuntimeError("killed halfway")
    assert not target.exists() and list(target.parent.iterdir()) == []
    with staged_directory(target, complete_marker="done.json") as staging:
        (staging / "weights").write_text("whole")
        (staging / "done.json").write_text("{}")
    assert (target / "weights").read_text() == "whole"
    assert [p.name for p in target.parent.iterdir()] == ["model"]


def test_a_second_builder_yields_to_a_published_result(tmp_path: Path) -> None:
    target = tmp_path / "model"
    with staged_directory(target, complete_marker="done.json") as first:
        with staged_directory(target, complete_marker="done.json") as second:
            (second / "done.json").write_text("second")
        (first / "done.json").write_text("first")
    assert (target / "done.json").read_text() == "second"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_debris_without_the_marker_is_replaced(tmp_path: Path) -> None:
    """An export whose record was deleted used to block every later export (the rename failed forever)."""
    target = tmp_path / "model"
    target.mkdir()
    (target / "stray").write_text("not a published result")
    with staged_directory(target, complete_marker="done.json") as staging:
        (staging / "done.json").write_text("{}")
    assert sorted(p.name for p in target.iterdir()) == ["done.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
