"""Negated and uncertain findings in clinical text: a NegEx-style rule set (Chapman et al., 2001).

"No pneumothorax or pleural effusion" names two findings and asserts neither. Similar-case evidence and the
case classifier must not count such a mention as evidence *for* the finding, so every word of a text is
marked affirmed, negated or uncertain:

- a *pre* trigger ("no", "without", "negative for", "cannot exclude", ...) opens a scope over the words after
  it, up to a terminator ("but", "however", a sentence or clause end) or `SCOPE_WORDS` words;
- a *post* trigger ("is ruled out", "was excluded", "is absent", ...) marks up to `POST_SCOPE_WORDS` words
  before it, stopping at a terminator or a verb such as "is";
- "no change", "no interval change" and the like are *pseudo* triggers: they negate nothing.

Lists stay in scope ("no pneumothorax, effusion or consolidation" negates all three), because "or", "and"
and commas are not terminators. Negation wins over uncertainty where both apply. The rules are plain data
below so they can be read and extended; they are not tuned to any data set.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

Assertion = Literal["affirmed", "negated", "uncertain"]

SCOPE_WORDS = 8  # a pre trigger reaches at most this many words (NegEx's window is 5-6; lists run longer)
POST_SCOPE_WORDS = 3  # a post trigger reaches back over the finding it follows, not the whole clause

# fmt: off
_PRE_NEGATION = (
    "no", "not", "without", "denies", "denied", "deny", "negative for", "free of", "absence of", "no evidence of",
    "no signs of", "no sign of", "no history of", "never", "nor", "neither", "rules out", "ruled out",
    "resolution of", "no new", "no acute", "no significant", "none", "non", "unremarkable for", "clear of",
    "fails to reveal",
)
_POST_NEGATION = (
    "is ruled out", "are ruled out", "was ruled out", "were ruled out", "has been ruled out", "ruled out",
    "is excluded", "was excluded", "are excluded", "were excluded", "is absent", "are absent", "was absent",
    "not seen", "not identified", "not present", "is negative", "was negative", "has resolved", "have resolved",
    "resolved", "free", "absent",
)
_PRE_UNCERTAIN = (
    "possible", "possibly", "probable", "probably", "likely", "may represent", "may be", "might be", "could be",
    "could represent", "cannot exclude", "can not exclude", "cannot be excluded", "cannot rule out",
    "can not rule out", "questionable", "question of", "suspicious for", "suspected", "suspect", "concerning for",
    "suggestive of", "suggests", "suggesting", "worrisome for", "versus", "vs", "differential includes", "rule out",
    "r/o", "borderline", "equivocal", "indeterminate", "presumed", "presumably", "maybe",
)
_POST_UNCERTAIN = (
    "is possible", "is likely", "is suspected", "cannot be excluded", "not excluded", "is questionable", "unlikely",
    "is unlikely", "less likely", "is not excluded",
)
_PSEUDO = (
    "no change", "no interval change", "no significant change", "not only", "no increase", "no further",
    "not necessarily", "without difficulty", "gram negative", "no longer", "not certain if", "not certain whether",
    "no suspicious change",
)
_TERMINATORS = frozenset({
    "although", "and", "apart", "aside", "but", "complains", "demonstrates", "except", "has", "however",
    "nevertheless", "otherwise", "presents", "reports", "reveals", "shows", "still", "though", "whereas", "which",
    "who", "with", "yet",
})
# "and" ends a scope only when a new finding is being asserted after it ("no fever and has a cough"); in a
# plain list ("no effusion and no pneumothorax" / "no effusion and pneumothorax") NegEx keeps the scope.
# The rule below: "and"/"with" terminate only when the next word is a verb-like word in _ASSERTING.
_ASSERTING = frozenset({
    "are", "complains", "demonstrates", "had", "has", "have", "is", "presented", "presents", "reported", "reports",
    "reveals", "show", "showed", "shows", "was", "were",
})
# fmt: on
_CLAUSE_END = re.compile(r"[.;:!?\n]+")
_WORD = re.compile(r"[a-z0-9]+(?:[/'-][a-z0-9]+)*")


@dataclass(frozen=True)
class MarkedWord:
    word: str
    assertion: Assertion


def _phrases(triggers: tuple[str, ...]) -> list[tuple[str, ...]]:
    return sorted({tuple(t.split()) for t in triggers}, key=len, reverse=True)


_PRE_N, _POST_N = _phrases(_PRE_NEGATION), _phrases(_POST_NEGATION)
_PRE_U, _POST_U = _phrases(_PRE_UNCERTAIN), _phrases(_POST_UNCERTAIN)
_PSEUDO_P = _phrases(_PSEUDO)


def _match(words: list[str], at: int, phrases: list[tuple[str, ...]]) -> int:
    """The length of the longest phrase starting at `at` (0: none)."""
    for phrase in phrases:
        if tuple(words[at : at + len(phrase)]) == phrase:
            return len(phrase)
    return 0


def _ends_scope(words: list[str], at: int) -> bool:
    word = words[at]
    if word in ("and", "with"):
        return at + 1 < len(words) and words[at + 1] in _ASSERTING
    return word in _TERMINATORS


def _mark_clause(words: list[str]) -> list[Assertion]:
    marks: list[Assertion] = ["affirmed"] * len(words)
    trigger = [False] * len(words)
    post: list[tuple[int, Assertion]] = []  # (first word of a post trigger, what it marks)
    i = 0
    while i < len(words):
        pseudo = _match(words, i, _PSEUDO_P)
        post_n, post_u = _match(words, i, _POST_N), _match(words, i, _POST_U)
        pre_n, pre_u = _match(words, i, _PRE_N), _match(words, i, _PRE_U)
        # The longest phrase wins: "not seen" is a post trigger, not "not" + "seen".
        length, kind = max(
            (pseudo, "pseudo"),
            (post_n, "post_negated"),
            (post_u, "post_uncertain"),
            (pre_n, "negated"),
            (pre_u, "uncertain"),
            key=lambda item: item[0],
        )
        if not length:
            i += 1
            continue
        for j in range(i, i + length):
            trigger[j] = True
        if kind.startswith("post_"):
            post.append((i, kind.removeprefix("post_")))  # type: ignore[arg-type]
        elif kind != "pseudo":
            j, reached = i + length, 0
            while j < len(words) and reached < SCOPE_WORDS and not _ends_scope(words, j):
                if marks[j] != "negated":
                    marks[j] = kind  # type: ignore[assignment]
                j, reached = j + 1, reached + 1
        i += length
    for start, assertion in post:
        j, reached = start - 1, 0
        while j >= 0 and reached < POST_SCOPE_WORDS and not _ends_scope(words, j) and not trigger[j]:
            if words[j] in _ASSERTING:  # "the patient is | pain free": the subject is not negated
                break
            if marks[j] != "negated":
                marks[j] = assertion
            j, reached = j - 1, reached + 1
    return [m if not t else "affirmed" for m, t in zip(marks, trigger, strict=True)]


@lru_cache(maxsize=4096)
def _mark_cached(text: str) -> tuple[MarkedWord, ...]:
    out: list[MarkedWord] = []
    for clause in _CLAUSE_END.split(text.casefold()):
        words = _WORD.findall(clause)
        out += [MarkedWord(w, a) for w, a in zip(words, _mark_clause(words), strict=True)]
    return tuple(out)


def mark(text: str) -> tuple[MarkedWord, ...]:
    """Every word of `text` (lower-cased) with whether it is affirmed, negated or uncertain. Trigger words
    themselves count as affirmed (they are not findings)."""
    return _mark_cached(text)


def marked_tokens(text: str) -> list[str]:
    """The words of `text`, negated ones prefixed "neg_" and uncertain ones "unc_", so a bag of words tells
    "no effusion" from "effusion"."""
    prefix = {"affirmed": "", "negated": "neg_", "uncertain": "unc_"}
    return [prefix[m.assertion] + m.word for m in mark(text)]


def stem(word: str) -> str:
    """A crude plural fold, enough to match a diagnosis name's words in a text ("effusions" ~ "effusion")."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


