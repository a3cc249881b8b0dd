"""Prompt formats: how a task becomes chat messages and a completion, and how output becomes a label.

Every prompt goes through the model's chat template. Formats are versioned (`PROMPT_VERSION`): a run,
a stored reasoning and a pushed model record the version they used, and changing any text here
means bumping it.

Formats:
- `rgen`  (Stage 1/2): question + answer -> reasoning.
- Stage 2 prompts (`STAGE2_PROMPTS`, each named and versioned): the `rgen` format for a trained R-Gen, and
  zero-shot and few-shot requests for the cue words, for an instruct teacher without Stage 1.
- `qa`    text -> label.
- `qra`   text -> reasoning, then the label on a final line `Label: <label>` (the paper).
- `qar`   text -> `Label: <label>` first, then the reasoning (explanations at Q->A cost).
- `multitask` one model learns `[label]` text -> label and `[rationale]` text -> reasoning, and
  predicts the label directly (Hsieh et al., 2023, "distilling step-by-step").

The parser never guesses: output that does not name exactly one known label in the place the format
puts it is `invalid`, with the reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

PROMPT_VERSION = "1"
LABEL_PREFIX = "Label:"
MAX_TEXT_CHARS = 2000  # longer inputs are clipped in prompts so one paste cannot blow up memory

Messages = list[dict[str, str]]
ParseStatus = Literal["exact", "final_line", "first_line", "invalid"]


@dataclass(frozen=True)
class LabelSpace:
    """The label names (in label-id order) and the question the classifier answers."""

    names: tuple[str, ...]
    task_description: str = "Which label fits the text?"

    def __post_init__(self):
        if len(self.names) < 2:
            raise ValueError(f"a label space needs at least two labels, got {list(self.names)}")
        lowered = [name.lower() for name in self.names]
        if len(set(lowered)) != len(lowered):
            raise ValueError(f"label names must differ (ignoring case): {list(self.names)}")

    def index_of(self, name: str) -> int | None:
        wanted = _normalize_label(name)
        for index, label in enumerate(self.names):
            if label.lower() == wanted:
                return index
        return None

    @property
    def options(self) -> str:
        return ", ".join(self.names)


@dataclass
class Prediction:
    """A parsed model output: the label (or None), the reasoning if any, and how it was read."""

    label: str | None
    label_index: int | None
    status: ParseStatus
    reasoning: str = ""
    reason: str = ""
    raw: str = field(default="", repr=False)

    @property
    def valid(self) -> bool:
        return self.status != "invalid"


def clip_text(text: str, max_chars: int = MAX_TEXT_CHARS) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= max_chars else text[:max_chars] + " …"


def _normalize_label(text: str) -> str:
    text = text.strip().strip("\"'`*").strip()
    return re.sub(r"[.!。]+$", "", text).strip().lower()


def _invalid(raw: str, reason: str, reasoning: str = "") -> Prediction:
    return Prediction(None, None, "invalid", reasoning=reasoning, reason=reason, raw=raw)


def _match(raw: str, candidate: str, labels: LabelSpace, status: ParseStatus, reasoning: str = "") -> Prediction:
    index = labels.index_of(candidate)
    if index is None:
        return _invalid(raw, f"{candidate.strip()[:40]!r} is not one of {list(labels.names)}", reasoning)
    return Prediction(labels.names[index], index, status, reasoning=reasoning, raw=raw)


_LABEL_LINE = re.compile(rf"^\s*\**\s*{LABEL_PREFIX[:-1]}\s*\**\s*:\s*\**(.*)$", re.IGNORECASE)


# ---------------------------------------------------------------------------------------------
# Stage 1/2: the reasoning generator


def rgen_question(text: str, labels: LabelSpace) -> str:
    """A classification example phrased as the question R-Gen explains (Stage 2)."""
    return f"{labels.task_description} Options: {labels.options}.\nText: {clip_text(text)}"


RGEN_INSTRUCTIONS = {
    # what Stage 1 trains on, and the paper's setting
    "default": "Explain briefly why this answer is correct, citing the parts of the question that support it.",
    # for small models that restate the label: ask for the words that carry it first
    "cue": "Quote the words in the text that show this answer, then say in one sentence why they point to it. "
    "Do not just name the answer.",
}


def rgen_messages(question: str, answer: str, variant: str = "default") -> Messages:
    if variant not in RGEN_INSTRUCTIONS:
        raise ValueError(f"unknown R-Gen prompt variant {variant!r}; choose one of {sorted(RGEN_INSTRUCTIONS)}")
    return [
        {
            "role": "user",
            "content": f"Question: {clip_text(question)}\nAnswer: {answer.strip()}\n\n{RGEN_INSTRUCTIONS[variant]}",
        }
    ]


# ---------------------------------------------------------------------------------------------
# classifiers


Layout = Literal["label", "reasoning_label", "label_reasoning", "reasoning"]


@dataclass(frozen=True)
class ClassificationFormat:
    """One way of asking for a label; `completion` and `parse` are inverses on valid output.

    `layout` says what the model writes; `task_prefix` marks the task when one model learns several
    (multi-task); `auxiliary` names a second format whose examples are trained alongside this one.
    """

    name: str
    layout: Layout
    instruction: str
    task_prefix: str = ""
    auxiliary: str | None = None

    @property
    def uses_reasoning(self) -> bool:
        """Training needs a reasoning for every row."""
        return self.layout != "label" or self.auxiliary is not None

    @property
    def answers_with_label_only(self) -> bool:
        """The label can be scored directly, without generating a reasoning first."""
        return self.layout == "label"

    def messages(self, text: str, labels: LabelSpace) -> Messages:
        instruction = self.instruction.format(options=labels.options)
        content = f"{self.task_prefix}{labels.task_description} {instruction}\n\nText: {clip_text(text)}"
        return [{"role": "user", "content": content}]

    def completion(self, label: str, reasoning: str | None = None) -> str:
        if self.layout == "label":
            return label
        if reasoning is None or not reasoning.strip():
            raise ValueError(f"format {self.name!r} needs a non-empty reasoning")
        reasoning = reasoning.strip()
        if self.layout == "reasoning":
            return reasoning
        if self.layout == "reasoning_label":
            return f"{reasoning}\n{LABEL_PREFIX} {label}"
        return f"{LABEL_PREFIX} {label}\n{reasoning}"

    def parse(self, output: str, labels: LabelSpace) -> Prediction:
        raw = output if isinstance(output, str) else ""
        text = raw.strip()
        if not text:
            return _invalid(raw, "empty output")
        lines = [line for line in text.splitlines() if line.strip()]
        if self.layout == "label":
            only = lines[0] if len(lines) == 1 else text
            label_line = _LABEL_LINE.match(only)
            return _match(raw, label_line.group(1) if label_line else only, labels, "exact")
        if self.layout == "reasoning":
            return _invalid(raw, "this format writes a reasoning, not a label", reasoning=text)
        if self.layout == "reasoning_label":
            for position in range(len(lines) - 1, -1, -1):
                found = _LABEL_LINE.match(lines[position])
                if found:
                    reasoning = "\n".join(lines[:position]).strip()
                    return _match(raw, found.group(1), labels, "final_line", reasoning)
            return _invalid(raw, f"no final '{LABEL_PREFIX}' line", reasoning=text)
        found = _LABEL_LINE.match(lines[0])
        if not found:
            return _invalid(raw, f"the first line is not '{LABEL_PREFIX} <label>'", reasoning=text)
        return _match(raw, found.group(1), labels, "first_line", "\n".join(lines[1:]).strip())


_ANSWER = "Answer with exactly one of: {options}."
_EXPLAIN = "Explain briefly which words in the text point to the answer."
FORMATS: dict[str, ClassificationFormat] = {
    "qa": ClassificationFormat("qa", "label", _ANSWER),
    "qra": ClassificationFormat(
        "qra",
        "reasoning_label",
        "First explain briefly which words in the text point to the answer, then give the answer on a "
        f"final line as '{LABEL_PREFIX} <one of: {{options}}>'.",
    ),
    "qar": ClassificationFormat(
        "qar",
        "label_reasoning",
        f"Give the answer first as '{LABEL_PREFIX} <one of: {{options}}>', then explain briefly which words "
        "in the text point to it.",
    ),
    # "Distilling step-by-step" (Hsieh et al., 2023): one model, two prefixed tasks; predicts the label directly.
    "multitask": ClassificationFormat("multitask", "label", _ANSWER, task_prefix="[label] ", auxiliary="multitask_rationale"),
    "multitask_rationale": ClassificationFormat("multitask_rationale", "reasoning", _EXPLAIN, task_prefix="[rationale] "),
}
CLASSIFIER_FORMATS = ("qa", "qra", "qar", "multitask")


def get_format(name: str) -> ClassificationFormat:
    try:
        return FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown prompt format {name!r}; choose one of {sorted(FORMATS)}") from None


# ---------------------------------------------------------------------------------------------
# chat templates


def render_prompt(tokenizer, messages: Messages) -> str:
    """The prompt string up to where the assistant starts writing."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def render_completion(tokenizer, messages: Messages, completion: str) -> str:
    """What the chat template appends for an assistant turn: the completion and its end-of-turn marker.

    Derived by difference so it works for any template (as TRL does for prompt/completion data).
    """
    prompt = render_prompt(tokenizer, messages)
    full = tokenizer.apply_chat_template(
        messages + [{"role": "assistant", "content": completion}], tokenize=False
    )
    if not full.startswith(prompt):
        raise ValueError("the chat template renders the prompt differently with and without the answer")
    return full[len(prompt) :]


