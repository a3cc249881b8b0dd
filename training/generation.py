"""Batched generation and label scoring with transformers: used by Stage 2, evaluation and the app.

Prompts are sorted by length before batching (less padding), padded on the left, and decoded greedily
unless sampling is asked for. Label scoring runs each prompt once, keeps its KV cache, and scores
every label's completion against it: one prompt pass per row instead of one per (row, label).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from reasonapp.prompts import Messages, render_completion, render_prompt

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]  # (rows done, rows total)


def progress_bar(label: str, unit: str = "row") -> ProgressCallback:
    """A tqdm bar as a ProgressCallback: rows done, rows/s and ETA, on stderr."""
    from tqdm.auto import tqdm

    bar = tqdm(total=None, desc=label, unit=unit)  # the clock starts now, before the first row is done

    def update(done: int, total: int) -> None:
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
) -> list[str]:
    """Generate one completion per conversation, returned in input order (special tokens removed)."""
    import torch

    prompts = [render_prompt(tokenizer, messages) for messages in conversations]
    encoded = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    outputs: list[str] = [""] * len(prompts)
    tokenizer.padding_side = "left"
    done = 0
    for batch in _batches_by_length([len(ids) for ids in encoded], batch_size):
        inputs = tokenizer.pad({"input_ids": [encoded[i] for i in batch]}, return_tensors="pt").to(_device(model))
        with torch.inference_mode():
            generated = model.generate(**inputs, **decoding.generate_kwargs(), pad_token_id=tokenizer.pad_token_id)
        new_tokens = generated[:, inputs["input_ids"].shape[1] :]
        for row, text in zip(batch, tokenizer.batch_decode(new_tokens, skip_special_tokens=True), strict=True):
            outputs[row] = text.strip()
        done += len(batch)
        if progress:
            progress(done, len(prompts))
    return outputs


def stream(model, tokenizer, messages: Messages, decoding: Decoding = Decoding()) -> Iterator[str]:
    """Yield the text generated so far, token by token (for the app's live Q->RA view)."""
    from threading import Thread

    import torch
    from transformers import TextIteratorStreamer

    prompt = render_prompt(tokenizer, messages)
    inputs = tokenizer(prompt, add_special_tokens=False, return_tensors="pt").to(_device(model))
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)

    def run():
        with torch.inference_mode():
            model.generate(**inputs, **decoding.generate_kwargs(), streamer=streamer, pad_token_id=tokenizer.pad_token_id)

    thread = Thread(target=run, daemon=True)
    thread.start()
    text = ""
    for piece in streamer:
        text += piece
        yield text
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


def score_labels(
    model,
    tokenizer,
    conversations: Sequence[Messages],
    label_names: Sequence[str],
    batch_size: int = 16,
    progress: ProgressCallback | None = None,
):
    """Log-probability of each label's completion after each prompt: a float array [rows, labels]."""
    import numpy as np
    import torch

    if not conversations:
        return np.zeros((0, len(label_names)), dtype=np.float64)
    device = _device(model)
    labels = label_token_ids(tokenizer, conversations[0], label_names)
    n_labels, label_len = len(labels), max(len(ids) for ids in labels)
    label_tensor = torch.full((n_labels, label_len), tokenizer.pad_token_id, dtype=torch.long)
    label_mask = torch.zeros((n_labels, label_len), dtype=torch.long)
    for k, ids in enumerate(labels):
        label_tensor[k, : len(ids)] = torch.tensor(ids)
        label_mask[k, : len(ids)] = 1
    label_tensor, label_mask = label_tensor.to(device), label_mask.to(device)

    prompts = [render_prompt(tokenizer, messages) for messages in conversations]
    encoded = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    scores = np.zeros((len(prompts), n_labels), dtype=np.float64)
    tokenizer.padding_side = "left"
    done = 0
    for batch in _batches_by_length([len(ids) for ids in encoded], batch_size):
        inputs = tokenizer.pad({"input_ids": [encoded[i] for i in batch]}, return_tensors="pt").to(device)
        mask = inputs["attention_mask"]
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode():
            prefix = model(input_ids=inputs["input_ids"], attention_mask=mask, position_ids=positions, use_cache=True)
            cache = prefix.past_key_values
            cache.batch_repeat_interleave(n_labels)
            rows = len(batch)
            cont_ids = label_tensor.repeat(rows, 1)
            cont_mask = torch.cat([mask.repeat_interleave(n_labels, 0), label_mask.repeat(rows, 1)], dim=1)
            start = positions[:, -1:].repeat_interleave(n_labels, 0) + 1
            cont_positions = start + torch.arange(label_len, device=device)
            cont = model(input_ids=cont_ids, attention_mask=cont_mask, position_ids=cont_positions, past_key_values=cache)
            first = torch.log_softmax(prefix.logits[:, -1].float(), -1).repeat_interleave(n_labels, 0)
            rest = torch.log_softmax(cont.logits[:, :-1].float(), -1)
            logits = torch.cat([first.unsqueeze(1), rest], dim=1)  # prediction for each label token
            token_logp = logits.gather(-1, cont_ids.unsqueeze(-1)).squeeze(-1) * label_mask.repeat(rows, 1)
            batch_scores = token_logp.sum(-1).view(rows, n_labels).double().cpu().numpy()
        for j, row in enumerate(batch):
            scores[row] = batch_scores[j]
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
