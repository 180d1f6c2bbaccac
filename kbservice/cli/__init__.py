"""The kbservice command line: a thin layer over the same functions the API calls.

`app.py` holds the Typer apps, the global state and the output helpers; each command module registers its
commands on those apps when it is imported, and `--help` lists commands in the order they registered, so
the modules are imported here in that order (not alphabetically).
"""

import importlib

from kbservice.cli.app import app, main, state

COMMAND_MODULES = (
    "knowledge",
    "images",
    "pacs",
    "cases",
    "recommend",
    "audit",
    "learn",
    "classifiers",
    "serve",
    "backup",
    "bench",
    "soak",
    "evaluate",
)
for _module in COMMAND_MODULES:
    importlib.import_module(f"kbservice.cli.{_module}")

__all__ = ["app", "main", "state"]
