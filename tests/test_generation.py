"""Generation and label scoring: every fast path gives what the plain transformers path gives, on the real model."""

import re

import numpy as np
import pytest

from reasonapp.prompts import LabelSpace, get_format, render_prompt

EMOTIONS = LabelSpace(("sadness", "joy", "love", "anger", "fear", "surprise"))


def _prefix_of(tokenizer, fmt, labels):
    from training.generation import PrefixCache, common_prefix

    probes = tokenizer([render_prompt(tokenizer, fmt.messages(t, labels)) for t in ("a", "b")], add_special_tokens=False)
    return PrefixCache(common_prefix(probes["input_ids"]))


@pytest.mark.parametrize(
    "label_names",
    [("sadness", "joy", "love", "anger", "fear", "surprise"), ("very negative", "neutral", "an extremely positive outcome")],
)
def test_label_scoring_with_a_kept_prefix_matches_the_plain_pass_on_the_real_model(smollm2_dir, label_names):
    """The fast path (shared-prefix KV cache kept across calls, all labels in one tree-masked forward)
    gives the plain scores within 1e-4, for one text at a time and for batches, labels of 1 to 6 tokens."""
    from reasonapp.models import load_base_model
    from training.generation import score_labels, score_labels_plainly

    model, tokenizer = load_base_model(smollm2_dir, device="cpu")  # float32: exact to 1e-4
    labels = LabelSpace(label_names)
    fmt = get_format("qa")
    texts = ["i feel fine", "a much longer text about being rather scared of the dark at night", "im so angry"]
    conversations = [fmt.messages(text, labels) for text in texts]
    prefix = _prefix_of(tokenizer, fmt, labels)
    assert len(prefix.ids) > 40  # template and instruction: most of the prompt

    plain = score_labels_plainly(model, tokenizer, conversations, labels.names)
    one_by_one = [score_labels(model, tokenizer, [c], labels.names, 1, prefix=prefix)[0] for c in conversations]
    batched = score_labels(model, tokenizer, conversations, labels.names, batch_size=2, prefix=prefix)
    assert abs(np.array(one_by_one) - plain).max() < 1e-4
    assert abs(batched - plain).max() < 1e-4


def test_streaming_from_the_kept_prefix_gives_the_same_greedy_text_as_plain_generation(smollm2_dir):
    from reasonapp.models import load_base_model
    from training.generation import Decoding, generate, stream

    model, tokenizer = load_base_model(smollm2_dir, device="cpu")  # float32: exact to 1e-4
    labels = EMOTIONS
    fmt = get_format("qra")
    prefix = _prefix_of(tokenizer, fmt, labels)
    decoding = Decoding(max_new_tokens=24)
    for text in ("i was so thrilled when the package arrived early", "i feel a bit down about everything today"):
        messages = fmt.messages(text, labels)
        partials = list(stream(model, tokenizer, messages, decoding, prefix))
        assert len(partials) > 1 and partials[-1] == generate(model, tokenizer, [messages], decoding)[0]



def test_batched_generation_from_the_shared_prefix_gives_the_plain_greedy_outputs(smollm2_dir):
    from reasonapp.models import load_base_model
    from training.generation import Decoding, generate

    model, tokenizer = load_base_model(smollm2_dir, device="cpu")  # float32: exact to 1e-4
    texts = ["i feel fine", "a much longer text about being rather scared of the dark at night", "ok", "im so angry", "i miss him"]
    conversations = [get_format("qra").messages(text, EMOTIONS) for text in texts]
    decoding = Decoding(max_new_tokens=16)
    shared = generate(model, tokenizer, conversations, decoding, batch_size=3)
    plain = generate(model, tokenizer, conversations, decoding, batch_size=3, share_prefix=False)
    assert shared == plain and len(set(shared)) > 1


def generate_counting_forwards(model, tokenizer, conversations, decoding, batch_size: int):
    """`generate`'s outputs and the (rows, tokens) of every forward pass it made."""
    from training.generation import generate

    calls = []
    hook = model.register_forward_pre_hook(lambda module, args, kwargs: calls.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True)
    try:
        return generate(model, tokenizer, conversations, decoding, batch_size=batch_size), calls
    finally:
        hook.remove()


def test_rows_that_finish_early_leave_the_batch_and_every_row_gets_what_generate_gives_it_alone(smollm2_dir):
    """A batch decodes only its unfinished rows (Stage 2's reasonings are short, but a batch ran as long as its longest
    row, ~70% of the decoded rows padding), and each row's greedy text is still transformers' `generate`'s for it alone."""
    from reasonapp.models import load_base_model
    from training.generation import Decoding

    model, tokenizer = load_base_model(smollm2_dir, device="cpu")  # float32: exact to 1e-4
    texts = ["i feel fine", "a much longer text about being rather scared of the dark at night", "ok", "im so angry", "i miss him"]
    conversations = [get_format("qa").messages(text, EMOTIONS) for text in texts]
    decoding = Decoding(max_new_tokens=40)
    batched, calls = generate_counting_forwards(model, tokenizer, conversations, decoding, batch_size=5)
    rows_per_step = [rows for rows, tokens in calls if tokens == 1]  # the decoding steps, after the prefix and the prompts
    assert max(rows_per_step) == 5 and min(rows_per_step) < 5, calls  # rows left the batch as they finished
    assert rows_per_step == sorted(rows_per_step, reverse=True)

    for conversation, text in zip(conversations, batched, strict=True):
        prompt = tokenizer(render_prompt(tokenizer, conversation), add_special_tokens=False, return_tensors="pt")
        alone = model.generate(**prompt, **decoding.generate_kwargs(), pad_token_id=tokenizer.pad_token_id)
        assert text == tokenizer.decode(alone[0, prompt["input_ids"].shape[1] :], skip_special_tokens=True).strip()


