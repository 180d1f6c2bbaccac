"""`python -m kbservice` runs the CLI."""

from kbservice.cli import main

main()
