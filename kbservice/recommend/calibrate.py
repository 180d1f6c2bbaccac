"""Fitting the fusion weights (the calibration) on held-out labelled cases of the knowledge base.

Each sampled case is answered as a new patient with itself left out of retrieval (leave-one-out), so the
weights learn how far similar-case evidence and the model can be trusted on cases they have not seen; with
a case classifier or an image encoder serving, only cases neither was trained on are sampled, for the same
reason.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from kbservice.classification import expected_calibration_error
from kbservice.classifier.model import CaseClassifier
from kbservice.errors import KBError
from kbservice.progress import NoProgress, Progress
from kbservice.recommend import evidence, group_selection
from kbservice.recommend.features import Features
from kbservice.recommend.fusion import Fusion, balanced_weights, fit_fusion
from kbservice.recommend.group_selection import Selection
from kbservice.recommend.pipeline import Recommender
from kbservice.recommend.prompts import PROMPT_VERSION
from kbservice.recommend.request import Mode, request_for_case
from kbservice.types import CaseRecord

if TYPE_CHECKING:
    from kbservice.config import RecommendSettings
    from kbservice.services import Services


@dataclass(frozen=True)
class Example:
    """One labelled case's features and the indices of its true labels among the candidates."""

    case: CaseRecord | None  # None for a test case that is not in the store
    features: Features
    truth: list[int]


def truth_indices(candidates: Sequence[str], labels: Sequence[str]) -> list[int]:
    wanted = {evidence.candidate_key(label) for label in labels}
    return [i for i, c in enumerate(candidates) if evidence.candidate_key(c) in wanted]


def collect_examples(
    recommender: Recommender,
    cases: Sequence[CaseRecord],
    *,
    version: int,
    mode: Mode,
    leave_one_out: bool,
    advance: Callable[[int], None] = lambda n: None,
    adapter: str | None = None,
    classifier: CaseClassifier | None = None,
) -> list[Example]:
    examples = []
    for case in cases:
        features = recommender.features(
            request_for_case(case, mode=mode, as_of=version),
            exclude_chunk_ids=[case.chunk_id] if leave_one_out else (),
            adapter=adapter,
            classifier=classifier,
        )
        examples.append(Example(case=case, features=features, truth=truth_indices(features.candidates, case.diagnosis)))
        advance(1)
    return examples


def primary_class(example: Example) -> str:
    """The class an example counts for in class balancing: its case's first diagnosis (or first true
    candidate)."""
    if example.case is not None and example.case.diagnosis:
        return evidence.candidate_key(example.case.diagnosis[0])
    return evidence.candidate_key(example.features.candidates[example.truth[0]]) if example.truth else ""


def fit(examples: Sequence[Example], *, names: Sequence[str] | None = None, balanced: bool = True) -> Fusion:
    """Weights for the named features (default: all) fitted on `examples`, every diagnosis weighing the
    same when `balanced`; other features get weight 0."""
    all_names = examples[0].features.names
    use = list(names or all_names)
    columns = [all_names.index(n) for n in use]
    usable = [e for e in examples if e.truth]
    fusion = fit_fusion(
        [e.features.matrix[:, columns] for e in usable],
        [e.truth for e in usable],
        use,
        example_weights=balanced_weights([primary_class(e) for e in usable]) if balanced else None,
        signs=evidence.FEATURE_SIGNS,
    )
    return Fusion(weights={name: fusion.weights.get(name, 0.0) for name in all_names})


def selection_settings(settings: RecommendSettings) -> dict[str, Any]:
    """The configured selection of the fusion (`recommend.fusion_*`), as the `fit_selected` keywords: every
    fit that stands for the service's (calibration, the gates, the evals) selects the same way."""
    return {
        "margin": settings.fusion_group_margin,
        "modality_margin": settings.fusion_modality_margin,
        "modality_holder": settings.fusion_modality_holder,
    }


def fit_selected(
    examples: Sequence[Example],
    *,
    margin: float | None,
    modality_margin: float | None = 0.0,
    modality_holder: str = group_selection.LOWER,
) -> tuple[Fusion, Selection]:
    """The fusion of the modality and evidence groups that lower the out-of-fold log-loss of `examples` by
    at least `modality_margin` and `margin`, the modality `modality_holder` holding until beaten (see
    `group_selection`), class-balanced, with its record of what was chosen and why."""
    usable = [e for e in examples if e.truth]
    if not usable:
        raise KBError("no held-out case has its diagnosis among its candidates; nothing to fit the fusion on")
    names = usable[0].features.names
    return group_selection.fit_selected(
        [group_selection.Example(e.features.matrix, e.truth, primary_class(e)) for e in usable],
        names,
        margin=margin,
        modality_margin=modality_margin,
        modality_holder=modality_holder,
    )


