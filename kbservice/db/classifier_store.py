"""Case classifier versions and their aliases (the same life cycle as adapters and image encoders)."""

from __future__ import annotations

from kbservice.db.schema import case_classifier_aliases, case_classifiers
from kbservice.db.versioned_store import VersionedStore
from kbservice.errors import UnknownClassifierError


class ClassifierStore(VersionedStore):
    table = case_classifiers
    alias_table = case_classifier_aliases
    prefix = "c"
    noun = "classifier"
    unknown_error = UnknownClassifierError
