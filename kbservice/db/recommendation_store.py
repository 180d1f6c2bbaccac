"""Stored recommendations (for show and replay) and the fitted calibrations they were scored with."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, insert, select

from kbservice.db.engine import write_transaction
from kbservice.db.schema import calibrations, recommendations
from kbservice.errors import UnknownRecommendationError

if TYPE_CHECKING:
    from kbservice.audit import AuditLog


class RecommendationStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def save(
        self,
        *,
        recommendation_id: str,
        created_at: str,
        request: dict[str, Any],
        response: dict[str, Any],
        response_hash: str,
        audit: AuditLog,
        actor: str,
        audit_payload: dict[str, Any],
    ) -> int:
        """Stores the recommendation and its audit row in one transaction; returns the audit seq."""
        with write_transaction(self.engine) as conn:
            entry = audit.record("recommendation", actor=actor, payload=audit_payload, conn=conn)
            conn.execute(
                insert(recommendations).values(
                    id=recommendation_id,
                    created_at=created_at,
                    request=request,
                    response=response,
                    response_hash=response_hash,
                    audit_seq=entry.seq,
                )
            )
            return entry.seq

    def get(self, recommendation_id: str) -> dict[str, Any]:
        with self.engine.connect() as conn:
            row = conn.execute(select(recommendations).where(recommendations.c.id == recommendation_id)).first()
        if row is None:
            raise UnknownRecommendationError(
                f"recommendation {recommendation_id!r} does not exist; see `kbservice audit list`"
            )
        return dict(row._mapping)

    # ----- calibrations -------------------------------------------------------------------------------

    def save_calibration(
        self,
        *,
        base_model_sha256: str,
        adapter_version: str | None,
        prompt_version: str,
        mode: str,
        knowledge_version: int,
        weights: dict[str, float],
        metrics: dict[str, Any],
        case_ids: list[int],
        classifier_version: str | None = None,
    ) -> int:
        with write_transaction(self.engine) as conn:
            return conn.execute(
                insert(calibrations)
                .values(
                    created_at=datetime.now(UTC),
                    base_model_sha256=base_model_sha256,
                    adapter_version=adapter_version,
                    prompt_version=prompt_version,
                    mode=mode,
                    knowledge_version=knowledge_version,
                    weights=weights,
                    metrics=metrics,
                    case_ids=case_ids,
                    classifier_version=classifier_version,
                )
                .returning(calibrations.c.id)
            ).scalar_one()

    def latest_calibration(
        self, *, base_model_sha256: str, adapter_version: str | None, prompt_version: str, mode: str
    ) -> dict[str, Any] | None:
        """The newest calibration fitted for exactly this model, adapter, prompt version and mode."""
        adapter_match = (
            calibrations.c.adapter_version.is_(None)
            if adapter_version is None
            else calibrations.c.adapter_version == adapter_version
        )
        with self.engine.connect() as conn:
            row = conn.execute(
                select(calibrations)
                .where(
                    calibrations.c.base_model_sha256 == base_model_sha256,
                    calibrations.c.prompt_version == prompt_version,
                    calibrations.c.mode == mode,
                    adapter_match,
                )
                .order_by(calibrations.c.id.desc())
                .limit(1)
            ).first()
        return dict(row._mapping) if row else None

    def calibration(self, calibration_id: int) -> dict[str, Any]:
        with self.engine.connect() as conn:
            row = conn.execute(select(calibrations).where(calibrations.c.id == calibration_id)).first()
        if row is None:
            raise UnknownRecommendationError(f"calibration {calibration_id} does not exist")
        return dict(row._mapping)
