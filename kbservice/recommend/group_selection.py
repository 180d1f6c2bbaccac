"""Which evidence groups enter the fusion, chosen by out-of-fold log-likelihood on the held-out cases.

Fitting every feature on a few hundred held-out cases overfits: on DDXPlus, 16 weights fitted on 300 cases
scored below the case classifier alone. So the groups are chosen along two paths and the one with the lower
cross-validated, class-balanced log-loss wins (ties go to the larger set). Forward selection starts from no
evidence (every candidate equally likely) and adds the group that lowers the loss the most, as long as it
lowers it by at least `margin` nats per case and by more than one standard error of the per-case paired
difference (noise alone gains a little by chance). Backward elimination starts from every group and drops
one whose removal costs less than that: forward alone stops early when two groups only help together (on
symptom2disease it kept similar cases only, 0.972 instead of 0.989). Then the strength of the weights'
shrinkage toward zero is chosen the same way. The folds are stratified by diagnosis
and assigned deterministically, so the same examples always give the same choice.

Before that, when the held-out cases carry both text and image evidence, a modality is chosen (text alone,
image alone, or both): one option holds (by default whichever of text alone and both has the lower
out-of-fold loss; `recommend.fusion_modality_holder`) and another replaces it only by beating it out of fold
by a standard error, so the fusion of a request with an image does no worse on held-out data than the option
that holds. The model's scores are split for it: with the image (`language_model`) and from the text alone
(`language_model_text`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from kbservice.recommend import evidence
from kbservice.recommend.fusion import Fusion, balanced_weights, fit_fusion

# Groups of features that enter or stay out together: each is one source of evidence.
FEATURE_GROUPS: dict[str, tuple[str, ...]] = {
    "similar_cases": evidence.CASE_FEATURES,
    "similar_images": evidence.IMAGE_FEATURES,
    "mentions": evidence.MENTION_FEATURES,
    "classifier": evidence.CLASSIFIER_FEATURES,
    "image_classifier": evidence.IMAGE_HEAD_FEATURES,
    "language_model": evidence.LLM_FEATURES,
    "language_model_text": evidence.LLM_TEXT_FEATURES,
}
# The groups that read only the request's text, and only its images; the model reading both belongs to
# neither. With both kinds present the fusion first chooses a modality (see `_choose_modality`).
TEXT_GROUPS = ("similar_cases", "mentions", "classifier", "language_model_text")
IMAGE_GROUPS = ("similar_images", "image_classifier")
TEXT, IMAGE, BOTH = "text", "image", "text and image"  # the modality options
# Which option holds until another beats it (see `_pick_modality`): LOWER, the one of text alone and both
# together with the lower out-of-fold loss; or TEXT, or BOTH, always.
LOWER = "lower"
HOLDERS = (LOWER, TEXT, BOTH)
SHRINKAGE_GRID = (1e-3, 1e-2, 1e-1)  # L2 strengths tried once the groups are chosen (the first is the default)
MIN_CASES_TO_SELECT = 20  # fewer held-out cases than this: every group enters (too few to cross-validate)
FOLDS = 5
# A group's out-of-fold gain must also exceed this many standard errors of its per-case paired difference: a
# group of pure noise lowers the loss on a few hundred cases by chance (by 0.02 nats in one test draw).
STANDARD_ERRORS = 1.0


@dataclass(frozen=True)
class Example:
    """What selection needs of one held-out case: candidates x features, its true candidates, its class."""

    matrix: np.ndarray
    truth: Sequence[int]
    label: str


@dataclass(frozen=True)
class Selection:
    """The chosen groups and shrinkage, with the out-of-fold log-loss that chose them."""

    groups: list[str]
    l2: float
    out_of_fold_nll: float | None  # of the final choice; None when there were too few cases to select
    steps: list[dict] = field(default_factory=list)  # each accepted group and the loss it reached
    why: str = ""
    modality: str | None = None  # "text", "image" or "text and image"; None: one modality, nothing chosen
    # The out-of-fold loss of the modality choice itself, made again without each fold (nested); None: no
    # modality was chosen.
    modality_nested_nll: float | None = None

    def as_dict(self) -> dict:
        return {
            "groups": self.groups,
            "modality": self.modality,
            "modality_nested_nll": self.modality_nested_nll,
            "l2": self.l2,
            "out_of_fold_nll": self.out_of_fold_nll,
            "steps": self.steps,
            "why": self.why,
        }


def fit_selected(
    examples: Sequence[Example],
    names: Sequence[str],
    *,
    margin: float | None,
    modality_margin: float | None = 0.0,
    modality_holder: str = LOWER,
) -> tuple[Fusion, Selection]:
    """The fusion of the groups that earn their place (see the module doc), fitted on all `examples`; the
    features of the other groups get weight 0. `names` are the columns of every example's matrix.

    When the examples carry both text and image evidence, a modality is chosen first (`_choose_modality`:
    the `modality_holder` option (one of HOLDERS) holds unless another beats it by `modality_margin`; None:
    always both). Then, within it, `margin` selects groups; None: every informative group of the modality
    enters."""
    if modality_holder not in HOLDERS:
        raise ValueError(f"the modality holder is one of {', '.join(HOLDERS)}, not {modality_holder!r}")
    usable = [e for e in examples if len(e.truth)]
    if not usable:
        raise ValueError("no example has a true label among its candidates")
    present = _informative_groups(usable, names)
    choose_modality = modality_margin is not None and _has_both_modalities(present)
    if len(usable) < MIN_CASES_TO_SELECT or (margin is None and not choose_modality):
        why = (
            "every group: selection is off (recommend.fusion_group_margin is unset)"
            if len(usable) >= MIN_CASES_TO_SELECT
            else f"every group: {len(usable)} held-out cases are too few to cross-validate (< {MIN_CASES_TO_SELECT})"
        )
        selection = Selection(groups=present, l2=SHRINKAGE_GRID[0], out_of_fold_nll=None, why=why)
        return _fit(usable, names, present, SHRINKAGE_GRID[0]), selection
    folds = _stratified_folds([e.label for e in usable])
    modality = _choose_modality(usable, names, present, modality_margin, modality_holder, folds)
    if margin is None:  # no group selection: every group of the chosen modality, at the default shrinkage
        selection = Selection(
            groups=modality.groups,
            l2=SHRINKAGE_GRID[0],
            out_of_fold_nll=modality.out_of_fold_nll,
            steps=modality.steps,
            why=f"every group of the chosen modality: {modality.why}",
            modality=modality.name,
            modality_nested_nll=modality.nested_out_of_fold_nll,
        )
        return _fit(usable, names, modality.groups, SHRINKAGE_GRID[0]), selection
    forward = _forward_selection(usable, names, modality.groups, margin, folds)
    backward = _backward_elimination(usable, names, modality.groups, margin, folds)
    # Forward selection can stop early (a group whose gain rests on a few cases is not significant on its own,
    # though every group together is best: symptom2disease), backward elimination keeps groups that merely
    # add noise; whichever path ends lower out of fold wins, ties going to the larger set.
    path = min((backward, forward), key=lambda p: (round(float(p.losses.mean()), 6), -len(p.groups)))
    chosen = path.groups
    l2 = SHRINKAGE_GRID[0]
    if chosen:
        losses = {value: _mean(_out_of_fold_losses(usable, names, chosen, value, folds)) for value in SHRINKAGE_GRID}
        l2 = min(SHRINKAGE_GRID, key=lambda value: (losses[value], value))
        current_nll = losses[l2]
    else:
        current_nll = _mean(path.losses)
    within = ", ".join(modality.groups) or "no informative group"
    why = (
        f"{path.direction} over {within} on {len(usable)} held-out cases "
        f"({len(folds)}-fold, class-balanced), the lower of forward selection (a group enters if it lowers the "
        f"out-of-fold log-loss per case by at least {margin} and by more than {STANDARD_ERRORS:g} standard "
        f"errors of the paired difference) and backward elimination (a group leaves on the same test)"
    )
    if modality.name is not None:
        why += f"; within the chosen modality: {modality.why}"
    steps = modality.steps + forward.steps + backward.steps
    selection = Selection(
        groups=chosen,
        l2=l2,
        out_of_fold_nll=current_nll,
        steps=steps,
        why=why,
        modality=modality.name,
        modality_nested_nll=modality.nested_out_of_fold_nll,
    )
    return _fit(usable, names, chosen, l2), selection


@dataclass(frozen=True)
class _Modality:
    name: str | None  # "text", "image" or "text and image"; None: the examples carry one modality only
    groups: list[str]
    out_of_fold_nll: float | None
    nested_out_of_fold_nll: float | None  # of the choice itself, made again without each fold
    steps: list[dict]
    why: str


def _has_both_modalities(present: Sequence[str]) -> bool:
    return any(g in TEXT_GROUPS for g in present) and any(g in IMAGE_GROUPS for g in present)


def _choose_modality(
    examples: Sequence[Example],
    names: Sequence[str],
    present: Sequence[str],
    margin: float | None,
    holder: str,
    folds: list[list[int]],
) -> _Modality:
    """Text alone, image alone, or both, by out-of-fold log-loss per case (`_pick_modality`; `margin` None:
    both, unconditionally). The `holder` holds until another option beats it by the margin and by more than a
    standard error of the paired difference: on a few dozen held-out cases the lower mean alone is often
    noise (COVID-19 X-rays with clinical notes, one split: image alone 1.16 against text's 1.98 nats per case,
    a standard error of 1.51 from two "No finding" cases of class weight 8, and choosing it cost 0.09
    macro-F1 on the test patients). By default (LOWER) the holder is whichever of text alone and both
    together has the lower mean: both is text plus the image's weights, fitted near zero where the image
    says nothing, so between the two the lower mean decides; image alone drops the text and must beat
    the holder by the standard error. Holding text until both beat it by a standard error, as before, left
    triage requests (vitals-only text) significantly worse than the image alone on macro-F1 (COVID-19 X-rays,
    5 splits: -0.065 [-0.096, -0.034]; with LOWER -0.018 [-0.035, +0.002]). The choice is also made again
    inside each fold, without the cases it then scores: that nested out-of-fold loss is what choosing (rather
    than the chosen option) costs or gains on new cases."""
    if not _has_both_modalities(present):
        return _Modality(None, list(present), None, None, [], "one modality: nothing to choose")
    options = {
        TEXT: [g for g in present if g in TEXT_GROUPS],
        IMAGE: [g for g in present if g in IMAGE_GROUPS],
        BOTH: list(present),
    }
    losses = _option_losses(examples, names, options, folds)
    chosen, reason = _pick_modality(losses, margin, holder)
    steps = [
        {"direction": "modality", "modality": name, "groups": options[name], "out_of_fold_nll": _mean(loss)}
        for name, loss in losses.items()
    ]
    nested = _mean(_nested_modality_losses(examples, names, options, margin, holder, folds))
    why = f"{chosen} ({reason}; chosen again within each fold, the out-of-fold loss is {nested})"
    return _Modality(chosen, options[chosen], _mean(losses[chosen]), nested, steps, why)


def _option_losses(
    examples: Sequence[Example], names: Sequence[str], options: dict[str, list[str]], folds: list[list[int]]
) -> dict[str, np.ndarray]:
    # At the default shrinkage, as every group enters without group selection: then a choice of text alone
    # fits exactly what a text-only request's calibration fits.
    return {
        name: _out_of_fold_losses(examples, names, groups, SHRINKAGE_GRID[0], folds) for name, groups in options.items()
    }


def _pick_modality(losses: dict[str, np.ndarray], margin: float | None, holder: str) -> tuple[str, str]:
    """The chosen option (see `_choose_modality`) and why, from each option's per-case out-of-fold losses:
    `holder` holds (LOWER: the one of text and both with the lower mean, text on a tie) unless image alone
    beats it, then whichever holds unless the third option (both, or text) beats it, each time by at least
    `margin` per case and by more than STANDARD_ERRORS standard errors of the paired difference."""
    if margin is None:
        return BOTH, "modality choice is off"
    said = []
    if holder == LOWER:
        holder = TEXT if float(losses[TEXT].mean()) <= float(losses[BOTH].mean()) else BOTH
        said.append(f"{holder} holds (the lower loss of text and text and image)")
    chosen = holder
    for challenger in (IMAGE, *(option for option in (BOTH, TEXT) if option != holder)):
        gain = losses[chosen] - losses[challenger]
        accepted, standard_error = _significant(gain, margin)
        said.append(
            f"{challenger} {'beats' if accepted else 'does not beat'} {chosen} by {float(gain.mean()):.4f} per "
            f"case (standard error {standard_error:.4f})"
        )
        if accepted:
            chosen = challenger
    losses_said = ", ".join(f"{name} {_mean(loss)}" for name, loss in losses.items())
    return chosen, (
        f"out-of-fold loss {losses_said}; {'; '.join(said)}; a change needs at least {margin} and more than "
        f"{STANDARD_ERRORS:g} standard errors"
    )


def _nested_modality_losses(
    examples: Sequence[Example],
    names: Sequence[str],
    options: dict[str, list[str]],
    margin: float | None,
    holder: str,
    folds: list[list[int]],
) -> np.ndarray:
    """Each example's class-balanced loss under the option chosen (and fitted) without its fold."""
    balance = balanced_weights([e.label for e in examples])
    losses = np.zeros(len(examples))
    for fold in folds:
        held = set(fold)
        rest = [e for i, e in enumerate(examples) if i not in held]
        inner = _stratified_folds([e.label for e in rest])
        chosen, _ = _pick_modality(_option_losses(rest, names, options, inner), margin, holder)
        fusion = _fit(rest, names, options[chosen], SHRINKAGE_GRID[0])
        for i in fold:
            p = fusion.probabilities(examples[i].matrix, names)
            losses[i] = -balance[i] * float(np.log(max(p[list(examples[i].truth)].sum(), 1e-12)))
    return losses


