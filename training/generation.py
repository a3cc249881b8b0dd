"""Batched generation and label scoring with transformers: used by Stage 2, evaluation and the app.

Prompts are sorted by length before batching (less padding), padded on the left, and decoded greedily
unless sampling is asked for. Label scoring reuses the shared instruction prefix's KV cache and scores
every label of a batch in one forward pass: one pass per batch instead of one per (row, label).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from reasonapp.errors import ConfigError
from reasonapp.prompts import Messages, render_completion, render_prompt

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]  # (rows done, rows total)


def progress_bar(label: str, unit: str = "row") -> ProgressCallback:
    """A tqdm bar as a ProgressCallback: rows done of the total, rows/s and ETA, on stderr. It appears at the first
    report, when the total is known (not as "0row" before it), with its clock started when it was made."""
    import time

    from tqdm.auto import tqdm

    started, bar = time.time(), None

    def update(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc=label, unit=unit)
            bar.start_t = bar.last_print_t = started  # rates and ETA count from when the work began
        bar.total = total
        bar.n = done
        bar.refresh()
        if done >= total:
            bar.close()

    return update


@dataclass(frozen=True)
class Decoding:
    """How to decode; recorded with every generated reasoning."""

    max_new_tokens: int = 96
    do_sample: bool = False
    temperature: float = 0.7
    top_p: float = 0.95

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if self.do_sample and not (self.temperature > 0 and 0 < self.top_p <= 1):
            raise ConfigError(f"sampling needs temperature > 0 and 0 < top_p <= 1, got {self.temperature} and {self.top_p}")

    def generate_kwargs(self) -> dict:
        if not self.do_sample:
            return {"max_new_tokens": self.max_new_tokens, "do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        return {"max_new_tokens": self.max_new_tokens, "do_sample": True, "temperature": self.temperature, "top_p": self.top_p}


def _batches_by_length(lengths: Sequence[int], batch_size: int) -> Iterator[list[int]]:
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def _device(model):
    return next(model.parameters()).device


def generate(
    model,
    tokenizer,
    conversations: Sequence[Messages],
    decoding: Decoding = Decoding(),
    batch_size: int = 16,
    progress: ProgressCallback | None = None,
    prefix: PrefixCache | None = None,
    share_prefix: bool = True,
) -> list[str]:
    """Generate one completion per conversation, returned in input order (special tokens removed).

    The prompts' shared prefix (chat template and instruction; `prefix`, or found among the prompts) is
    computed once: each batch starts from a copy of its KV cache, with the padding placed between the
    prefix and each row's own tokens, where the attention mask hides it. Same greedy outputs as
    `share_prefix=False` (tested); Stage 2 on the real R-Gen: 6.3 rows/s against 5.2. Greedy decoding keeps one
    batch of up to `batch_size` rows going, rows leaving it as they finish and waiting prompts joining it
    (`generate_as_finished`); sampling goes through transformers' `generate` batch by batch, and so does greedy
    search for a model whose own generation config changes it (a repetition penalty, banned words, beams).
    """
    finished = generate_as_finished(model, tokenizer, conversations, decoding, batch_size, prefix, share_prefix)
    return in_input_order(finished, len(conversations), batch_size, progress)


def in_input_order(finished: Iterable[tuple[int, str]], count: int, every: int, progress: ProgressCallback | None = None) -> list[str]:
    """The texts of (index, text) pairs that arrive in any order, as a list in index order; progress every `every` rows."""
    texts = [""] * count
    for done, (index, text) in enumerate(finished, 1):
        texts[index] = text
        if progress and (done % every == 0 or done == count):
            progress(done, count)
    return texts


def generate_as_finished(
    model,
    tokenizer,
    conversations: Sequence[Messages],
    decoding: Decoding = Decoding(),
    batch_size: int = 16,
    prefix: PrefixCache | None = None,
    share_prefix: bool = True,
) -> Iterator[tuple[int, str]]:
    """`generate`'s completions as (conversation index, text), each as soon as it is finished, in no fixed order."""
    import torch

    prompts = [render_prompt(tokenizer, messages) for messages in conversations]
    encoded = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    prefix = _prefix_for(encoded, prefix, share_prefix)
    p = len(prefix.ids)
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]), reverse=True)  # longest first: less padding
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def text(tokens) -> str:
        return tokenizer.decode(tokens, skip_special_tokens=True).strip()

    if not decoding.do_sample and _greedy_is_argmax(model):
        suffixes = [encoded[row][p:] for row in order]
        for i, tokens in _decode_continuously(model, prefix, suffixes, pad, _stop_ids(model, tokenizer), decoding.max_new_tokens, batch_size):
            yield order[i], text(tokens)  # outside inference mode: the caller's code runs between these
        return
    tokenizer.padding_side = "left"
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        inputs = tokenizer.pad({"input_ids": [encoded[i][p:] for i in batch]}, return_tensors="pt").to(_device(model))
        if p:  # [prefix][padding][row's tokens]: positions follow the mask, so the prefix cache fits every row
            rows = len(batch)
            shared_ids = torch.tensor(prefix.ids, device=inputs["input_ids"].device).expand(rows, p)
            inputs["input_ids"] = torch.cat([shared_ids, inputs["input_ids"]], dim=1)
            inputs["attention_mask"] = torch.cat([torch.ones_like(shared_ids), inputs["attention_mask"]], dim=1)
            inputs["cache"] = prefix.expanded(model, rows)
        with torch.inference_mode():
            generated = model.generate(**inputs, **decoding.generate_kwargs(), pad_token_id=tokenizer.pad_token_id)
        for row, tokens in zip(batch, generated[:, inputs["input_ids"].shape[1] :].tolist(), strict=True):
            yield row, text(tokens)


