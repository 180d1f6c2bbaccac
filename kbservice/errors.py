"""Errors a user can act on. Each carries a message that says what went wrong and what to do."""

from __future__ import annotations


class KBError(Exception):
    """Base class: the CLI prints the message and exits 1; the store is left as it was."""


class ConfigError(KBError):
    pass


class NotInitialisedError(KBError):
    pass


class SchemaOutdatedError(KBError):
    pass


class UnknownVersionError(KBError):
    pass


class UnknownDocumentError(KBError):
    pass


class IngestError(KBError):
    """One or more inputs could not be ingested; `problems` lists (path, message) per bad input."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        lines = "\n".join(f"  {path}: {message}" for path, message in problems)
        super().__init__(f"{len(problems)} input(s) could not be ingested; nothing was changed:\n{lines}")


class IndexMismatchError(KBError):
    """The vector index disagrees with SQL, is corrupt, or was built by another embedder."""

    @classmethod
    def other_embedder(cls, stored: str, configured: str) -> IndexMismatchError:
        """A base embedded by `stored` met the configured embedder `configured`."""
        return cls(
            f"the knowledge base was embedded with {stored}, but the configured embedder is {configured}; "
            "run `kbservice index rebuild --reembed` to switch embedders, or configure the one it was built "
            "with (embedder.backend, onnx_precision, model_path: a base built before ONNX became the "
            'default needs backend = "torch")'
        )


class DuplicateIdentityError(IngestError):
    """Identities (such as case ids) that are already stored and may not be replaced."""

    def __init__(self, keys: list[str]) -> None:
        self.keys = keys
        super().__init__([(key, "already stored; case ids are unique and cases are never replaced") for key in keys])


class UnknownCaseError(KBError):
    pass


class UnknownAdapterError(KBError):
    pass


class UnknownRecommendationError(KBError):
    pass


class InvalidRequestError(KBError):
    """A recommendation request that cannot be answered as given (empty, too long, not text)."""


class DuplicateKeyNameError(KBError):
    pass


class UnknownKeyError(KBError):
    pass


class UnknownJobError(KBError):
    pass


class ConflictError(KBError):
    """The request conflicts with the current state (e.g. nothing to roll back to, a cycle already running)."""


class ImageReadError(KBError):
    """An image that cannot be read as given (unreadable, truncated, empty, not an image, too large)."""


class PacsError(KBError):
    """The PACS could not be reached or answered with something other than what was asked for."""


class UnknownStudyError(KBError):
    """The PACS does not know the study (or series) asked for."""


class UnknownImageError(KBError):
    pass


class UnknownEncoderError(KBError):
    pass


class UnknownClassifierError(KBError):
    pass


class SecretKeyError(KBError):
    """A key this installation needs cannot be opened or disagrees with the one another replica uses."""
