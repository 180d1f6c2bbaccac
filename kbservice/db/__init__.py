"""All SQL lives here: schema, engine, migrations glue and the KnowledgeStore."""

from kbservice.db.engine import make_engine
from kbservice.db.store import KnowledgeStore

__all__ = ["KnowledgeStore", "make_engine"]