def _stop_ids(model, tokenizer) -> set[int]:
    """The tokens that end a completion: the model's end-of-sequence tokens and the tokenizer's."""
    stop_ids = model.generation_config.eos_token_id
    return set(stop_ids if isinstance(stop_ids, list) else [stop_ids]) | {tokenizer.eos_token_id}


# generation-config settings that make greedy search more than the argmax, with the value at which they do nothing
_NEUTRAL_FOR_GREEDY = {
    "repetition_penalty": 1.0, "no_repeat_ngram_size": 0, "min_length": 0, "min_new_tokens": 0, "num_beams": 1,
    "guidance_scale": 1.0, "bad_words_ids": None, "suppress_tokens": None, "begin_suppress_tokens": None,
    "sequence_bias": None, "forced_bos_token_id": None, "forced_eos_token_id": None,
    "exponential_decay_length_penalty": None, "penalty_alpha": None, "dola_layers": None,
}


def _greedy_is_argmax(model) -> bool:
    """Whether the model's own generation config leaves greedy search the plain argmax that `_decode_continuously` takes
    (SmolLM2's does; one shipped with a repetition penalty does not)."""
    config = model.generation_config
    return all(getattr(config, name, None) in (None, neutral) for name, neutral in _NEUTRAL_FOR_GREEDY.items())


