"""The deterministic train / held-out split of new labelled cases, shared by the adapter and encoder stages."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence

from kbservice.types import CaseRecord

MIN_CASES_TO_HOLD_OUT = 2  # one to train on, one to judge with


def split_new_cases(
    cases: Sequence[CaseRecord], *, fraction: float, seed: int
) -> tuple[list[CaseRecord], list[CaseRecord]]:
    """(train, held-out): per primary label, the cases with the smallest seeded hash of their id are held
    out (a fixed share, rounded, and at least one of any label with two or more cases, so that every
    label that can be judged is: a slice of one label lets always answering it score perfectly).
    Deterministic, and a case keeps its side as more cases arrive while its label's count is unchanged."""
    groups: dict[str, list[CaseRecord]] = defaultdict(list)
    for case in cases:
        groups[case.diagnosis[0].casefold()].append(case)
    train, held = [], []
    for label in sorted(groups):
        members = sorted(groups[label], key=lambda c: hashlib.sha256(f"{seed}:{c.case_id}".encode()).hexdigest())
        count = max(round(len(members) * fraction), 1 if len(members) >= MIN_CASES_TO_HOLD_OUT else 0)
        held += members[:count]
        train += members[count:]
    if not held and len(train) > 1:  # too few per label to round up: hold out one overall
        held.append(train.pop())
    return sorted(train, key=lambda c: c.case_id), sorted(held, key=lambda c: c.case_id)
