"""Image encoder versions and their aliases (the same life cycle as adapters)."""

from __future__ import annotations

from kbservice.db.schema import image_encoder_aliases, image_encoders
from kbservice.db.versioned_store import VersionedStore
from kbservice.errors import UnknownEncoderError


class EncoderStore(VersionedStore):
    table = image_encoders
    alias_table = image_encoder_aliases
    prefix = "e"
    noun = "encoder"
    unknown_error = UnknownEncoderError