# ---------------------------------------------------------------------------------------------
# Stage 2 prompts: how R-Gen, or any teacher model behind an endpoint, is asked for a reasoning


@dataclass(frozen=True)
class FewShotExample:
    """A hand-written demonstration, from its own task and label set so that none leans toward one dataset."""

    labels: LabelSpace
    text: str
    label: str
    reasoning: str


@dataclass(frozen=True)
class Stage2Prompt:
    """One named way to ask for the reasoning of a (text, gold label) pair; a stored reasoning records its name
    and version, and changing a prompt's text means bumping its version.

    `rgen_variant` marks the Stage 1 format itself (a trained R-Gen, served anywhere, must be asked exactly what
    it learned); the other prompts are for instruct models without Stage 1 and put the task, the options, the
    text and the gold label in one user turn, after `examples` as earlier turns when there are any.
    """

    name: str
    version: str
    summary: str
    instruction: str = ""
    rgen_variant: str | None = None
    examples: tuple[FewShotExample, ...] = ()

    def messages(self, text: str, label: str, labels: LabelSpace) -> Messages:
        if self.rgen_variant is not None:
            return rgen_messages(rgen_question(text, labels), label, self.rgen_variant)
        turns: Messages = []
        for example in self.examples:
            turns.append({"role": "user", "content": self._ask(example.text, example.label, example.labels)})
            turns.append({"role": "assistant", "content": example.reasoning})
        turns.append({"role": "user", "content": self._ask(text, label, labels)})
        return turns

    def _ask(self, text: str, label: str, labels: LabelSpace) -> str:
        return (
            f"Task: {labels.task_description} Options: {labels.options}.\n"
            f"Text: {clip_text(text)}\n"
            f"Correct answer: {label.strip()}\n\n"
            f"{self.instruction}"
        )


