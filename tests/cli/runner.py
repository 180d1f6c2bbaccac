"""`Cli` runs `kbservice ...` through its real entry point, in this process, and checks the exit code."""

from __future__ import annotations

import json
import sys

import pytest

from kbservice import cli


class Cli:
    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys

    def __call__(self, *args: str, expect: int = 0) -> tuple[str, str]:
        self.capsys.readouterr()
        sys.argv = ["kbservice", "--quiet", *args]
        try:
            cli.main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        out, err = self.capsys.readouterr()
        assert code == expect, f"exit {code} (expected {expect})\nstdout: {out}\nstderr: {err}"
        return out, err

    def json(self, *args: str, expect: int = 0):  # type: ignore[no-untyped-def]
        out, _ = self(*args, "--json", expect=expect)
        return json.loads(out)