def _decode_continuously(
    model,
    prefix: PrefixCache,
    suffixes: Sequence[Sequence[int]],
    pad_id: int,
    stop_ids: set[int],
    max_new_tokens: int,
    batch_size: int,
    refill_free: int | None = None,
) -> Iterator[tuple[int, list[int]]]:
    """Greedy decoding of every prompt (`prefix` + a suffix each) through one batch of up to `batch_size` rows:
    each row leaves as soon as it has finished, and once `refill_free` places (default half the batch) are free
    the next waiting prompts join it. Yields (suffix index, generated tokens without the stop token) as rows finish.

    Decoding batch by batch kept computing the stragglers of a batch alone: in Stage 2 (reasonings of ~14 tokens,
    up to 64) 66 of 157 decoding steps ran with 1-3 rows, each costing most of a full step, as the weights are
    read once a step whatever the rows. Joining rows keep every step near full. A joining group's prompts run in
    one forward from the prefix's cache, then its cache is laid beside the batch's: the shorter one gets masked
    columns between the prefix and its rows' tokens, where padding already sits, and columns no row attends to any
    more are dropped. Positions follow each row's own tokens, so every row gets the greedy tokens it gets alone
    (tested against transformers' `generate`). A cache whose layers are not plain dynamic ones (sliding windows,
    quantized) is decoded one batch at a time instead, rows still leaving as they finish.
    """
    import torch
    from transformers.cache_utils import DynamicLayer

    device = _device(model)
    p = len(prefix.ids)
    refill_free = max(1, batch_size // 2) if refill_free is None else refill_free
    waiting = list(range(len(suffixes)))[::-1]  # popped from the end: the first suffix first
    cache, mask, feed, positions, rows, tokens = None, None, None, None, [], {}
    joinable = True
    while waiting or rows:
        free, finished = batch_size - len(rows), []
        with torch.inference_mode():
            if waiting and (not rows or (joinable and free >= min(refill_free, len(waiting)))):
                joining = [waiting.pop() for _ in range(min(free, len(waiting)))]
                j_cache, j_mask, j_feed, j_positions = _start_rows(model, prefix, [suffixes[i] for i in joining], pad_id, device)
                joinable = all(type(layer) is DynamicLayer for layer in j_cache.layers)
                if rows:
                    cache, mask = _lay_beside(cache, mask, j_cache, j_mask, p)
                    feed, positions = torch.cat([feed, j_feed]), torch.cat([positions, j_positions])
                else:
                    cache, mask, feed, positions = j_cache, j_mask, j_feed, j_positions
                first_new, rows = len(rows), rows + joining  # the rows already going took their tokens last step
                tokens.update((i, []) for i in joining)
            else:
                first_new = 0
                mask = torch.cat([mask, mask.new_ones((len(rows), 1))], dim=1)
                out = model(input_ids=feed, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True, logits_to_keep=1)
                cache, feed, positions = out.cache, out.logits[:, -1:].argmax(-1), positions + 1
            going = list(range(first_new))
            for k, token in enumerate(feed[first_new:, 0].tolist(), first_new):
                i = rows[k]
                if token not in stop_ids:
                    tokens[i].append(token)
                if token in stop_ids or len(tokens[i]) >= max_new_tokens:
                    finished.append((i, tokens.pop(i)))
                else:
                    going.append(k)
            if len(going) < len(rows):  # finished rows leave the batch, their cache with them
                keep = torch.tensor(going, dtype=torch.long, device=device)
                if going:
                    cache.batch_select_indices(keep)
                mask, feed, positions = mask[keep], feed[keep], positions[keep]
                rows = [rows[k] for k in going]
        yield from finished


def _start_rows(model, prefix: PrefixCache, suffixes: Sequence[Sequence[int]], pad_id: int, device):
    """The prompts' forward from the prefix's cache, laid out [prefix][padding][suffix]: (cache, mask over its columns,
    each row's first generated token [rows, 1], that token's position [rows, 1])."""
    import torch

    p, width, rows = len(prefix.ids), max(len(s) for s in suffixes), len(suffixes)
    ids = torch.full((rows, width), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros((rows, p + width), dtype=torch.long, device=device)
    mask[:, :p] = 1
    for r, suffix in enumerate(suffixes):  # left-padded after the prefix: every row's last token in the last column
        ids[r, width - len(suffix) :] = torch.tensor(suffix, dtype=torch.long, device=device)
        mask[r, p + width - len(suffix) :] = 1
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)  # as generate derives them from the mask
    cache = prefix.expanded(model, rows) if p else None
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions[:, p:], cache=cache, use_cache=True, logits_to_keep=1)
    return out.cache, mask, out.logits[:, -1:].argmax(-1), positions[:, -1:] + 1


def _lay_beside(cache, mask, other, other_mask, p: int):
    """Two batches' dynamic caches as one: columns no row attends to dropped, the shorter widened with masked columns
    after the first `p` (the shared prefix, where every row attends), rows of `other` after those of `cache`."""
    import torch

    def drop_unused(cache, mask):
        used = mask.bool().any(0)
        if bool(used.all()):
            return mask
        columns = used.nonzero().squeeze(1)
        for layer in cache.layers:
            layer.keys, layer.values = layer.keys.index_select(2, columns), layer.values.index_select(2, columns)
        return mask[:, columns]

    def widen(tensor, dim: int, width: int):
        if tensor.shape[dim] >= width:
            return tensor
        shape = list(tensor.shape)
        shape[dim] = width - tensor.shape[dim]
        return torch.cat([tensor.narrow(dim, 0, p), tensor.new_zeros(shape), tensor.narrow(dim, p, tensor.shape[dim] - p)], dim=dim)

    mask, other_mask = drop_unused(cache, mask), drop_unused(other, other_mask)
    width = max(mask.shape[1], other_mask.shape[1])
    for layer, other_layer in zip(cache.layers, other.layers, strict=True):
        pair = []
        for a, b in ((layer.keys, other_layer.keys), (layer.values, other_layer.values)):
            pair.append(torch.cat([widen(a, 2, width), widen(b, 2, width)], dim=0))
        layer.keys, layer.values = pair
    return cache, torch.cat([widen(mask, 1, width), widen(other_mask, 1, width)], dim=0)


