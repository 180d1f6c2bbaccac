"""One directory-checksum layout, byte for byte the one already stored for base models and image encoders;
migration 0008 moves stored adapter checksums from their older layout onto it."""

from __future__ import annotations

import io
import os
import tarfile
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import insert, select

from kbservice.checksums import directory_sha256, model_fingerprint
from kbservice.db import make_engine, migrate
from kbservice.db.schema import adapters

# Computed by kbservice before the layouts were unified (commit 9e04c96), on the directory below:
# checksums.model_fingerprint, imaging.hf_encoder.directory_sha256, learn.registry.directory_sha256.
MODEL_FINGERPRINT_BEFORE = "be5713cc345aa08ab9adc8d56b551c7bcc58e497afdf1bcc8a029125ad702111"
HF_ENCODER_BEFORE = "c85b93b385e38e3ba67bda3f3ec28b21e37de7de6a5e09fd89aa39f75dec5f51"
ADAPTER_BEFORE = "d1c252ae0e74382a849ac49d3ed5f89d1f7037a4222f8797100b6f6b84cfc4a3"


def _directory(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_bytes(b"config")
    (root / "model.safetensors").write_bytes(b"weights-1")
    (root / "sub" / "b.bin").write_bytes(b"weights-2")
    (root / "sub.txt").write_bytes(b"x")
    return root


def test_models_and_encoders_keep_the_checksums_already_stored(tmp_path: Path) -> None:
    folder = _directory(tmp_path / "model")
    assert model_fingerprint(folder) == MODEL_FINGERPRINT_BEFORE
    assert directory_sha256(folder) == HF_ENCODER_BEFORE
    copy = _directory(tmp_path / "copy")
    assert directory_sha256(copy) == directory_sha256(folder)
    (copy / "sub" / "b.bin").write_bytes(b"weights-3")
    assert directory_sha256(copy) != directory_sha256(folder)
    assert model_fingerprint(copy) != model_fingerprint(folder)


def _tar(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for file in sorted(p for p in folder.rglob("*") if p.is_file()):
            info = tarfile.TarInfo(file.relative_to(folder).as_posix())
            info.size = file.stat().st_size
            tar.addfile(info, io.BytesIO(file.read_bytes()))
    return buffer.getvalue()


def test_migration_0008_moves_adapter_checksums_to_the_shared_layout(tmp_path: Path, database_url: str) -> None:
    from alembic import command

    folder = _directory(tmp_path / "adapter")
    (tmp_path / "data").mkdir(exist_ok=True)
    engine = make_engine(database_url)
    config = migrate.alembic_config(engine)
    command.upgrade(config, "0007")
    row = {
        "run_id": "run-1",
        "status": "promoted",
        "created_at": datetime.now(UTC),
        "knowledge_version": 1,
        "data_watermark": 1,
        "base_model": "m",
        "base_model_sha256": "0" * 64,
        "train_case_ids": [],
        "heldout_case_ids": [],
        "replay_case_ids": [],
        "frozen_case_ids": [],
        "hyperparameters": {},
        "triggered_by": "test",
        "artifact": _tar(folder),
    }
    tampered = _tar(folder).replace(b"weights-2", b"weights-X")
    with engine.begin() as conn:
        conn.execute(insert(adapters).values(version="a1", artifact_sha256=ADAPTER_BEFORE, **row))
        conn.execute(
            insert(adapters).values(version="a2", artifact_sha256=ADAPTER_BEFORE, **row | {"artifact": tampered})
        )
    command.upgrade(config, "0008")

    def stored() -> dict[str, str]:
        with engine.connect() as conn:
            return dict(conn.execute(select(adapters.c.version, adapters.c.artifact_sha256)).all())

    assert stored() == {"a1": directory_sha256(folder), "a2": ADAPTER_BEFORE}  # a mismatch stays a mismatch
    command.downgrade(config, "0007")
    assert stored() == {"a1": ADAPTER_BEFORE, "a2": ADAPTER_BEFORE}
    engine.dispose()


def test_a_remembered_checksum_is_computed_again_when_the_file_changes(tmp_path: Path) -> None:
    from kbservice.checksums import file_sha256, unchanged_file_sha256, unchanged_model_fingerprint

    folder = _directory(tmp_path / "model")
    weights = folder / "model.safetensors"
    assert unchanged_file_sha256(weights) == file_sha256(weights)
    assert unchanged_model_fingerprint(folder) == MODEL_FINGERPRINT_BEFORE
    before = weights.stat().st_mtime_ns
    weights.write_bytes(b"weights-9")  # same size, rewritten in place: only the modification time tells
    # The kernel's file clock ticks every few ms, and this rewrite can land in the tick of the first write;
    # a real rewrite of a model comes seconds or more later, which this stands for.
    os.utime(weights, ns=(before + 10**9, before + 10**9))
    assert unchanged_file_sha256(weights) == file_sha256(weights) != file_sha256(folder / "sub" / "b.bin")
    assert unchanged_model_fingerprint(folder) == model_fingerprint(folder) != MODEL_FINGERPRINT_BEFORE
    (folder / "extra.bin").write_bytes(b"w")  # a weight file added
    assert unchanged_model_fingerprint(folder) == model_fingerprint(folder)
    staged = folder / "staged.tmp"
    staged.write_bytes(b"weights-8")
    staged.replace(weights)  # replaced by rename, as exports and conversions publish: a new inode
    assert unchanged_file_sha256(weights) == file_sha256(weights)
    assert unchanged_model_fingerprint(folder) == model_fingerprint(folder)
