"""Encoder versions as runnable encoders: the champion (or a named version), loaded once per process.

CNN versions are materialised from their SQL artifact (verified against its checksum); a configured
Hugging Face directory is registered as a promoted version the first time it is used.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from typing import TYPE_CHECKING, Any

from kbservice.checksums import directory_sha256
from kbservice.config import ImagingSettings
from kbservice.db.encoder_store import EncoderStore
from kbservice.errors import IndexMismatchError
from kbservice.imaging.protocols import ImageEncoder

if TYPE_CHECKING:
    from kbservice.audit import AuditLog


class EncoderRegistry:
    def __init__(self, *, store: EncoderStore, settings: ImagingSettings, audit: AuditLog) -> None:
        self.store = store
        self.settings = settings
        self.audit = audit
        self._loaded: dict[str, ImageEncoder] = {}
        self._lock = threading.Lock()
        self._hf_versions: dict[str, str] = {}  # directory -> version: hashing a model directory is slow

    def champion_version(self) -> str | None:
        if self.settings.encoder == "huggingface":
            return self._hf_version()
        return self.store.alias("champion")

    def list(self) -> list[dict[str, Any]]:
        """Every version (no weights) with the aliases pointing at it, oldest first, JSON-ready."""
        aliases = self.store.aliases()
        rows = []
        for row in self.store.all():
            row["aliases"] = [name for name, version in aliases.items() if version == row["version"]]
            for key in ("created_at", "finished_at"):
                row[key] = row[key].isoformat() if row[key] else None
            rows.append(row)
        return rows

    def load(self, version: str) -> ImageEncoder:
        with self._lock:
            if version not in self._loaded:
                self._loaded[version] = self._materialise(version)
            return self._loaded[version]

    def champion(self) -> ImageEncoder | None:
        version = self.champion_version()
        return self.load(version) if version else None

    def _materialise(self, version: str) -> ImageEncoder:
        row = self.store.get(version)
        if row["kind"] == "huggingface":
            from kbservice.imaging.hf_encoder import HuggingFaceImageEncoder

            return HuggingFaceImageEncoder(self.settings.hf_model_path, version=version)  # type: ignore[arg-type]
        from kbservice.imaging.cnn import CnnImageEncoder

        blob = self.store.artifact(version)
        if blob is None or hashlib.sha256(blob).hexdigest() != row["artifact_sha256"]:
            raise IndexMismatchError(f"encoder {version}'s stored weights are missing or do not match their checksum")
        return CnnImageEncoder.from_bytes(version, blob)

    def _hf_version(self) -> str:
        """The configured directory's version, registered (and made champion) on first use."""
        path = self.settings.hf_model_path
        if path is None:
            raise FileNotFoundError("imaging.encoder is huggingface but imaging.hf_model_path is not set")
        if str(path) not in self._hf_versions:
            self._hf_versions[str(path)] = "hf-" + directory_sha256(path)[:12]
        version = self._hf_versions[str(path)]
        known = {row["version"] for row in self.store.all()}
        if version not in known:
            encoder = self._loaded.get(version)
            if encoder is None:
                from kbservice.imaging.hf_encoder import HuggingFaceImageEncoder

                encoder = HuggingFaceImageEncoder(path, version=version)
                self._loaded[version] = encoder
            self.store.start(
                version=version,
                run_id=f"register-{uuid.uuid4().hex[:8]}",
                kind="huggingface",
                parent=None,
                knowledge_version=0,
                data_watermark=0,
                labels=[],
                train_case_ids=[],
                heldout_case_ids=[],
                hyperparameters={"model_path": str(path)},
                dim=encoder.dim,
                pixel_size=self.settings.size,
                triggered_by="configuration",
            )
            self.store.finish(
                version,
                status="promoted",
                audit=self.audit,
                actor="configuration",
                promote_reason=f"imaging.hf_model_path = {path}",
            )
        return version