class NgramDrafts:
    """Guesses of the next tokens for greedy decoding, from what came before (prompt lookup decoding, widened to
    the run's earlier outputs): the tokens that followed the last occurrence of the sequence's final 3 (else 2)
    tokens, in the sequence itself or in an earlier output.

    A small R-Gen's reasonings are formulaic ("The text expresses a strong emotion of joy, specifically, ..."), so
    over 24 Q->RA outputs of the demo run a greedy step would take 2.4 tokens on average with these guesses (1.2
    from the prompt alone). One forward checks them all: at one row the products read the weights once whatever
    the few tokens, so an accepted guess is nearly free. Only guesses the model itself would choose are kept, so
    the text is greedy search's: the logits of a several-token forward equal the one-token forward's up to float
    rounding, which could only flip an exact near-tie (the same texts in every test and measurement so far).
    """

    def __init__(self, ngram: int = 3, draft_tokens: int = 8, keep_outputs: int = 64):
        self.ngram, self.draft_tokens, self.keep_outputs = ngram, draft_tokens, keep_outputs
        self._outputs: list[list[int]] = []
        self._index: dict[tuple[int, ...], tuple[list[int], int]] = {}  # n-gram -> (output, where it ends), latest

    def learn(self, tokens: Sequence[int]) -> None:
        """Remember a finished output (its generated tokens), keeping the latest `keep_outputs`."""
        self._outputs = [*self._outputs[-(self.keep_outputs - 1) :], list(tokens)] if self.keep_outputs > 0 else []
        self._index = {}
        for output in self._outputs:  # oldest first: a later occurrence replaces an earlier one
            _index_ngrams(self._index, output, self.ngram, 0)

    def session(self, prompt_ids: Sequence[int]) -> DraftSession:
        return DraftSession(self, list(prompt_ids))


class DraftSession:
    """One decoding's view of `NgramDrafts`: the sequence so far (prompt and generated), indexed as it grows."""

    def __init__(self, drafts: NgramDrafts, sequence: list[int]):
        self.drafts, self.sequence, self._index = drafts, sequence, {}
        _index_ngrams(self._index, sequence, drafts.ngram, 0)

    def extend(self, tokens: Sequence[int]) -> None:
        start = len(self.sequence)
        self.sequence.extend(tokens)
        _index_ngrams(self._index, self.sequence, self.drafts.ngram, start - 1)

    def guess(self, limit: int) -> list[int]:
        """Up to `limit` tokens that followed the sequence's last n-gram, this sequence's own occurrences first."""
        limit = min(limit, self.drafts.draft_tokens)
        for n in range(self.drafts.ngram, 1, -1):
            tail = tuple(self.sequence[-n:])
            for index in (self._index, self.drafts._index):
                if tail in index:
                    source, end = index[tail]
                    return source[end : end + limit]
        return []


def _index_ngrams(index: dict, tokens: list[int], longest: int, first_end: int) -> None:
    """Record where each n-gram of `tokens` (n = 2..longest) ending at `first_end` or later ends, the latest
    occurrence winning; only those a token follows (a guess needs one)."""
    for end in range(max(first_end, 0), len(tokens) - 1):  # `end`: the n-gram's last token
        for n in range(2, min(longest, end + 1) + 1):
            index[tuple(tokens[end + 1 - n : end + 1])] = (tokens, end + 1)


