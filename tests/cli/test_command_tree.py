"""The CLI's command tree and every command's `--help` stay as they are (see snapshots.py)."""

from __future__ import annotations

import pytest
import typer.main
from typer.testing import CliRunner

from kbservice import cli
from tests.cli.snapshots import check_snapshot, command_tree

TREE = command_tree(typer.main.get_command(cli.app))  # type: ignore[arg-type]


def test_command_tree_matches_its_snapshot() -> None:
    check_snapshot("command_tree.json", "kbservice", TREE)


@pytest.mark.parametrize("path", sorted(TREE))
def test_every_command_has_working_help(path: str) -> None:
    result = CliRunner().invoke(cli.app, [*path.split(), "--help"])
    assert result.exit_code == 0, result.output
    first_words = " ".join((TREE[path]["help"] or "").split()[:4])
    assert "Usage:" in result.output and first_words in " ".join(result.output.split())
