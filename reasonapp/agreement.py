"""Team review: when reviewers' decisions on one row agree, and how much a team agrees overall.

With overlap on (the store's `min_reviews` > 1, like Argilla's `min_submitted`) several reviewers decide each
row independently. Two decisions **agree** when they are the same decision and, for edits, the same text
character for character: accepted + accepted (both keep the generated reasoning), rejected + rejected, or
edited + edited with identical texts. Accepted + edited, or two different edits, disagree.

A row is **final** when it has `min_reviews` decisions and all of them agree; it is **in dispute** as soon as
two of its decisions disagree (it then takes no new reviewers and waits for an admin to resolve it); otherwise
it is **open** (too few decisions yet).

The team's figures (`agreement_summary`) are pure functions of the decisions, rows with two or more of them:
- the share of those rows whose decisions all agree;
- Cohen's kappa on accept (accepted or edited) against reject, over every pair of reviewers' decisions on one
  row, the reviewer whose name sorts first as rater A (with two reviewers, exactly their Cohen's kappa);
- the mean Levenshtein distance (characters) between two reviewers' versions of one row, over the pairs where
  both kept a version (a rejection has none);
- rows decided by each reviewer (progress).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations

DECISIONS = ("accepted", "edited", "rejected")
OPEN, FINAL, DISPUTE = "open", "final", "dispute"


@dataclass(frozen=True)
class Decision:
    """One reviewer's decision on one row, and the version they kept (None for a rejection)."""

    reviewer: str
    decision: str  # accepted / edited / rejected
    reasoning: str | None  # accepted: the generated text; edited: the reviewer's text; rejected: None
    at: float = 0.0

    def to_dict(self) -> dict:
        return {"reviewer": self.reviewer, "decision": self.decision, "reasoning": self.reasoning, "at": self.at}


def agreement_key(decision: str, reasoning: str | None) -> str:
    """Equal for decisions that agree: the decision, and for an edit its text (the store's SQL mirrors this)."""
    return f"edited:{reasoning}" if decision == "edited" else decision


def agree(a: Decision, b: Decision) -> bool:
    return agreement_key(a.decision, a.reasoning) == agreement_key(b.decision, b.reasoning)


@dataclass(frozen=True)
class Outcome:
    """Where a row stands: open, final (with the agreed decision) or in dispute."""

    state: str
    agreed: Decision | None = None  # when final: the decision all reviewers took


def outcome(decisions: Sequence[Decision], min_reviews: int) -> Outcome:
    """The row's state under `min_reviews`: in dispute when any two decisions disagree, final when enough agree."""
    if len({agreement_key(d.decision, d.reasoning) for d in decisions}) > 1:
        return Outcome(DISPUTE)
    if decisions and len(decisions) >= min_reviews:
        return Outcome(FINAL, decisions[-1])
    return Outcome(OPEN)


def levenshtein(a: str, b: str) -> int:
    """Characters inserted, deleted or substituted to turn `a` into `b` (two-row dynamic programme)."""
    start = 0  # a shared prefix and suffix cost nothing: most reviewers' edits change a few words
    while start < min(len(a), len(b)) and a[start] == b[start]:
        start += 1
    a, b = a[start:], b[start:]
    while a and b and a[-1] == b[-1]:
        a, b = a[:-1], b[:-1]
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, 1):
        current = [i]
        for j, char_b in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b)))
        previous = current
    return previous[-1]


def cohen_kappa(pairs: Sequence[tuple[bool, bool]]) -> float | None:
    """Cohen's kappa of (rater A, rater B) judgements; None when it is undefined (no pairs, or chance agreement is 1)."""
    if not pairs:
        return None
    n = len(pairs)
    observed = sum(a == b for a, b in pairs) / n
    yes_a, yes_b = sum(a for a, _ in pairs) / n, sum(b for _, b in pairs) / n
    chance = yes_a * yes_b + (1 - yes_a) * (1 - yes_b)
    if chance == 1:
        return None
    return (observed - chance) / (1 - chance)


def agreement_summary(decisions_by_row: Mapping[int, Sequence[Decision]]) -> dict:
    """The team's figures over these rows (see the module docstring): shares, kappa, edit distance, progress."""
    multiple = {row: list(ds) for row, ds in decisions_by_row.items() if len(ds) >= 2}
    agreeing = sum(1 for ds in multiple.values() if outcome(ds, len(ds)).state == FINAL)
    pairs, distances = [], []
    for ds in multiple.values():
        for a, b in combinations(sorted(ds, key=lambda d: d.reviewer), 2):
            pairs.append((a.decision != "rejected", b.decision != "rejected"))
            if a.reasoning is not None and b.reasoning is not None:
                distances.append(levenshtein(a.reasoning, b.reasoning))
    progress = Counter(d.reviewer for ds in decisions_by_row.values() for d in ds)
    return {
        "rows_reviewed": len(decisions_by_row),
        "rows_multiply_reviewed": len(multiple),
        "rows_agreeing": agreeing,
        "share_agreeing": agreeing / len(multiple) if multiple else None,
        "pairs": len(pairs),
        "kappa": cohen_kappa(pairs),
        "edit_pairs": len(distances),
        "mean_edit_distance": sum(distances) / len(distances) if distances else None,
        "per_reviewer": dict(sorted(progress.items(), key=lambda item: (-item[1], item[0]))),
    }


def agreement_line(summary: dict, min_reviews: int, in_dispute: int = 0) -> str:
    """The summary as the Review tab's few lines."""
    if min_reviews <= 1 and not summary["rows_reviewed"]:
        return "Team review is off: one decision finalises a row (set REASONAPP_MIN_REVIEWS=2 for overlap and agreement figures)."
    lines = [f"{min_reviews} reviews a row · {summary['rows_reviewed']} rows have team decisions · {in_dispute} in dispute"]
    if summary["rows_multiply_reviewed"]:
        kappa = f"{summary['kappa']:.2f}" if summary["kappa"] is not None else "– (all decisions in one class)"
        distance = f"{summary['mean_edit_distance']:.1f} characters over {summary['edit_pairs']} pairs" if summary["edit_pairs"] else "–"
        lines.append(
            f"{summary['share_agreeing']:.0%} of {summary['rows_multiply_reviewed']} rows reviewed twice or more agree · "
            f"Cohen's κ (accept vs reject) {kappa} over {summary['pairs']} pairs · mean edit distance {distance}"
        )
    if summary["per_reviewer"]:
        lines.append("rows reviewed: " + ", ".join(f"{name} {count}" for name, count in summary["per_reviewer"].items()))
    return "\n".join(lines)