def stream(
    model, tokenizer, messages: Messages, decoding: Decoding = Decoding(), prefix: PrefixCache | None = None,
    drafts: NgramDrafts | None = None,
) -> Iterator[str]:
    """Yield the text generated so far, token by token (for the app's live Q->RA view).

    With a `prefix` that the prompt starts with, decoding starts from a copy of its KV cache and only
    the rest of the prompt is computed before the first token. With `drafts`, each step also checks the tokens they
    guess come next and keeps those the model agrees with (several tokens a step; the same text), and the output is
    learnt for later calls. Greedy decoding runs in the caller's thread; sampling, and greedy search that the model's
    own generation config changes (a repetition penalty), go through `generate` on a helper thread with a streamer.
    """
    if decoding.do_sample or not _greedy_is_argmax(model):
        yield from _stream_on_thread(model, tokenizer, messages, decoding)
        return
    import torch

    device = _device(model)
    prompt_ids = tokenizer(render_prompt(tokenizer, messages), add_special_tokens=False)["input_ids"]
    session = drafts.session(prompt_ids) if drafts is not None else None
    cache = None
    if prefix is not None and prefix.covers([prompt_ids]):
        cache = prefix.expanded(model, 1)
        prompt_ids = prompt_ids[len(prefix.ids) :]
    stop_ids = _stop_ids(model, tokenizer)
    feed = prompt_ids
    generated: list[int] = []
    shown = ""
    finished = False
    with torch.inference_mode():
        while not finished and len(generated) < decoding.max_new_tokens:
            guessed = session.guess(decoding.max_new_tokens - len(generated) - 1) if session is not None and generated else []
            out = model(input_ids=torch.tensor([feed + guessed], device=device), cache=cache, use_cache=True, logits_to_keep=len(guessed) + 1)
            cache = out.cache
            chosen = out.logits[0].argmax(-1).tolist()  # the model's token after the fed token and after each guess
            taken = []
            for position, token in enumerate(chosen):
                if token in stop_ids:
                    finished = True
                    break
                taken.append(token)
                if position == len(guessed) or guessed[position] != token:
                    break  # the guesses after a wrong one were fed on a wrong premise
            if len(guessed) + 1 - len(taken) > 0 and not finished:
                cache.crop(-(len(guessed) + 1 - len(taken)))  # keep the fed token and the guesses that were right
            generated.extend(taken)
            if session is not None:
                session.extend(taken)
            feed = taken[-1:]
            text = tokenizer.decode(generated, skip_special_tokens=True)
            if text != shown and not text.endswith("\ufffd"):  # never show half a multi-byte character
                shown = text
                yield shown
    if drafts is not None:
        drafts.learn(generated)
    final = tokenizer.decode(generated, skip_special_tokens=True)
    if final != shown:
        yield final


def _stream_on_thread(model, tokenizer, messages: Messages, decoding: Decoding) -> Iterator[str]:
    """Sampled streaming through `generate`. Slower per token than the greedy loop: on this CPU a
    second thread running torch makes OpenMP stop spin-waiting (more threads than cores), ~50 vs ~30 ms."""
    from threading import Event, Thread

    import torch
    from transformers import StoppingCriteriaList, TextIteratorStreamer

    prompt = render_prompt(tokenizer, messages)
    inputs = tokenizer(prompt, add_special_tokens=False, return_tensors="pt").to(_device(model))
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    stop = Event()  # set when the reader goes away, so the generating thread never outlives it

    def stop_requested(input_ids, scores, **kwargs):
        return torch.full((input_ids.shape[0],), stop.is_set(), dtype=torch.bool, device=input_ids.device)

    def run():
        with torch.inference_mode():
            model.generate(
                **inputs, **decoding.generate_kwargs(), streamer=streamer, pad_token_id=tokenizer.pad_token_id,
                stopping_criteria=StoppingCriteriaList([stop_requested]),
            )

    thread = Thread(target=run, daemon=True)
    thread.start()
    text = ""
    try:
        for piece in streamer:
            text += piece
            yield text
    finally:
        stop.set()
        thread.join()


def label_token_ids(tokenizer, conversation: Messages, label_names: Sequence[str]) -> list[list[int]]:
    """The tokens of each label's assistant turn, end-of-turn marker included (so 'joy' is not 'joyful')."""
    ids = []
    for label in label_names:
        completion = render_completion(tokenizer, conversation, label)
        eos = tokenizer.eos_token or ""
        completion = completion[: completion.index(eos) + len(eos)] if eos and eos in completion else completion
        ids.append(tokenizer(completion, add_special_tokens=False)["input_ids"])
    return ids


