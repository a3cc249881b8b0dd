"""Prompt formats round-trip through their parser, and the parser never guesses."""

import pytest

from reasonapp.prompts import (
    CLASSIFIER_FORMATS,
    LabelSpace,
    clip_text,
    get_format,
    render_completion,
    render_prompt,
    rgen_messages,
    rgen_question,
)

EMOTIONS = LabelSpace(("sadness", "joy", "love", "anger", "fear", "surprise"), "Which emotion does the text express?")


@pytest.mark.parametrize("name", CLASSIFIER_FORMATS)
def test_completion_parses_back_to_its_label_and_reasoning(name):
    fmt = get_format(name)
    reasoning = "The text says 'i feel so happy', a clear cue of joy.\nNothing points elsewhere." if fmt.uses_reasoning else None
    prediction = fmt.parse(fmt.completion("joy", reasoning), EMOTIONS)
    assert prediction.valid and prediction.label == "joy" and prediction.label_index == 1
    if not fmt.answers_with_label_only:
        assert prediction.reasoning == reasoning


def test_multitask_trains_two_prefixed_tasks_and_predicts_the_label_directly():
    label_task, rationale_task = get_format("multitask"), get_format(get_format("multitask").auxiliary)
    assert label_task.messages("i feel great", EMOTIONS)[0]["content"].startswith("[label] ")
    assert rationale_task.messages("i feel great", EMOTIONS)[0]["content"].startswith("[rationale] ")
    assert label_task.completion("joy", "because great") == "joy"
    assert rationale_task.completion("joy", "because great") == "because great"
    assert label_task.answers_with_label_only and label_task.uses_reasoning


def test_qra_reads_the_label_from_the_final_label_line():
    fmt = get_format("qra")
    output = "Label: anger might come to mind, but\nthe writer feels calm and thankful.\nLabel: Joy."
    prediction = fmt.parse(output, EMOTIONS)
    assert (prediction.label, prediction.status) == ("joy", "final_line")
    assert prediction.reasoning.startswith("Label: anger might")


@pytest.mark.parametrize(
    ("name", "output", "reason"),
    [
        ("qa", "", "empty output"),
        ("qa", "   \n ", "empty output"),
        ("qa", "happiness", "'happiness' is not one of"),
        ("qa", "joy or love", "is not one of"),
        ("qra", "The text is about joy.", "no final 'Label:' line"),
        ("qra", "some reasoning\nLabel: ecstasy", "'ecstasy' is not one of"),
        ("qar", "joy\nbecause happy", "first line is not 'Label: <label>'"),
    ],
)
def test_unparseable_output_is_invalid_with_a_reason(name, output, reason):
    prediction = get_format(name).parse(output, EMOTIONS)
    assert not prediction.valid and prediction.label is None and prediction.status == "invalid"
    assert reason in prediction.reason


def test_parser_survives_non_string_and_odd_input():
    fmt = get_format("qra")
    assert not fmt.parse(None, EMOTIONS).valid
    assert not fmt.parse("Label:" * 1000, EMOTIONS).valid


def test_formats_that_use_reasoning_refuse_an_empty_one():
    with pytest.raises(ValueError, match="non-empty reasoning"):
        get_format("qra").completion("joy", "  ")


def test_label_space_rejects_duplicates_and_single_labels():
    with pytest.raises(ValueError):
        LabelSpace(("joy", "Joy"))
    with pytest.raises(ValueError):
        LabelSpace(("joy",))


def test_unknown_format_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"\['multitask', 'multitask_rationale', 'qa', 'qar', 'qra'\]"):
        get_format("qx")


def test_prompts_name_every_label_and_clip_long_text():
    messages = get_format("qa").messages("word " * 10_000, EMOTIONS)
    content = messages[0]["content"]
    assert all(label in content for label in EMOTIONS.names)
    assert len(content) < 2300
    assert clip_text("a\n\nb   c") == "a b c"


def test_rgen_prompt_holds_question_and_answer():
    content = rgen_messages(rgen_question("i feel great", EMOTIONS), "joy")[0]["content"]
    assert "Text: i feel great" in content and "Answer: joy" in content


def test_chat_template_renders_prompt_and_completion_with_end_of_turn(smollm2_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    messages = get_format("qa").messages("i feel great", EMOTIONS)
    prompt = render_prompt(tokenizer, messages)
    assert prompt.endswith("<|im_start|>assistant\n") and "Text: i feel great" in prompt
    assert render_completion(tokenizer, messages, "joy").startswith("joy<|im_end|>")