@dataclass(frozen=True)
class _Path:
    direction: str
    groups: list[str]
    losses: np.ndarray  # per case, out of fold, of `groups`
    steps: list[dict]


def _step(direction: str, groups: Sequence[str], losses: np.ndarray, standard_error: float) -> dict:
    """One accepted move of a path, as `Selection.steps` records it."""
    return {
        "direction": direction,
        "groups": list(groups),
        "out_of_fold_nll": _mean(losses),
        "gain_se": round(standard_error, 4),
    }


def _significant(gain: np.ndarray, margin: float) -> tuple[bool, float]:
    standard_error = float(gain.std(ddof=1) / np.sqrt(len(gain)))
    return bool(gain.mean() >= margin and gain.mean() > STANDARD_ERRORS * standard_error), standard_error


def _forward_selection(
    examples: Sequence[Example], names: Sequence[str], present: Sequence[str], margin: float, folds: list[list[int]]
) -> _Path:
    """From no evidence, the group that lowers the loss most enters while its gain is significant."""
    return _greedy_path(
        "forward",
        "forward selection",
        start=[],
        moves=lambda chosen: {g: [*chosen, g] for g in present if g not in chosen},
        losses=lambda groups: _out_of_fold_losses(examples, names, groups, SHRINKAGE_GRID[0], folds),
        margin=margin,
    )