def common_prefix(sequences: Sequence[Sequence[int]]) -> list[int]:
    """The longest token prefix that every sequence starts with."""
    if not sequences:
        return []
    first = sequences[0]
    length = min(len(seq) for seq in sequences)
    for i in range(length):
        if any(seq[i] != first[i] for seq in sequences):
            return list(first[:i])
    return list(first[:length])


class PrefixCache:
    """The KV cache of a shared prompt prefix (chat template + instruction), computed once and reused.

    Every Q->A prompt starts with the same ~50 tokens; only the text and the end of the template differ.
    One PrefixCache belongs to one model state (one adapter): the caller keeps one per classifier.
    """

    def __init__(self, prefix_ids: Sequence[int] = ()):
        self.ids = list(prefix_ids)
        self._cache = None

    def covers(self, encoded: Sequence[Sequence[int]]) -> bool:
        """Every prompt starts with the prefix and has at least one token after it."""
        n = len(self.ids)
        return n > 0 and all(len(ids) > n and list(ids[:n]) == self.ids for ids in encoded)

    def expanded(self, model, rows: int):
        """A fresh cache holding the prefix for `rows` rows (the forward pass appends to it).

        A dynamic cache's layers replace their tensors when they grow or repeat (torch.cat,
        repeat_interleave) and never write into them, so the fork shares the kept tensors: a deep
        copy took ~5 ms of a ~85 ms Q->A request.
        """
        import copy

        import torch
        from transformers.cache_utils import DynamicLayer

        if self._cache is None:
            with torch.inference_mode():
                ids = torch.tensor([self.ids], device=_device(model))
                self._cache = model(input_ids=ids, use_cache=True, logits_to_keep=1).cache  # no logits wanted
        if all(type(layer) is DynamicLayer for layer in self._cache.layers):
            cache = copy.copy(self._cache)
            cache.layers = [copy.copy(layer) for layer in self._cache.layers]
        else:  # sliding-window, quantized or static layers keep other state or write in place
            cache = copy.deepcopy(self._cache)
        if rows > 1:
            cache.batch_repeat_interleave(rows)
        return cache


def _prefix_for(encoded: Sequence[Sequence[int]], prefix: PrefixCache | None, share: bool = True) -> PrefixCache:
    """The given prefix if every prompt starts with it, else the prompts' own common prefix (kept for this call only);
    at least one token of each prompt stays outside it."""
    if prefix is not None and prefix.covers(encoded):
        return prefix
    shared = common_prefix(encoded) if share and len(encoded) > 1 else []
    return PrefixCache(shared[: min(len(ids) for ids in encoded) - 1] if encoded else [])


def _label_tree(labels: Sequence[Sequence[int]]) -> tuple[list[int], list[int], list[int]]:
    """Every label's tokens but its last, laid end to end: (tokens, branch of each, depth of each)."""
    tokens, branch, depth = [], [], []
    for k, ids in enumerate(labels):
        for j, token in enumerate(ids[:-1]):
            tokens.append(token)
            branch.append(k)
            depth.append(j)
    return tokens, branch, depth