_NAME_STOPWORDS = frozenset({"of", "the", "and", "or", "a", "an", "in", "on", "with", "to", "acute", "chronic"})


def name_words(name: str) -> frozenset[str]:
    """The content words of a diagnosis name, stemmed ("Pleural effusion" -> {"pleural", "effusion"})."""
    return frozenset(stem(w) for w in _WORD.findall(name.casefold()) if w not in _NAME_STOPWORDS)


@dataclass(frozen=True)
class Mentions:
    """The stemmed words a text asserts, negates and hedges."""

    affirmed: frozenset[str]
    negated: frozenset[str]
    uncertain: frozenset[str]

    def mention(self, name: str) -> tuple[float, float, float]:
        """The shares of `name`'s content words that the text affirms, negates and hedges (a word may be
        affirmed in one place and negated in another)."""
        words = name_words(name)
        if not words:
            return 0.0, 0.0, 0.0
        n = len(words)
        return len(words & self.affirmed) / n, len(words & self.negated) / n, len(words & self.uncertain) / n


@lru_cache(maxsize=4096)
def mentions(text: str) -> Mentions:
    marked = mark(text)
    sets: dict[str, set[str]] = {"affirmed": set(), "negated": set(), "uncertain": set()}
    for item in marked:
        sets[item.assertion].add(stem(item.word))
    return Mentions(
        affirmed=frozenset(sets["affirmed"]),
        negated=frozenset(sets["negated"]),
        uncertain=frozenset(sets["uncertain"]),
    )