def _backward_elimination(
    examples: Sequence[Example], names: Sequence[str], present: Sequence[str], margin: float, folds: list[list[int]]
) -> _Path:
    """From every informative group, the group whose removal lowers the loss most leaves while that gain is
    significant."""
    return _greedy_path(
        "backward",
        "backward elimination",
        start=list(present),
        moves=lambda chosen: {g: [c for c in chosen if c != g] for g in chosen} if len(chosen) > 1 else {},
        losses=lambda groups: _out_of_fold_losses(examples, names, groups, SHRINKAGE_GRID[0], folds),
        margin=margin,
    )


def _greedy_path(
    direction: str,
    name: str,
    *,
    start: list[str],
    moves: Callable[[list[str]], dict[str, list[str]]],
    losses: Callable[[list[str]], np.ndarray],
    margin: float,
) -> _Path:
    """Takes, move by move, the move (a group entering or leaving: `moves` maps each group to the groups
    after it) that lowers the per-case out-of-fold loss most, while its gain is significant."""
    chosen = start
    current = losses(chosen)
    steps = [{"direction": direction, "groups": list(chosen), "out_of_fold_nll": _mean(current)}]
    while trials := {group: (after, losses(after)) for group, after in moves(chosen).items()}:
        group = min(trials, key=lambda g: (float(trials[g][1].mean()), g))
        accepted, standard_error = _significant(current - trials[group][1], margin)  # paired: the same cases
        if not accepted:
            break
        chosen, current = trials[group]
        steps.append(_step(direction, chosen, current, standard_error))
    return _Path(name, chosen, current, steps)


