"""Reasoning quality signals: cheap checks that point reviewers at the reasonings most likely wrong.

Small models writing reasonings tend to restate the label ("Joy is a positive emotion."), cite
nothing from the text, argue for another label, or loop. Each check is a small function of
(reasoning, text, gold label, label names) returning a short reason or None; add one by writing a
function and listing it in `CHECKS`. Flags are hints for review and export filters, never verdicts.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence

STOPWORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being below
    between both but by can could did do does doing down during each emotion emotions expresses express
    feel feeling feelings feels few for from further had has have having he her here hers herself him
    himself his how i if im in into is it its itself just label me more most my myself no nor not now of
    off on once only or other our ours out over own same she should so some such text than that the
    their theirs them then there these they this those through to too under until up very was we were
    what when where which while who whom why will with would you your yours writer writes author shows
    suggests indicates because answer correct""".split()
)
MIN_WORDS = 4
MAX_WORDS = 120

Check = Callable[[str, str, str, Sequence[str]], "str | None"]


def words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", (text or "").lower())


def content_words(text: str) -> set[str]:
    return {w for w in words(text) if len(w) >= 3 and w not in STOPWORDS}


def mentions(text: str, label: str) -> int:
    """How often the label occurs in the text as a word (case-insensitive)."""
    return len(re.findall(rf"\b{re.escape(label.lower())}\b", (text or "").lower()))


def check_empty(reasoning: str, text: str, label: str, label_names: Sequence[str]) -> str | None:
    return "empty" if not (reasoning or "").strip() else None


def check_length(reasoning: str, text: str, label: str, label_names: Sequence[str]) -> str | None:
    count = len(words(reasoning))
    if 0 < count < MIN_WORDS:
        return f"too short ({count} words)"
    if count > MAX_WORDS:
        return f"too long ({count} words)"
    return None


def check_repetitive(reasoning: str, text: str, label: str, label_names: Sequence[str]) -> str | None:
    tokens = words(reasoning)
    if len(tokens) < 8:
        return None
    trigrams = Counter(zip(tokens, tokens[1:], tokens[2:], strict=False))
    most = trigrams.most_common(1)[0][1] if trigrams else 0
    if most >= 3 or len(set(tokens)) / len(tokens) < 0.4:
        return "repetitive"
    return None


def check_no_text_cue(reasoning: str, text: str, label: str, label_names: Sequence[str]) -> str | None:
    if not (reasoning or "").strip():
        return None
    labels = {name.lower() for name in label_names}
    shared = (content_words(reasoning) & content_words(text)) - labels
    return None if shared else "cites nothing from the text"


def check_restates_label(reasoning: str, text: str, label: str, label_names: Sequence[str]) -> str | None:
    if mentions(reasoning, label) and check_no_text_cue(reasoning, text, label, label_names):
        return "restates the label without a cue"
    return None


def check_other_label(reasoning: str, text: str, label: str, label_names: Sequence[str]) -> str | None:
    gold = mentions(reasoning, label)
    others = {name: mentions(reasoning, name) for name in label_names if name.lower() != label.lower()}
    strongest = max(others.items(), key=lambda item: item[1], default=(None, 0))
    if strongest[1] > gold:
        return f"argues for {strongest[0]}"
    return None


CHECKS: dict[str, Check] = {
    "empty": check_empty,
    "length": check_length,
    "repetitive": check_repetitive,
    "no_text_cue": check_no_text_cue,
    "restates_label": check_restates_label,
    "other_label": check_other_label,
}


def quality_flags(reasoning: str | None, text: str, label: str, label_names: Sequence[str]) -> list[str]:
    """Every check's finding for one reasoning, as short human-readable strings."""
    found = []
    for check in CHECKS.values():
        reason = check(reasoning or "", text, label, label_names)
        if reason:
            found.append(reason)
    return found


TEMPLATE_MIN_ROWS = 5
TEMPLATE_FLAG = "template (shared by {count} rows)"


def template_key(reasoning: str | None, label_names: Sequence[str]) -> str:
    """A reasoning with its label words masked and its spacing and case normalized.

    "Joy is a positive emotion." and "Fear is a negative emotion." differ; "Joy is a positive
    emotion." on 77 rows is one template. Reasonings sharing a key across many rows cite nothing
    particular to their text.
    """
    text = " ".join(words(reasoning or ""))
    for name in label_names:
        text = re.sub(rf"\b{re.escape(name.lower())}\b", "<label>", text)
    return text


def quality_summary(rows: Sequence[dict]) -> dict:
    """What a set of reasonings looks like, from exported rows (text, label, reasoning, flags).

    The shares are of the rows that have a reasoning; they are the numbers to read beside a variant's
    accuracy, since a classifier trained on these learns to write them.
    """
    written = [row for row in rows if (row.get("reasoning") or "").strip()]

    def share(test: Callable[[dict], bool]) -> float:
        return sum(1 for row in written if test(row)) / len(written) if written else 0.0

    def flagged(prefix: str) -> Callable[[dict], bool]:
        return lambda row: any(flag.startswith(prefix) for flag in row.get("flags") or [])

    commonest, count = Counter(row["reasoning"].strip() for row in written).most_common(1)[0] if written else ("", 0)
    return {
        "rows": len(rows),
        "with_reasoning": len(written),
        "unflagged": share(lambda row: not row.get("flags")),
        "names_gold_label": share(lambda row: mentions(row["reasoning"], row["label"]) > 0),
        "cites_nothing": share(flagged("cites nothing")),
        "template": share(flagged("template")),
        "argues_other_label": share(flagged("argues for")),
        "mean_words": sum(len(words(row["reasoning"])) for row in written) / len(written) if written else 0.0,
        "commonest": {"reasoning": commonest, "rows": count},
    }


def quality_line(summary: dict) -> str:
    """A `quality_summary` in one line for reviewers: how much of the set would teach a template."""
    if not summary["with_reasoning"]:
        return "No reasonings yet."
    commonest = summary["commonest"]
    return (
        f"{summary['with_reasoning']} reasonings: {summary['unflagged']:.0%} unflagged · "
        f"{summary['names_gold_label']:.0%} name the gold label · {summary['cites_nothing']:.0%} cite nothing from the text · "
        f"{summary['template']:.0%} templates · {summary['argues_other_label']:.0%} argue for another label · "
        f"{summary['mean_words']:.1f} words on average · commonest: \"{commonest['reasoning'][:100]}\" × {commonest['rows']}"
    )


# Export policies: which flagged rows an export leaves out. Named, so the dataset records what it did.
EXPORT_POLICIES: dict[str, Callable[[list[str]], bool]] = {
    "keep-all": lambda flags: True,
    "drop-flagged": lambda flags: not flags,
    "drop-label-restating": lambda flags: not any(
        flag.startswith(("restates the label", "template", "cites nothing", "argues for", "empty")) for flag in flags
    ),
}
# What an export does with the rows a policy drops: leaves them out, or keeps their text and label with an
# empty reasoning (a multitask classifier then learns every label and only the rationales that pass).
DROPPED_ROWS = ("remove", "blank")
