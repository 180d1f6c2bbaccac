"""The update cycle's encoder stage: new labelled image cases -> candidate encoder -> image gate -> promote.

The encoder is retrained from scratch on every labelled image case seen so far except the held-out and
frozen ones (a compact CNN trains in minutes, and joint training forgets nothing). Candidate and champion
are judged on the same held-out + frozen image cases by their own image-only diagnosis (the mean of a
case's image probabilities); the candidate is promoted only if neither macro-F1 nor accuracy falls by
more than the configured margins (the first encoder must beat, in macro-F1, always answering the training
cases' commonest class: accuracy would reward ignoring rare classes). A metric that is degenerate on the
held-out cases (one diagnosis among them) is reported as not judged instead of deciding. A promoted
encoder's image index is built before the stage returns.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from typing import TYPE_CHECKING, Any

import numpy as np

from kbservice.classification import probability_metrics
from kbservice.errors import KBError
from kbservice.imaging.cnn import CnnImageEncoder
from kbservice.learn.split import split_new_cases
from kbservice.progress import Progress
from kbservice.types import CaseRecord

if TYPE_CHECKING:
    from kbservice.imaging.protocols import ImageEncoder
    from kbservice.services import Services


def image_cases(services: Services, labelled: Sequence[CaseRecord]) -> tuple[list[CaseRecord], dict[int, list[int]]]:
    """The labelled cases that have images, and their image ids."""
    ids = services.image_store.ids_by_case([c.case_id for c in labelled])
    return [c for c in labelled if ids.get(c.case_id)], ids


def case_probabilities(
    encoder: CnnImageEncoder,
    cases: Sequence[CaseRecord],
    image_ids: dict[int, list[int]],
    pixels: dict[int, np.ndarray],
    labels: list[str],
) -> np.ndarray:
    """(cases x labels): each case's mean image class probabilities from the encoder's training head, mapped
    onto `labels` by name (a label the encoder does not know gets 0)."""
    known = {name.casefold(): i for i, name in enumerate(encoder.labels)}
    out = np.zeros((len(cases), len(labels)))
    for row, case in enumerate(cases):
        probabilities = encoder.class_probabilities([pixels[i] for i in image_ids[case.case_id]]).mean(axis=0)
        for column, label in enumerate(labels):
            if label.casefold() in known:
                out[row, column] = probabilities[known[label.casefold()]]
    return out


def judge(
    encoder: ImageEncoder | None,
    cases: Sequence[CaseRecord],
    image_ids: dict[int, list[int]],
    pixels: dict[int, np.ndarray],
    labels: list[str],
) -> dict[str, Any] | None:
    if not isinstance(encoder, CnnImageEncoder):
        return None  # no champion, or one without a diagnosis head (a Hugging Face encoder)
    truth = [labels.index(c.diagnosis[0]) for c in cases]
    metrics = probability_metrics(truth, case_probabilities(encoder, cases, image_ids, pixels, labels))
    metrics["recall"] = {labels[i]: round(r, 4) for i, r in metrics["recall"].items()}
    return metrics


def run_encoder_stage(
    services: Services,
    *,
    run_id: str,
    version: int,
    labelled: Sequence[CaseRecord],
    frozen_ids: AbstractSet[int],
    shared_split: tuple[set[int], set[int]] = (set(), set()),
    triggered_by: str,
    progress: Progress,
    check_lease: Callable[[], None] = lambda: None,
) -> dict[str, Any]:
    """Trains, judges and records one candidate encoder when enough new labelled image cases exist.
    `frozen_ids`: the frozen evaluation set (never trained on; part of the gate). `shared_split`: the
    adapter stage's (new case ids, held-out case ids) of this cycle; its held-out image cases are the
    encoder's held-out cases too, so the adapter's gate never sees image evidence from an encoder that
    learned those very cases, and one split serves both. Returns the stage's report ({"status":
    "skipped", ...} otherwise)."""
    settings = services.settings.imaging
    if settings.encoder != "cnn":
        return {"status": "skipped", "reason": f"imaging.encoder is {settings.encoder}: nothing to train"}
    store = services.encoder_store
    champion = store.alias("champion")
    watermark = store.get(champion)["data_watermark"] if champion else 0
    with_images, image_ids = image_cases(services, labelled)
    new = [c for c in with_images if c.version_added > watermark and c.case_id not in frozen_ids]
    if len(new) < settings.min_new_image_cases:
        return {
            "status": "skipped",
            "reason": f"{len(new)} new labelled image case(s) since knowledge version {watermark}; a new "
            f"encoder needs at least {settings.min_new_image_cases}",
        }
    judged_already = [
        row
        for row in store.all()
        if row["parent"] == champion and row["data_watermark"] == version and row["status"] == "rejected"
    ]
    if judged_already:
        return {
            "status": "skipped",
            "reason": f"encoder {judged_already[-1]['version']} was trained on knowledge version {version} and "
            "rejected; ingest more image cases first",
        }
    learn = services.settings.learn
    adapter_new, adapter_heldout = shared_split
    # New image cases the adapter stage also sees as new take its split; the others get their own.
    _, own_heldout = split_new_cases(
        [c for c in new if c.case_id not in adapter_new], fraction=learn.heldout_fraction, seed=learn.seed
    )
    held_ids = {c.case_id for c in own_heldout} | (adapter_heldout & {c.case_id for c in with_images})
    heldout = [c for c in with_images if c.case_id in held_ids and c.case_id not in frozen_ids]
    train = [c for c in with_images if c.case_id not in held_ids and c.case_id not in frozen_ids]
    gate_cases = heldout + [c for c in with_images if c.case_id in frozen_ids]
    labels = sorted({c.diagnosis[0] for c in train}, key=str.casefold)
    gate_cases = [c for c in gate_cases if c.diagnosis[0] in labels]  # a class it never saw cannot be judged
    if len(labels) < 2:
        return {"status": "skipped", "reason": "image cases name fewer than two diagnoses: nothing to tell apart"}
    encoder_version = store.next_version()
    report: dict[str, Any] = {"version": encoder_version, "champion": champion, "labels": labels}
    from kbservice.imaging.pretraining import hyperparameters as pretraining_hyperparameters
    from kbservice.imaging.training import architecture, train_cnn_encoder

    store.start(
        version=encoder_version,
        run_id=run_id,
        kind="cnn",
        parent=champion,
        knowledge_version=version,
        data_watermark=version,
        labels=labels,
        train_case_ids=[c.case_id for c in train],
        heldout_case_ids=[c.case_id for c in gate_cases],
        hyperparameters=architecture(settings)
        | {k: getattr(settings, k) for k in ("cnn_epochs", "cnn_batch_size", "cnn_learning_rate", "cnn_max_seconds")}
        | ({"pretraining": pretraining_hyperparameters(settings)} if settings.cnn_pretrain_epochs else {}),
        dim=settings.cnn_embedding_dim,
        pixel_size=settings.size,
        triggered_by=triggered_by,
    )
    try:
        stage = time.perf_counter()
        pixels = services.image_store.pixels([i for c in with_images for i in image_ids[c.case_id]])
        train_images = [pixels[i] for c in train for i in image_ids[c.case_id]]
        train_labels = [labels.index(c.diagnosis[0]) for c in train for _ in image_ids[c.case_id]]
        network = None
        if settings.cnn_pretrain_epochs:
            network, pretraining = _pretrained(services, version, gate_cases, labels, learn.seed, progress, check_lease)
            report["pretraining"] = pretraining
        candidate, training = train_cnn_encoder(
            train_images,
            train_labels,
            label_names=labels,
            version=encoder_version,
            settings=settings,
            seed=learn.seed,
            progress=progress,
            on_epoch=lambda _epoch: check_lease(),
            network=network,
        )
        report["training"] = training.to_json()
        report["train_s"] = round(time.perf_counter() - stage, 2)
        champion_encoder = services.encoders.load(champion) if champion else None
        candidate_metrics = judge(candidate, gate_cases, image_ids, pixels, labels)
        champion_metrics = judge(champion_encoder, gate_cases, image_ids, pixels, labels)
        baseline = baseline_metrics(train, gate_cases, labels) if gate_cases else None
        reasons, not_judged = gate_verdict(candidate_metrics, champion_metrics, baseline, gate_cases, settings)
        report["metrics"] = {"candidate": candidate_metrics, "champion": champion_metrics, "baseline": baseline}
        report["gate"] = {"passed": not reasons, "reasons": reasons, "not_judged": not_judged, "cases": len(gate_cases)}
        status = "rejected" if reasons else "promoted"
        blob = candidate.to_bytes(architecture(settings))
        check_lease()
        store.finish(
            encoder_version,
            status=status,
            audit=services.audit,
            actor=triggered_by,
            metrics={k: v for k, v in (candidate_metrics or {}).items() if k != "recall"},
            report=report,
            artifact_sha256=hashlib.sha256(blob).hexdigest(),
            artifact=blob,
            promote_reason=f"image-case gate passed on {len(gate_cases)} cases",
        )
        report["status"] = status
    except BaseException as error:
        if report.get("status"):
            raise
        store.finish(
            encoder_version,
            status="failed",
            audit=services.audit,
            actor=triggered_by,
            error=f"{type(error).__name__}: {error}",
        )
        raise KBError(f"update cycle failed while building encoder {encoder_version}: {error}") from error
    if status == "promoted":
        stage = time.perf_counter()
        with progress.task(f"Embedding every stored image with encoder {encoder_version}", total=0) as advance:
            services.image_similarity.current(progress=advance)
        report["index_s"] = round(time.perf_counter() - stage, 2)
    return report


def _pretrained(
    services: Services,
    version: int,
    gate_cases: Sequence[CaseRecord],
    labels: list[str],
    seed: int,
    progress: Progress,
    check_lease: Callable[[], None],
) -> tuple[Any, dict[str, Any]]:
    """A network pre-trained without labels on every image of a case valid at `version`, labelled or not
    (unlabelled image cases exist for this), except the gate's cases (they judge the result, so the encoder
    must not have seen them), and the record of that pre-training (image count, image-set digest, losses)."""
    from kbservice.imaging.pretraining import pretrained_network

    settings = services.settings.imaging
    judged = {c.case_id for c in gate_cases}
    image_ids = [image_id for image_id, case_id in services.image_store.valid(as_of=version) if case_id not in judged]
    pixels = services.image_store.pixels(image_ids)
    network, record = pretrained_network(
        [pixels[i] for i in image_ids],
        classes=len(labels),
        settings=settings,
        seed=seed,
        progress=progress,
        on_epoch=lambda _epoch: check_lease(),
    )
    digest = hashlib.sha256(",".join(map(str, image_ids)).encode()).hexdigest()[:16]
    return network, record.to_json() | {"image_ids_sha256": digest}


def baseline_metrics(
    train: Sequence[CaseRecord], gate_cases: Sequence[CaseRecord], labels: list[str]
) -> dict[str, Any]:
    """Always answering the commonest diagnosis of the training cases (the whole problem's, not the
    slice's: a slice's own commonest class is chosen after seeing the answers), scored on the gate cases
    by the same metrics as the encoders."""
    counts = np.bincount([labels.index(c.diagnosis[0]) for c in train], minlength=len(labels))
    answer = int(counts.argmax())
    rows = np.zeros((len(gate_cases), len(labels)))
    rows[:, answer] = 1.0
    metrics = probability_metrics([labels.index(c.diagnosis[0]) for c in gate_cases], rows)
    return {"answers": labels[answer], "accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"]}


def gate_verdict(
    candidate: dict[str, Any] | None,
    champion: dict[str, Any] | None,
    baseline: dict[str, Any] | None,
    gate_cases: Sequence[CaseRecord],
    settings: Any,
) -> tuple[list[str], list[str]]:
    """(why the candidate encoder must not be promoted, empty: it may; the checks that could not be made
    and why). A check whose metric is undefined or degenerate on the gate cases is not made: with one
    diagnosis among them, answering that diagnosis always is perfect, so macro-F1 and accuracy say
    nothing about telling diagnoses apart, and AUC is undefined."""
    if candidate is None or not gate_cases:
        return ["no held-out image cases to judge the candidate on"], []
    present = sorted({c.diagnosis[0] for c in gate_cases}, key=str.casefold)
    not_judged = []
    if candidate.get("auc", 0.0) is None:
        not_judged.append("AUC is undefined on held-out cases of one diagnosis; it is not used")
    if len(present) < 2:
        what = (
            "the first encoder against always answering the commonest diagnosis"
            if champion is None
            else "the candidate against the champion"
        )
        not_judged.append(
            f"macro-F1 and accuracy: the {len(gate_cases)} held-out image case(s) all have the diagnosis "
            f"{present[0]!r}, so answering it always scores perfectly there; {what} is not judged on them "
            "(ingest image cases of another diagnosis to judge it)"
        )
        return [], not_judged
    if champion is None:  # the first encoder must at least beat always answering the commonest class
        assert baseline is not None
        if candidate["macro_f1"] <= baseline["macro_f1"]:
            return [
                f"macro-F1 {candidate['macro_f1']:.4f} is no better than always answering the commonest "
                f"class, {baseline['answers']!r} ({baseline['macro_f1']:.4f})"
            ], not_judged
        return [], not_judged
    reasons = []
    if candidate["macro_f1"] < champion["macro_f1"] - settings.encoder_f1_margin:
        reasons.append(f"image macro-F1 fell from {champion['macro_f1']:.4f} to {candidate['macro_f1']:.4f}")
    if candidate["accuracy"] < champion["accuracy"] - settings.encoder_accuracy_margin:
        reasons.append(f"image accuracy fell from {champion['accuracy']:.4f} to {candidate['accuracy']:.4f}")
    return reasons, not_judged