def _informative_groups(examples: Sequence[Example], names: Sequence[str]) -> list[str]:
    """Groups with at least one feature column that is not constant within some example's candidates (a
    column constant across candidates cannot move a softmax: no image, no classifier, ...)."""
    present = []
    for group, features in FEATURE_GROUPS.items():
        columns = [names.index(n) for n in features if n in names]
        if columns and any(np.ptp(e.matrix[:, columns], axis=0).max() > 0 for e in examples if len(e.matrix)):
            present.append(group)
    if "language_model_text" in present and _same_columns(
        examples, names, evidence.LLM_FEATURES, evidence.LLM_TEXT_FEATURES
    ):
        present.remove("language_model_text")  # no example had an image: a copy of the model's scores
    return present


def _same_columns(
    examples: Sequence[Example], names: Sequence[str], first: Sequence[str], second: Sequence[str]
) -> bool:
    if not all(n in names for n in (*first, *second)):
        return False
    a, b = [names.index(n) for n in first], [names.index(n) for n in second]
    return all(np.array_equal(e.matrix[:, a], e.matrix[:, b]) for e in examples)


def _mean(losses: np.ndarray) -> float:
    return round(float(losses.mean()), 4)


def _stratified_folds(labels: Sequence[str]) -> list[list[int]]:
    """Example indices in FOLDS folds, each diagnosis dealt round-robin across them (deterministic)."""
    order = sorted(range(len(labels)), key=lambda i: (labels[i], i))
    count = min(FOLDS, len(labels))
    return [order[k::count] for k in range(count)]