def score(fusion: Fusion, examples: Sequence[Example]) -> dict[str, float]:
    """Accuracy, negative log-likelihood and expected calibration error of `fusion` on `examples`."""
    confidences, correct, nll = [], [], []
    for example in examples:
        p = fusion.probabilities(example.features.matrix, example.features.names)
        top = int(np.argmax(p))
        confidences.append(float(p[top]))
        correct.append(top in example.truth)
        nll.append(-float(np.log(max(p[example.truth].sum(), 1e-12))) if example.truth else 0.0)
    return {
        "accuracy": float(np.mean(correct)),
        "nll": float(np.mean(nll)),
        "ece": expected_calibration_error(confidences, correct),
    }


def calibrate(
    services: Services,
    *,
    mode: Mode = "rag",
    sample: int | None = None,
    seed: int = 0,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Fits and stores a calibration for the configured model, the serving adapter (the champion; None
    without one) and the prompt version, from up to `sample` labelled cases of the newest served knowledge
    version. Returns its report."""
    report, _ = calibrate_examples(services, mode=mode, sample=sample, seed=seed, progress=progress)
    return report


def trained_on(services: Services, classifier_version: str | None) -> set[int]:
    """The case ids the serving case classifier (`classifier_version`) and the champion image encoder were
    trained on."""
    seen = set(services.classifier_store.get(classifier_version)["train_case_ids"]) if classifier_version else set()
    encoder_version = services.encoder_store.alias("champion")
    if encoder_version is not None:
        seen |= set(services.encoder_store.get(encoder_version)["train_case_ids"] or [])
    return seen


def calibrate_examples(
    services: Services,
    *,
    mode: Mode = "rag",
    sample: int | None = None,
    seed: int = 0,
    progress: Progress | None = None,
) -> tuple[dict[str, Any], list[Example]]:
    """`calibrate`, also returning the held-out examples it was fitted on (evaluation reuses them)."""
    recommender = services.recommender
    version = services.retriever.resolve_version(None)
    if version is None:
        raise KBError("the knowledge base is empty; ingest labelled cases before calibrating")
    cases = [c for c in services.case_store.cases(as_of=version) if c.diagnosis]
    classifier_version = services.classifiers.champion_version() if mode == "rag" else None
    # A learned model is overconfident on the cases it was trained on (the case classifier's scores, the image
    # encoder's embeddings of its own training films and its head): the weights are fitted on cases neither
    # saw (held out by the update cycle, frozen, or newer than them).
    seen = trained_on(services, classifier_version) if mode == "rag" else set()
    cases = [c for c in cases if c.case_id not in seen]
    if len(cases) < 10:
        unseen = " that the serving case classifier and image encoder were not trained on" if seen else ""
        raise KBError(
            f"calibration needs at least 10 labelled cases{unseen}; knowledge version {version} has {len(cases)}"
        )
    size = min(sample or services.settings.recommend.calibration_cases, len(cases))
    chosen = sorted(random.Random(seed).sample(cases, size), key=lambda c: c.case_id)
    adapter = services.serving_adapter(None)
    classifier = services.classifiers.load(classifier_version) if classifier_version else None
    with (progress or NoProgress()).task("Calibrating on held-out cases", total=len(chosen)) as advance:
        examples = collect_examples(
            recommender,
            chosen,
            version=version,
            mode=mode,
            leave_one_out=True,
            advance=advance,
            adapter=adapter,
            classifier=classifier,
        )
    fusion, selection = fit_selected(examples, **selection_settings(services.settings.recommend))
    metrics = score(fusion, examples) | {"cases": len(examples), "selection": selection.as_dict()}
    calibration_id = services.recommendations.save_calibration(
        base_model_sha256=services.generator.model_sha256,
        adapter_version=adapter,
        prompt_version=PROMPT_VERSION,
        mode=mode,
        knowledge_version=version,
        weights=fusion.weights,
        metrics=metrics,
        case_ids=[c.case_id for c in chosen],
        classifier_version=classifier_version,
    )
    services.audit.record(
        "calibration",
        actor="kbservice",
        payload={
            "calibration_id": calibration_id,
            "mode": mode,
            "knowledge_version": version,
            "adapter_version": adapter,
            "classifier_version": classifier_version,
            "metrics": metrics,
        },
    )
    report = {
        "calibration_id": calibration_id,
        "adapter_version": adapter,
        "classifier_version": classifier_version,
        "mode": mode,
        "knowledge_version": version,
        "weights": fusion.weights,
        "metrics": metrics,
    }
    return report, examples