_CUE_WORDS = (
    "Quote the words or short phrases from the text that show this answer, then explain in one or two "
    "sentences how they point to it rather than to the other options. Use only words that appear in the "
    "text, and do not just repeat the answer."
)
FEW_SHOT_EXAMPLES = (
    FewShotExample(
        LabelSpace(("negative", "positive"), "Is this product review negative or positive?"),
        "The battery died after two days and support never answered my emails.",
        "negative",
        '"battery died after two days" reports the product failing, and "support never answered" is a complaint '
        "about the service; both describe a bad experience, so the review is negative.",
    ),
    FewShotExample(
        LabelSpace(("world", "sports", "business", "science/tech"), "Which topic is this news headline about?"),
        "Shares of the chipmaker fell 8% after it cut its revenue forecast for the quarter.",
        "business",
        '"Shares ... fell 8%" and "cut its revenue forecast" are about a company\'s stock and earnings, which is '
        "business news; nothing in it is about a match, a government or how the chips work.",
    ),
    FewShotExample(
        LabelSpace(("refund", "delivery", "account access"), "What does the customer want?"),
        "I was charged twice for the same order, can I get my money back?",
        "refund",
        '"charged twice" names a billing error and "get my money back" asks for the money to be returned: a '
        "refund, not a question about the parcel or about logging in.",
    ),
    FewShotExample(
        LabelSpace(("urgent", "routine"), "How urgent is this maintenance request?"),
        "Water is pouring through the ceiling of the server room right now.",
        "urgent",
        '"pouring through the ceiling" describes damage under way and "right now" says it is happening as they '
        "write, next to equipment at risk: it cannot wait.",
    ),
)
STAGE2_PROMPTS: dict[str, Stage2Prompt] = {
    prompt.name: prompt
    for prompt in (
        Stage2Prompt("default", PROMPT_VERSION, "the Stage 1 format (what a trained R-Gen learned; the paper)", rgen_variant="default"),
        Stage2Prompt("cue", PROMPT_VERSION, "the Stage 1 format, asking for the words that carry the answer", rgen_variant="cue"),
        Stage2Prompt("cue-words", "1", "zero-shot: quote the cue words from the text, then why they point to the answer", _CUE_WORDS),
        Stage2Prompt(
            "cue-words-brief",
            "1",
            "zero-shot: one sentence naming the cue words",
            "In one sentence, name the words from the text, quoted exactly, that show this answer and say why. "
            "Write only that sentence.",
        ),
        Stage2Prompt(
            "few-shot", "1", "the cue-words request after four hand-written examples from other label sets", _CUE_WORDS,
            examples=FEW_SHOT_EXAMPLES,
        ),
    )
}


def stage2_prompt(name: str) -> Stage2Prompt:
    try:
        return STAGE2_PROMPTS[name]
    except KeyError:
        raise ValueError(f"unknown Stage 2 prompt {name!r}; choose one of {sorted(STAGE2_PROMPTS)}") from None


def stage2_messages(text: str, label: str, labels: LabelSpace, prompt: str = "default") -> Messages:
    """The conversation that asks for the reasoning of one (text, gold label) under the named Stage 2 prompt."""
    return stage2_prompt(prompt).messages(text, label, labels)