def _columns(names: Sequence[str], groups: Sequence[str]) -> list[str]:
    wanted = {n for g in groups for n in FEATURE_GROUPS[g]}
    return [n for n in names if n in wanted]


def _fit(examples: Sequence[Example], names: Sequence[str], groups: Sequence[str], l2: float) -> Fusion:
    use = _columns(names, groups)
    weights = {name: 0.0 for name in names}
    if use:
        index = [names.index(n) for n in use]
        fitted = fit_fusion(
            [e.matrix[:, index] for e in examples],
            [list(e.truth) for e in examples],
            use,
            example_weights=balanced_weights([e.label for e in examples]),
            l2=l2,
            signs=evidence.FEATURE_SIGNS,
        )
        weights |= fitted.weights
    return Fusion(weights=weights)


def _out_of_fold_losses(
    examples: Sequence[Example], names: Sequence[str], groups: Sequence[str], l2: float, folds: list[list[int]]
) -> np.ndarray:
    """Each example's class-balanced negative log-likelihood under a fusion fitted without its fold."""
    balance = balanced_weights([e.label for e in examples])
    losses = np.zeros(len(examples))
    for fold in folds:
        held = set(fold)
        fusion = _fit([e for i, e in enumerate(examples) if i not in held], names, groups, l2)
        for i in fold:
            p = fusion.probabilities(examples[i].matrix, names)
            losses[i] = -balance[i] * float(np.log(max(p[list(examples[i].truth)].sum(), 1e-12)))
    return losses
