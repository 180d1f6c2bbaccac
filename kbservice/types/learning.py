"""What an update cycle reports: the split it trained and judged on, the gate's verdict, the decision."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class CaseSplit:
    """How many cases an adapter candidate trains on (new + replayed older ones) and is judged on."""

    train: int
    heldout: int
    replay: int
    frozen: int


@dataclass(frozen=True)
class GateResult:
    passed: bool
    reasons: list[str]  # why the candidate may not replace the champion (empty: it may)
    checks: dict[str, Any]  # every check with its figures and margins


@dataclass(frozen=True)
class AdapterDecision:
    status: str  # "promoted" or "rejected"
    reason: str


@dataclass(frozen=True)
class UpdateReport:
    """What one update cycle did, stored with its run (and, up to the decision, with the adapter it built).

    Parts a cycle did not reach stay None and are left out of the JSON: a cycle on an empty knowledge base
    has no `data_watermark`; a skipped one no `split`; a run that has not finished no `status`."""

    run_id: str
    knowledge_version: int | None
    triggered_by: str
    reaped_adapters: list[str]
    reaped_runs: list[str]
    # What the cycle read (with the champion, which may be None: the base model serves).
    champion: str | None = None
    data_watermark: int | None = None
    new_cases: int | None = None
    encoder: dict[str, Any] | None = None  # the encoder stage's own report, when it ran
    classifier: dict[str, Any] | None = None  # the classifier stage's own report, when it ran
    # The adapter stage, once it builds a candidate (`image_fusion` may be None: no image projector).
    split: CaseSplit | None = None
    labels: dict[str, Any] | None = None  # the poisoning guard's report
    image_fusion: dict[str, Any] | None = None
    adapter_version: str | None = None
    training: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None  # {"candidate": ..., "champion": ...}
    gate: GateResult | None = None
    language_model: dict[str, Any] | None = None  # the adapter's own accuracy, weight and share in the fusion
    timings: dict[str, float] | None = None
    calibration_id: int | None = None
    adapter_status: str | None = None
    decision: AdapterDecision | None = None
    # The run's end.
    status: str | None = None  # "promoted", "rejected", "skipped" or "failed"
    reason: str | None = None
    seconds: float | None = None
    peak_rss_mb: float | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        keep = {"run_id", "knowledge_version", "triggered_by", "reaped_adapters", "reaped_runs", "adapter_version"}
        if self.data_watermark is not None:
            keep.add("champion")
        if self.split is not None:
            keep.add("image_fusion")
        return {key: value for key, value in data.items() if value is not None or key in keep}
