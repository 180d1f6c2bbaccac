"""AdapterRegistry: adapter versions as immutable rows plus files, with `champion`/`previous` aliases.

Files live in `<data_dir>/adapters/<version>/`. Training writes into `.<version>.partial/` and the
directory is renamed into place only after its checksum is taken, so a half-written adapter is never
visible under a version name; a crashed run's partial directory is removed by the next cycle. The files are
also stored in the database (one tar per version), so a process on another machine sharing the database
materialises an adapter it has never seen, checked against the same checksum.
"""

from __future__ import annotations

import io
import shutil
import tarfile
import uuid
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kbservice.checksums import directory_sha256
from kbservice.db.adapter_store import AdapterStore
from kbservice.errors import KBError, UnknownAdapterError

if TYPE_CHECKING:
    from kbservice.audit import AuditLog

BASE = "none"  # what a request names to run on the bare base model


class AdapterRegistry:
    def __init__(self, store: AdapterStore, *, audit: AuditLog, directory: Path) -> None:
        self.store = store
        self.audit = audit
        self.directory = directory

    # ----- files --------------------------------------------------------------------------------------

    def path(self, version: str) -> Path:
        return self.directory / version

    def partial_path(self, version: str) -> Path:
        return self.directory / f".{version}.partial"

    def publish(self, version: str) -> tuple[str, bytes]:
        """Moves a finished partial directory into place; returns its checksum and its files as a tar."""
        partial = self.partial_path(version)
        checksum = directory_sha256(partial)
        archive = _tar(partial)
        partial.rename(self.path(version))
        return checksum, archive

    def remove_files(self, version: str) -> None:
        for path in (self.partial_path(version), self.path(version)):
            shutil.rmtree(path, ignore_errors=True)

    def verified_path(self, version: str) -> Path:
        """The adapter's directory, after checking that its files still match the recorded checksum."""
        row = self.store.get(version)
        path = self.path(version)
        if row["artifact_sha256"] is None:
            raise UnknownAdapterError(f"adapter {version} has no files ({row['status']})")
        if not path.is_dir():
            self._materialise(version)
        if directory_sha256(path) != row["artifact_sha256"]:
            raise KBError(f"adapter {version}'s files under {path} do not match their recorded checksum")
        return path

    def _materialise(self, version: str) -> None:
        """Unpacks the adapter's stored tar (written by whichever process trained it) into place."""
        archive = self.store.artifact(version)
        if archive is None:
            raise UnknownAdapterError(f"adapter {version} has no stored files")
        partial = self.partial_path(version).with_name(f".{version}.fetch-{uuid.uuid4().hex[:8]}")
        partial.mkdir(parents=True)
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(partial, filter="data")
        try:
            partial.rename(self.path(version))
        except OSError:  # another thread or process put it there first
            shutil.rmtree(partial, ignore_errors=True)

    # ----- which adapter a request runs on ------------------------------------------------------------

    def champion(self) -> str | None:
        return self.store.alias("champion")

    def resolve(self, requested: str | None) -> str | None:
        """The adapter version a request runs on: the champion by default, "none" for the base model, an
        alias, or a version that passed the gate (rejected and failed ones are never served)."""
        if requested is None or requested == "champion":
            return self.champion()
        if requested == BASE:
            return None
        if requested == "previous":
            return self.store.alias("previous")
        row = self.store.get(requested)
        if row["status"] != "promoted":
            raise UnknownAdapterError(
                f"adapter {requested} is {row['status']}: only versions that passed the promotion gate are served"
            )
        return requested

    # ----- the crash rule -----------------------------------------------------------------------------

    def reap_interrupted(self, *, actor: str) -> list[str]:
        """Adapters left "training" by a process that died: marked failed, their files removed. Call only
        while holding the update lease (otherwise a live training run would be reaped)."""
        reaped = []
        for row in self.store.in_training():
            self.remove_files(row["version"])
            self.store.finish(
                row["version"],
                status="failed",
                audit=self.audit,
                actor=actor,
                error="interrupted: the training process stopped before finishing",
            )
            reaped.append(row["version"])
        return reaped

    # ----- listing --------------------------------------------------------------------------------------

    def list(self) -> list[dict[str, Any]]:
        aliases = self.store.aliases()
        return [_summary(row, aliases) for row in self.store.all()]

    def show(self, version: str) -> dict[str, Any]:
        row = self.store.get(version)
        return _summary(row, self.store.aliases()) | {
            "run_id": row["run_id"],
            "finished_at": _iso(row["finished_at"]),
            "base_model": row["base_model"],
            "base_model_sha256": row["base_model_sha256"],
            "knowledge_version": row["knowledge_version"],
            "data_watermark": row["data_watermark"],
            "train_case_ids": row["train_case_ids"],
            "heldout_case_ids": row["heldout_case_ids"],
            "replay_case_ids": row["replay_case_ids"],
            "frozen_case_ids": row["frozen_case_ids"],
            "hyperparameters": row["hyperparameters"],
            "encoder_version": row["encoder_version"],
            "artifact_sha256": row["artifact_sha256"],
            "triggered_by": row["triggered_by"],
            "error": row["error"],
            "report": row["report"],
        }

    def diff(self, first: str, second: str) -> dict[str, Any]:
        """What changed from `first` to `second`: metrics, data, hyper-parameters and lineage."""
        a, b = self.show(first), self.show(second)
        metrics = {}
        for key in sorted(set(a["metrics"] or {}) | set(b["metrics"] or {})):
            va, vb = (a["metrics"] or {}).get(key), (b["metrics"] or {}).get(key)
            if isinstance(va, int | float) and isinstance(vb, int | float):
                metrics[key] = {first: va, second: vb, "change": round(vb - va, 6)}
        data = {}
        for key in ("train_case_ids", "heldout_case_ids", "replay_case_ids"):
            sa, sb = set(a[key]), set(b[key])
            data[key] = {
                f"only_in_{first}": sorted(sa - sb),
                f"only_in_{second}": sorted(sb - sa),
                "shared": len(sa & sb),
            }
        hyper = {
            k: {first: a["hyperparameters"].get(k), second: b["hyperparameters"].get(k)}
            for k in sorted(set(a["hyperparameters"]) | set(b["hyperparameters"]))
            if a["hyperparameters"].get(k) != b["hyperparameters"].get(k)
        }
        return {
            "from": first,
            "to": second,
            "metrics": metrics,
            "data": data,
            "hyperparameters": hyper,
            "knowledge_version": {first: a["knowledge_version"], second: b["knowledge_version"]},
            "lineage": {first: a["parent"], second: b["parent"]},
        }


def _tar(folder: Path) -> bytes:
    """The folder's files as an uncompressed tar with fixed metadata (same files, same bytes)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for file in sorted(p for p in folder.rglob("*") if p.is_file()):
            info = tarfile.TarInfo(file.relative_to(folder).as_posix())
            data = file.read_bytes()
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _iso(value: Any) -> str | None:
    """ISO time in UTC (SQLite hands back naive datetimes; they were written in UTC)."""
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()


def _summary(row: dict[str, Any], aliases: dict[str, str | None]) -> dict[str, Any]:
    return {
        "version": row["version"],
        "status": row["status"],
        "aliases": [name for name, version in aliases.items() if version == row["version"]],
        "parent": row["parent"],
        "created_at": _iso(row["created_at"]),
        "metrics": row["metrics"],
    }