def _alone(model, tokenizer, conversation, decoding) -> str:
    """transformers' own greedy `generate` for one prompt, no batch, no kept prefix."""
    prompt = tokenizer(render_prompt(tokenizer, conversation), add_special_tokens=False, return_tensors="pt")
    alone = model.generate(**prompt, **decoding.generate_kwargs(), pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(alone[0, prompt["input_ids"].shape[1] :], skip_special_tokens=True).strip()


def test_waiting_prompts_join_the_batch_as_rows_finish_and_every_row_gets_what_generate_gives_it_alone(smollm2_dir):
    """Decoding batch by batch left a batch's stragglers decoding alone (66 of 157 Stage 2 steps ran with 1-3 rows);
    now the next prompts join the rows still going, and each row's greedy text is still `generate`'s for it alone."""
    from reasonapp.models import load_base_model
    from training.generation import Decoding, generate_as_finished

    model, tokenizer = load_base_model(smollm2_dir, device="cpu")  # float32: exact to 1e-4
    texts = ["i feel fine", "a much longer text about being rather scared of the dark at night", "ok", "im so angry",
             "i miss him", "what a lovely surprise", "i am terrified of tomorrow's exam and cannot sleep", "meh"]
    conversations = [get_format("qra").messages(text, EMOTIONS) for text in texts]
    decoding = Decoding(max_new_tokens=24)
    batched, calls = generate_counting_forwards(model, tokenizer, conversations, decoding, batch_size=3)
    prompts = [i for i, (rows, tokens) in enumerate(calls) if tokens > 1 and i > 0]  # after the shared prefix's forward
    joined = [i for i in prompts if calls[i - 1][1] == 1 and i + 1 < len(calls) and calls[i + 1][0] > calls[i][0]]
    assert joined, calls  # prompts started while other rows were decoding, and decoded on beside them
    assert max(rows for rows, tokens in calls if tokens == 1) <= 3

    assert batched == [_alone(model, tokenizer, c, decoding) for c in conversations]
    as_finished = dict(generate_as_finished(model, tokenizer, conversations, decoding, batch_size=3))
    assert [as_finished[i] for i in range(len(texts))] == batched


def test_rows_joining_a_batch_with_a_shorter_or_longer_cache_get_their_own_greedy_tokens(smollm2_dir):
    """Joining lays two caches side by side: whichever is shorter gets masked columns after the shared prefix, and
    columns no row attends to any more are dropped. Shortest prompts first, so a later group is the longer one."""
    from reasonapp.models import load_base_model
    from training.generation import Decoding, _decode_continuously, _prefix_for, _stop_ids

    model, tokenizer = load_base_model(smollm2_dir, device="cpu")
    long_text = "a much longer text about being rather scared of the dark at night, alone in a house that creaks, " * 3
    texts = ["ok", "meh", "i feel fine", "im so angry about the delay", long_text]
    conversations = [get_format("qra").messages(text, EMOTIONS) for text in texts]
    encoded = tokenizer([render_prompt(tokenizer, c) for c in conversations], add_special_tokens=False)["input_ids"]
    prefix = _prefix_for(encoded, None)
    decoding = Decoding(max_new_tokens=12)
    suffixes = [ids[len(prefix.ids) :] for ids in encoded]
    tokens = dict(_decode_continuously(model, prefix, suffixes, tokenizer.pad_token_id, _stop_ids(model, tokenizer), 12, batch_size=2, refill_free=1))
    got = [tokenizer.decode(tokens[i], skip_special_tokens=True).strip() for i in range(len(texts))]
    assert got == [_alone(model, tokenizer, c, decoding) for c in conversations]


def test_a_model_whose_own_generation_config_changes_greedy_search_is_decoded_by_generate(smollm2_dir):
    """The row-dropping loop takes the argmax; a model whose generation config adds to greedy search (a repetition
    penalty, as some instruct models ship with) gets transformers' `generate`, penalty and all, as before; so does the
    streamed Q->RA view."""
    from reasonapp.models import load_base_model
    from training.generation import Decoding, generate, stream

    model, tokenizer = load_base_model(smollm2_dir, device="cpu")  # float32: exact to 1e-4
    conversations = [get_format("qra").messages(text, EMOTIONS) for text in ("i feel so alone tonight", "what a lovely surprise")]
    decoding = Decoding(max_new_tokens=24)
    argmax = generate(model, tokenizer, conversations, decoding)
    model.generation_config.repetition_penalty = 1.8
    penalized = generate(model, tokenizer, conversations, decoding)
    assert penalized != argmax
    for conversation, text in zip(conversations, penalized, strict=True):
        prompt = tokenizer(render_prompt(tokenizer, conversation), add_special_tokens=False, return_tensors="pt")
        alone = model.generate(**prompt, **decoding.generate_kwargs(), pad_token_id=tokenizer.pad_token_id)
        assert text == tokenizer.decode(alone[0, prompt["input_ids"].shape[1] :], skip_special_tokens=True).strip()
        assert list(stream(model, tokenizer, conversation, decoding))[-1] == text  # the live view too


def test_every_fast_path_hands_the_model_its_kv_cache_by_the_current_name(smollm2_dir):
    """transformers 5 renamed `past_key_values` to `cache` and removes the old name in 5.40: scoring, streaming and
    batched generation from the kept prefix must not lean on it (each use warned on every CLI command)."""
    import warnings

    from reasonapp.models import load_base_model
    from training.generation import Decoding, generate, score_labels, stream

    model, tokenizer = load_base_model(smollm2_dir, device="cpu")
    conversations = [get_format("qra").messages(text, EMOTIONS) for text in ("i feel fine", "im so angry")]
    prefix = _prefix_of(tokenizer, get_format("qra"), EMOTIONS)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        score_labels(model, tokenizer, conversations, EMOTIONS.names, batch_size=2, prefix=prefix)
        list(stream(model, tokenizer, conversations[0], Decoding(max_new_tokens=4), prefix))
        generate(model, tokenizer, conversations, Decoding(max_new_tokens=4), batch_size=2)
    assert [str(w.message) for w in caught if "past_key_values" in str(w.message)] == []


def test_a_progress_bar_shows_nothing_until_its_total_is_known_then_rows_of_it(capsys, monkeypatch):
    """Evaluation printed "qa scoring: 0row" before its bar knew how many rows there were."""
    from training.generation import progress_bar

    monkeypatch.setenv("TQDM_MININTERVAL", "0")
    update = progress_bar("qa scoring")
    assert capsys.readouterr().err == ""
    update(0, 4)
    update(2, 4)
    update(4, 4)
    shown = capsys.readouterr().err
    assert "qa scoring:" in shown and "2/4" in shown and "4/4" in shown
    assert re.search(r"(?<![\d.])0row", shown) is None  # no bare "0row" count (a rate like "1268.60row/s" is fine)


def test_ngram_drafts_guess_what_followed_the_last_tokens_in_the_sequence_then_in_earlier_outputs():
    from training.generation import NgramDrafts

    drafts = NgramDrafts(ngram=3, draft_tokens=4)
    session = drafts.session([1, 2, 3, 4, 5, 9, 2, 3])
    assert session.guess(10) == [4, 5, 9, 2]  # after the last "2 3": what followed its earlier occurrence
    assert session.guess(2) == [4, 5]  # never more than asked
    session.extend([7])
    assert session.guess(10) == []  # "3 7" and "2 3 7" never came before
    drafts.learn([3, 7, 8, 8, 6])
    assert session.guess(10) == [8, 8, 6]  # from the earlier output
    session.extend([4, 5])
    assert session.guess(10) == [9, 2, 3, 7]  # the sequence's own occurrence first
    assert NgramDrafts().session([5, 6]).guess(10) == []  # nothing came before


def test_guessed_tokens_leave_the_greedy_text_as_it_is_and_take_fewer_forward_passes(smollm2_dir):
    """With drafts, one forward checks the guessed tokens and keeps those greedy search would choose: the same text
    as plain streaming and as `generate`, for right guesses (from the prompt and from an earlier output) and wrong
    ones (an earlier output that shares n-grams and then goes elsewhere)."""
    from reasonapp.models import load_base_model
    from training.generation import Decoding, NgramDrafts, generate, stream

    model, tokenizer = load_base_model(smollm2_dir, device="cpu")
    forwards = []
    model.register_forward_hook(lambda module, args, kwargs, out: forwards.append(kwargs["input_ids"].shape[1]), with_kwargs=True)
    decoding = Decoding(max_new_tokens=40)
    copy = [{"role": "user", "content": "Repeat this sentence exactly, twice: the quick brown fox jumps over the lazy dog near the river bank."}]
    other = [{"role": "user", "content": "Write one sentence about a brown dog that jumps over a fence."}]

    drafts = NgramDrafts()
    for messages in (copy, copy, other, copy):
        forwards.clear()
        plain = list(stream(model, tokenizer, messages, decoding))
        plain_forwards = len(forwards)
        forwards.clear()
        drafted = list(stream(model, tokenizer, messages, decoding, drafts=drafts))
        drafted_forwards = list(forwards)
        assert drafted[-1] == plain[-1] == generate(model, tokenizer, [messages], decoding)[0]
        assert len(drafted_forwards) <= plain_forwards
        if messages is copy:  # the copied words came as guesses, several checked by one forward
            assert len(drafted_forwards) < plain_forwards * 0.7 and max(drafted_forwards[1:]) > 2, (drafted_forwards, plain_forwards)