def score_labels(
    model,
    tokenizer,
    conversations: Sequence[Messages],
    label_names: Sequence[str],
    batch_size: int = 16,
    progress: ProgressCallback | None = None,
    prefix: PrefixCache | None = None,
):
    """Log-probability of each label's completion after each prompt: a float array [rows, labels].

    One forward pass per batch scores every label: each row holds its text (after the shared prefix,
    whose KV cache is computed once) followed by all labels' tokens side by side, and an attention mask
    lets each label's tokens see the text and their own earlier tokens only. The output layer runs only
    at the positions whose next token is scored. Equal to one full forward per (row, label); see
    `score_labels_plainly`, which the tests compare it with.
    """
    import numpy as np
    import torch

    if not conversations:
        return np.zeros((0, len(label_names)), dtype=np.float64)
    device = _device(model)
    labels = label_token_ids(tokenizer, conversations[0], label_names)
    tree_tokens, tree_branch, tree_depth = _label_tree(labels)
    n_tree = len(tree_tokens)

    prompts = [render_prompt(tokenizer, messages) for messages in conversations]
    encoded = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    prefix = _prefix_for(encoded, prefix)
    p = len(prefix.ids)

    # label k's token j sits at tree index offset[k] + j; it predicts token j + 1 of label k
    offsets = [0]
    for ids in labels[:-1]:
        offsets.append(offsets[-1] + len(ids) - 1)
    tree_ids = torch.tensor(tree_tokens, dtype=torch.long, device=device)
    tree_depth_t = torch.tensor(tree_depth, dtype=torch.long, device=device)
    branch = torch.tensor(tree_branch, dtype=torch.long, device=device)
    same_branch = (branch[:, None] == branch[None, :]) & (tree_depth_t[None, :] <= tree_depth_t[:, None])

    scores = np.zeros((len(prompts), len(labels)), dtype=np.float64)
    done = 0
    for batch in _batches_by_length([len(ids) for ids in encoded], batch_size):
        rows = len(batch)
        suffixes = [encoded[i][p:] for i in batch]
        lengths = torch.tensor([len(s) for s in suffixes], device=device)
        width = int(lengths.max())
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        suffix_ids = torch.full((rows, width), pad, dtype=torch.long, device=device)
        for r, ids in enumerate(suffixes):  # left-padded: every text ends at column width - 1
            suffix_ids[r, width - len(ids) :] = torch.tensor(ids, device=device)
        input_ids = torch.cat([suffix_ids, tree_ids.expand(rows, n_tree)], dim=1)

        columns = torch.arange(width, device=device)
        real = columns[None, :] >= (width - lengths)[:, None]  # [rows, width]
        suffix_positions = p + (columns[None, :] - (width - lengths)[:, None]).clamp(min=0)
        tree_positions = p + lengths[:, None] + tree_depth_t[None, :]
        position_ids = torch.cat([suffix_positions, tree_positions], dim=1)

        queries = width + n_tree
        mask = torch.zeros((rows, queries, p + queries), dtype=torch.bool, device=device)
        mask[:, :, :p] = True
        causal = columns[:, None] >= columns[None, :]
        mask[:, :width, p : p + width] = causal[None] & real[:, None, :] & real[:, :, None]
        mask[:, width:, p : p + width] = real[:, None, :]
        mask[:, width:, p + width :] = same_branch
        keep = torch.arange(width - 1, width + n_tree, device=device)  # the last text token, then every tree token
        with torch.inference_mode():
            cache = prefix.expanded(model, rows) if p else None
            out = model(
                input_ids=input_ids,
                attention_mask=mask[:, None],
                position_ids=position_ids,
                cache=cache,
                use_cache=cache is not None,
                logits_to_keep=keep,
            )
            logp = torch.log_softmax(out.logits.float(), -1)  # [rows, 1 + n_tree, vocab]
            batch_scores = torch.zeros((rows, len(labels)), dtype=torch.float64, device=device)
            for k, ids in enumerate(labels):
                total = logp[:, 0, ids[0]].double()
                for j in range(1, len(ids)):
                    total = total + logp[:, 1 + offsets[k] + j - 1, ids[j]].double()
                batch_scores[:, k] = total
        for j, row in enumerate(batch):
            scores[row] = batch_scores[j].cpu().numpy()
        done += rows
        if progress:
            progress(done, len(prompts))
    return scores


def score_labels_plainly(model, tokenizer, conversations: Sequence[Messages], label_names: Sequence[str]):
    """Reference implementation: one full forward per (row, label). Slow; tests check the fast path with it."""
    import numpy as np
    import torch

    labels = label_token_ids(tokenizer, conversations[0], label_names)
    scores = np.zeros((len(conversations), len(labels)))
    for i, messages in enumerate(conversations):
        prompt_ids = tokenizer(render_prompt(tokenizer, messages), add_special_tokens=False)["input_ids"]
        for k, ids in enumerate(labels):
            full = torch.tensor([prompt_ids + ids], device=_device(model))
            with torch.inference_mode():
                logp = torch.log_softmax(model(input_ids=full).logits[0, :-1].float(), -1)
            targets = full[0, 1:]
            scores[i, k] = logp[len(prompt_ids) - 1 :].gather(-1, targets[len(prompt_ids) - 1 :, None]).sum().item()
    return scores
