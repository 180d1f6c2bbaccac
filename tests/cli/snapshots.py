"""Snapshots of the CLI's surface: its command tree (what `--help` shows) and the keys of its `--json` output.

A refactoring must not change either. Each snapshot lives as JSON under tests/cli/snapshots/; a name the
snapshot does not know fails the test, so a new command or output is added on purpose:
`KB_UPDATE_SNAPSHOTS=1 pytest tests/cli` rewrites the entries that the run produced.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

SNAPSHOT_DIR = Path(__file__).parent / "snapshots"
UPDATING = os.environ.get("KB_UPDATE_SNAPSHOTS") == "1"


def command_tree(group: Any, prefix: tuple[str, ...] = ()) -> dict[str, Any]:
    """Every command of a Typer group by its path ("ingest cases"): its help text and each parameter as
    `--help` lists it (name, flags, type, default, whether required, help text)."""
    found: dict[str, Any] = (
        {"": {"help": group.help, "params": [], "commands": list(group.commands)}} if not prefix else {}
    )
    for name in sorted(group.commands):
        command = group.commands[name]
        path = (*prefix, name)
        subcommands = getattr(command, "commands", None)
        found[" ".join(path)] = {
            "help": command.help,
            "params": [_param(p) for p in command.params],
            # A group's commands in the order `--help` lists them.
            "commands": list(subcommands) if subcommands is not None else None,
        }
        if subcommands is not None:
            found |= command_tree(command, path)
    return found


def _param(param: Any) -> dict[str, Any]:
    default = param.default
    described = {
        "name": param.name,
        "kind": param.param_type_name,
        "opts": list(param.opts),
        "secondary_opts": list(param.secondary_opts),
        "type": str(param.type_descriptor.annotation),
        "default": None if default is None else str(default),
    }
    for attribute in ("required", "multiple", "help", "is_flag", "envvar", "min", "max", "hidden"):
        value = getattr(param, attribute, None)
        described[attribute] = value if isinstance(value, bool | int | float | str | type(None)) else str(value)
    return described


def key_paths(data: Any, prefix: str = "") -> set[str]:
    """The shape of a JSON value as a set of paths: `a.b` for object keys, `a[]` for list items (merged)."""
    paths: set[str] = set()
    if isinstance(data, dict):
        for key, value in data.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            paths.add(path)
            paths |= key_paths(value, path)
    elif isinstance(data, list):
        for item in data:
            paths |= key_paths(item, f"{prefix}[]")
    return paths


def check_snapshot(file: str, name: str, value: Any) -> None:
    """Fails unless `value` equals the stored snapshot `name` in `file` (or stores it when updating)."""
    path = SNAPSHOT_DIR / file
    stored = json.loads(path.read_text()) if path.exists() else {}
    if UPDATING:
        stored[name] = value
        path.write_text(json.dumps(stored, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
        return
    assert name in stored, f"no snapshot {name!r} in {path}: run with KB_UPDATE_SNAPSHOTS=1 to add it on purpose"
    assert value == stored[name], f"{name} differs from its snapshot in {path}"


def check_json_keys(name: str, data: Any) -> None:
    """The `--json` output of one command keeps the keys it had (values may differ from run to run)."""
    check_snapshot("json_keys.json", name, sorted(key_paths(data)))
