"""The kbservice command line: a thin layer over the same functions the API calls.

`app.py` holds the Typer apps, the global state and the output helpers; each command module registers
its commands on those apps when imported here (the order below is the order `--help` lists them in).
"""

from kbservice.cli import (
    audit,  # noqa: F401
    bench,  # noqa: F401
    cases,  # noqa: F401
    evaluate,  # noqa: F401
    images,  # noqa: F401
    knowledge,  # noqa: F401  (first: init, search, versions, ...)
    learn,  # noqa: F401
    recommend,  # noqa: F401
    serve,  # noqa: F401
)
from kbservice.cli.app import app, main, state

__all__ = ["app", "main", "state"]
