"""`python -m training bench`: speed of each workload on the real model, beside the plain way of doing it.

Every figure comes from real runs' adapters and real data, so output lengths are the ones users see
(an untrained model rambles to the token limit and would flatter tokens/s). Each workload runs our
path and the plain path (transformers `generate` at batch 1; a padded fixed-batch training loop;
one forward per label) in the same process, and reports both and their ratio, as one JSON object.

    python -m training bench --rgen-run R --qa-run A --qra-run B --augmented D [--quick]
    python -m training bench --rgen-run base:HuggingFaceTB/SmolLM2-135M-Instruct --only stage2_endpoint --output docs/bench-stage2-endpoint.json
"""

from __future__ import annotations

import gc
import platform
import resource
import statistics
import time
from pathlib import Path

from reasonapp import data, prompts
from reasonapp.errors import ConfigError, ModelError

RESULT_MARK = "reasonapp-bench-result: "


def _peak_rss_mb() -> float:
    """Peak resident memory of this process (all workloads together)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def in_child(function: str, **arguments) -> dict:
    """Run the workload `function` of this module in a fresh Python process; its figures with that process's peak RSS.

    One process per workload, so that no workload's peak hides another's (and each starts from a clean heap).
    VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec, so a child would report its parent's peak.
    The child's log goes to this process's stderr.
    """
    import json
    import os
    import subprocess
    import sys

    code = (
        "import json,sys;from training import bench;"
        "r=getattr(bench,sys.argv[1])(**json.loads(sys.argv[2]));"
        "s=open('/proc/self/status').read();"
        "r['peak_rss_mb']=round(int(s.split('VmHWM:')[1].split()[0])/1024,1);"
        "print();print(bench.RESULT_MARK+json.dumps(r))"
    )
    from training import PROCESS_ENV

    root = str(Path(__file__).resolve().parents[1])  # a `python -m training` process's environment: what users get
    env = {**PROCESS_ENV, **os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, "-c", code, function, json.dumps(arguments)], stdout=subprocess.PIPE, text=True, env=env)
    lines = [line for line in result.stdout.splitlines() if line.startswith(RESULT_MARK)]
    if result.returncode != 0 or not lines:
        raise ConfigError(f"bench workload {function} failed (exit {result.returncode}); its log is above")
    return json.loads(lines[-1][len(RESULT_MARK) :])


def cpu_model() -> str:
    """The CPU's model name (which BLAS kernels run depends on it: MKL's small products are ~1.5x slower on an AMD
    EPYC than oneDNN's, measured), else the architecture."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            names = [line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")]
    except OSError:
        names = []
    return f"{names[0]} ({platform.machine()})" if names else platform.processor() or platform.machine()


def _new_tokens(tokenizer, texts: list[str]) -> int:
    return sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) + 1 for t in texts)  # +1: end of turn


def _emotion_rows(limit: int, seed: int, split: str = "train"):
    loaded = data.load_classification_dataset(data.DEFAULT_CLASSIFICATION_DATASET)
    rows = data.sample_rows(loaded.splits[split], limit, seed)
    labels = prompts.LabelSpace(tuple(loaded.label_names), loaded.task_description)
    return list(rows["text"]), [loaded.label_names[i] for i in rows["label"]], labels


# ---------------------------------------------------------------------------------------------
# workloads

WORKLOAD_RUNS = {  # the runs each workload reads
    "stage2": ("--rgen-run",),
    "stage2_endpoint": ("--rgen-run",),
    "training": ("--qra-run", "--augmented"),
    "training_memory": ("--qra-run", "--augmented"),
    "predictions": ("--qa-run", "--qra-run"),
    "memory": ("--qa-run", "--qra-run"),
    "compare_pick": ("--qa-run", "--qra-run"),
}


def bench_stage2(rgen_run: str, rows: int, plain_rows: int, batch_size: int) -> dict:
    """Stage 2 augmentation: batched, length-sorted generation from the shared prefix's cache vs `generate` one row at a time."""
    from reasonapp.models import plain_linears
    from training.augment import REASONING_DECODING, generate_reasonings, load_rgen
    from training.generation import generate

    model, tokenizer, _ = load_rgen(rgen_run)
    texts, golds, labels = _emotion_rows(rows, seed=1)
    started = time.perf_counter()
    outputs = generate_reasonings(model, tokenizer, texts, golds, labels, REASONING_DECODING, batch_size)
    fast_s = time.perf_counter() - started
    fast_tokens = _new_tokens(tokenizer, outputs)

    started = time.perf_counter()
    with plain_linears(model):  # the plain way: one row at a time, the whole prompt every time, MKL's matmuls
        plain = [
            generate(model, tokenizer, [prompts.rgen_messages(prompts.rgen_question(text, labels), gold)], REASONING_DECODING, 1, share_prefix=False)[0]
            for text, gold in zip(texts[:plain_rows], golds[:plain_rows], strict=True)
        ]
    plain_s = time.perf_counter() - started
    plain_tokens = _new_tokens(tokenizer, plain)
    fast_rate, plain_rate = fast_tokens / fast_s, plain_tokens / plain_s
    return {
        "workload": "stage2_augmentation",
        "rows": rows,
        "batch_size": batch_size,
        "max_new_tokens": REASONING_DECODING.max_new_tokens,
        "mean_output_tokens": round(fast_tokens / rows, 1),
        "tokens_per_s": round(fast_rate, 1),
        "rows_per_s": round(rows / fast_s, 2),
        "wall_s": round(fast_s, 1),
        "plain": {"method": "batch 1, whole prompt, MKL matmuls", "rows": plain_rows, "tokens_per_s": round(plain_rate, 1), "rows_per_s": round(plain_rows / plain_s, 2)},
        "speedup": round(fast_rate / plain_rate, 2),
        "same_greedy_outputs_on_plain_rows": sum(a == b for a, b in zip(outputs[:plain_rows], plain, strict=True)) / plain_rows,
    }


def bench_stage2_endpoint(rgen_run: str, rows: int, sequential_rows: int, batch_size: int, concurrency: int = 4, threads: int | None = None) -> dict:
    """Stage 2 through llama-cpp-python's OpenAI-compatible server (the endpoint teacher) beside the in-process path,
    on the same rows, greedy, with how often their outputs agree.

    `rgen_run` is a run (its adapter merged into the base GGUF, as the llama.cpp backend serves it) or `base:<model>`
    (the base model's own GGUF, e.g. the bundled SmolLM2). The server runs one request at a time (no parallel slots
    in llama-cpp-python), so `concurrency` requests in flight measure the endpoint path as `augment` drives it,
    and `sequential_rows` of them again one at a time show what queueing costs or saves.
    """
    import difflib

    import torch

    from reasonapp.models import base_gguf_path
    from training.augment import BASE_PREFIX, REASONING_DECODING, generate_reasonings, load_rgen
    from training.teacher import Job, LlamaCppServer, TeacherConfig, run_requests

    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return {"installed": False, "note": "pip install llama-cpp-python (see README) to measure it"}
    if str(rgen_run).startswith(BASE_PREFIX):
        gguf = base_gguf_path(str(rgen_run)[len(BASE_PREFIX) :])
        if gguf is None:
            return {"installed": True, "not_measured": f"{rgen_run} has no GGUF file here"}
    else:
        from training.llamacpp import export_gguf

        try:
            gguf = export_gguf(rgen_run)
        except ModelError as error:
            return {"installed": True, "not_measured": str(error)}

    model, tokenizer, _ = load_rgen(rgen_run)
    texts, golds, labels = _emotion_rows(rows, seed=1)
    started = time.perf_counter()
    in_process = generate_reasonings(model, tokenizer, texts, golds, labels, REASONING_DECODING, batch_size)
    in_process_s = time.perf_counter() - started
    del model
    gc.collect()

    conversations = [prompts.stage2_messages(text, gold, labels) for text, gold in zip(texts, golds, strict=True)]
    threads = threads or torch.get_num_threads()
    with LlamaCppServer(gguf, context=2048, threads=threads) as server:

        def timed(count: int, in_flight: int) -> tuple[list[str], float]:
            # llama.cpp's own sampling defaults (repeat_penalty 1.1) would change greedy text: the in-process path has none
            config = TeacherConfig(teacher_url=server.base_url, teacher_model="stage2", concurrency=in_flight, extra_body={"repeat_penalty": 1.0})
            outputs: dict[int, str] = {}
            jobs = (Job(i, conversations[i], texts[i], golds[i]) for i in range(count))
            begun = time.perf_counter()
            run_requests(config, jobs, REASONING_DECODING, lambda outcome: outputs.__setitem__(outcome.key, outcome.reasoning or ""))
            return [outputs[i] for i in range(count)], time.perf_counter() - begun

        timed(2, 1)  # warm-up: the first request pays for loading the weights into the page cache
        served, served_s = timed(rows, concurrency)
        _, sequential_s = timed(sequential_rows, 1)
    pairs = list(zip(served, in_process, strict=True))
    return {
        "workload": "stage2_endpoint",
        "rows": rows,
        "gguf": Path(gguf).name,
        "server": f"llama_cpp.server (llama-cpp-python {llama_cpp.__version__}), {threads} thread{'s' if threads > 1 else ''}, one request at a time",
        "max_new_tokens": REASONING_DECODING.max_new_tokens,
        "in_process": {
            "method": f"transformers, batch {batch_size}, float32",
            "rows_per_s": round(rows / in_process_s, 2),
            "tokens_per_s": round(_new_tokens(tokenizer, in_process) / in_process_s, 1),
            "mean_output_tokens": round(_new_tokens(tokenizer, in_process) / rows, 1),
        },
        "endpoint": {
            "concurrency": concurrency,
            "rows_per_s": round(rows / served_s, 2),
            "tokens_per_s": round(_new_tokens(tokenizer, served) / served_s, 1),
            "mean_output_tokens": round(_new_tokens(tokenizer, served) / rows, 1),
            "sequential": {"rows": sequential_rows, "rows_per_s": round(sequential_rows / sequential_s, 2)},
        },
        "endpoint_vs_in_process_rows_per_s": round((rows / served_s) / (rows / in_process_s), 2),
        "agreement": {
            "identical_text": round(sum(a == b for a, b in pairs) / rows, 3),
            "same_first_8_words": round(sum(a.split()[:8] == b.split()[:8] for a, b in pairs) / rows, 3),
            "mean_similarity": round(statistics.mean(difflib.SequenceMatcher(None, a, b).ratio() for a, b in pairs), 3),
        },
        "examples": [{"text": texts[i], "in_process": in_process[i], "endpoint": served[i]} for i in range(3)],
    }


def bench_training(augmented: str, base_model: str, steps: int, batch_size: int, max_length: int) -> dict:
    """LoRA on Q->RA rows: our trainer (length-grouped, completion-only) vs a padded fixed-batch loop."""
    import tempfile

    import torch

    from training.sft import TrainConfig, build_trainer

    rows = steps * batch_size
    with tempfile.TemporaryDirectory() as tmp:
        config = TrainConfig(task="qra", base_model=base_model, dataset=augmented, limit=rows, max_steps=steps, batch_size=batch_size, max_length=max_length, logging_steps=max(1, steps // 4), save_steps=10_000, output_dir=tmp)
        trainer = build_trainer(config, Path(tmp))
        started = time.perf_counter()
        trainer.train()
        fast_s = time.perf_counter() - started
        # real (non-padding) tokens the trainer processed, as TRL counts them from the attention mask
        real_tokens = int(max(entry.get("num_tokens", 0) for entry in trainer.state.log_history))
        rows = trainer.state.global_step * batch_size
        flops = training_flops_per_token(trainer)
        del trainer
        gc.collect()

        # the plain way: fixed order, every batch padded to max_length, the full output layer everywhere
        trainer = build_trainer(config, Path(tmp))
        model, tokenizer = trainer.model, trainer.processing_class
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.learning_rate)
        ids = [list(row) for row in trainer.train_dataset["input_ids"]]
        plain_steps = max(2, steps // 10)
        model.train()
        started = time.perf_counter()
        plain_real = 0
        for step in range(plain_steps):
            batch = [ids[(step * batch_size + j) % len(ids)] for j in range(batch_size)]
            plain_real += sum(min(len(b), max_length) for b in batch)
            input_ids = torch.full((len(batch), max_length), tokenizer.pad_token_id, dtype=torch.long)
            attention = torch.zeros((len(batch), max_length), dtype=torch.long)
            for row, tokens in enumerate(batch):
                tokens = tokens[:max_length]
                input_ids[row, : len(tokens)] = torch.tensor(tokens)
                attention[row, : len(tokens)] = 1
            labels = input_ids.masked_fill(attention == 0, -100)
            loss = model(input_ids=input_ids, attention_mask=attention, labels=labels).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        plain_s = time.perf_counter() - started
        del trainer, model
        gc.collect()
    fast_rate, plain_rate = real_tokens / fast_s, plain_real / plain_s
    return {
        "workload": "lora_training_qra",
        "steps": steps,
        "batch_size": batch_size,
        "max_length": max_length,
        "real_tokens": real_tokens,
        "tokens_per_s": round(fast_rate, 1),
        "items_per_s": round(rows / fast_s, 2),
        "wall_s": round(fast_s, 1),
        "plain": {"method": f"padded fixed batches of {batch_size}x{max_length}", "steps": plain_steps, "tokens_per_s": round(plain_rate, 1)},
        "speedup": round(fast_rate / plain_rate, 2),
        # the arithmetic a real token costs (with checkpointing, as trained, and without), and the rate it ran at
        "mflop_per_real_token": flops,
        "gflop_per_s": round(flops["with_checkpointing"] * fast_rate / 1000, 1),
    }


def training_flops_per_token(trainer, batches: int = 3) -> dict:
    """MFLOP per real (unpadded) token of a training step, counted by torch's FlopCounterMode over `batches` of the
    trainer's batches after the first (the longest), with gradient checkpointing on and off.

    Checkpointing recomputes each layer's forward during the backward pass, so it costs about one forward more per
    token: divided into the machine's matmul peak this bounds the tokens/s any CPU kernel could give.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    model = trainer.model
    taken = [batch for _, batch in zip(range(batches + 1), trainer.get_train_dataloader(), strict=False)]
    steps = taken[1:] or taken  # a run of one batch: that one
    real = sum(int(batch["attention_mask"].sum()) for batch in steps)
    counted = {}
    was_checkpointing = model.is_activation_checkpointing
    with torch.random.fork_rng():
        model.train()
        for label, checkpointing in (("with_checkpointing", True), ("without_checkpointing", False)):
            if checkpointing:
                model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                model.activation_checkpointing_disable()
            counter = FlopCounterMode(display=False)
            with counter:
                for batch in steps:
                    batch = {key: value.to(model.device) if hasattr(value, "to") else value for key, value in batch.items()}
                    trainer.compute_loss(model, batch).backward()
            model.zero_grad(set_to_none=True)
            counted[label] = round(counter.get_total_flops() / real / 1e6, 1)
    if was_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    return counted


def matmul_peak_gflop_per_s(size: int = 2048, repeats: int = 5) -> float:
    """float32 GFLOP/s of a large square matrix product on this process's threads (best of `repeats`): the rate no
    training or inference step can beat, which its FLOP count turns into a bound."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)  # warm-up
    best = min(_timed(lambda: torch.mm(a, b)) for _ in range(repeats))
    return round(2 * size**3 / best / 1e9, 1)


def _timed(function) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def activation_bytes_per_token(model, tokens: int = 64) -> float:
    """Bytes one decoder layer keeps for the backward pass per token, without checkpointing, in training mode.

    Counts the tensors autograd saves inside the layers on one forward of `tokens` tokens (dropout masks and
    the dropped copies PEFT's LoRA keeps included; parameters, saved by reference, not). Checkpointing keeps
    only each layer's input instead: this is what it saves, per token and layer. The forward draws from a
    forked RNG, so the training that follows draws what it would have drawn.
    """
    import torch
    from transformers.modeling_layers import GradientCheckpointingLayer

    layers = [module for module in model.modules() if isinstance(module, GradientCheckpointingLayer)]
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    inside, counted, total = [False], set(), [0]

    def pack(tensor):
        storage = tensor.untyped_storage()
        if inside[0] and storage.data_ptr() not in parameters and storage.data_ptr() not in counted:
            counted.add(storage.data_ptr())
            total[0] += storage.nbytes()
        return tensor

    hooks = [layers[0].register_forward_pre_hook(lambda *_: inside.__setitem__(0, True)), layers[-1].register_forward_hook(lambda *_: inside.__setitem__(0, False))]
    flags, was_training = [layer.gradient_checkpointing for layer in layers], model.training
    try:
        for layer in layers:
            layer.gradient_checkpointing = False
        model.train()
        ids = torch.arange(1, tokens + 1, device=next(model.parameters()).device).unsqueeze(0)
        with torch.random.fork_rng(devices=[]), torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            model(input_ids=ids, attention_mask=torch.ones_like(ids))
    finally:
        for hook in hooks:
            hook.remove()
        for layer, flag in zip(layers, flags, strict=True):
            layer.gradient_checkpointing = flag
        model.train(was_training)
    return total[0] / len(layers) / tokens


def free_heap_mb() -> float | None:
    """Memory glibc's heap holds freed but resident (`mallinfo2().fordblks`), in MB; None off glibc 2.33+.

    Part of a process's resident memory that no tensor uses: the next allocations may reuse it, or not.
    """
    import ctypes
    import ctypes.util

    class Mallinfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

    try:
        mallinfo2 = ctypes.CDLL(ctypes.util.find_library("c") or "").mallinfo2
    except (OSError, AttributeError):
        return None
    mallinfo2.restype = Mallinfo2
    return round(mallinfo2().fordblks / 2**20, 1)


def bench_training_memory(task: str, base_model: str, dataset: str | None, rows: int, steps: int, batch_size: int, max_length: int, gradient_checkpointing: bool = True) -> dict:
    """A training process of `task` at the given settings, as `train` runs it; run through `in_child` for its peak RSS.

    `rows` are sampled and batched by length, so the first step takes the longest rows of the sample: the peak
    of a longer run on the same data is close to this one.
    """
    import tempfile

    from training.sft import TrainConfig, build_trainer

    with tempfile.TemporaryDirectory() as tmp:
        config = TrainConfig(task=task, base_model=base_model, dataset=dataset, limit=rows, max_steps=steps, batch_size=batch_size, max_length=max_length, logging_steps=1, save_steps=10_000, output_dir=tmp, gradient_checkpointing=gradient_checkpointing)
        trainer = build_trainer(config, Path(tmp))
        started = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - started
        real_tokens = int(max(entry.get("num_tokens", 0) for entry in trainer.state.log_history))
        free_heap = free_heap_mb()
        per_token = activation_bytes_per_token(trainer.model)  # after: a forward before training raised the peaks 0.1-0.4 GB
    return {
        "task": task,
        "rows": rows,
        "steps": steps,
        "batch_size": batch_size,
        "max_length": max_length,
        "gradient_checkpointing": config.gradient_checkpointing,
        "tokens_per_s": round(real_tokens / seconds, 1),
        # what each layer would keep per token without checkpointing, and the freed heap still resident at the end
        "activation_kb_per_token_per_layer": round(per_token / 1024, 1),
        "free_heap_mb_after": free_heap,
    }


def _qa_latencies(classifiers, texts: list[str]) -> tuple[list[float], list]:
    """Milliseconds per one-text Q->A prediction, and the label probabilities each gets."""
    for text in texts[:2]:  # warm-up, at the batch size measured
        classifiers.score("qa", [text])
    latencies, probabilities = [], []
    for text in texts:
        started = time.perf_counter()
        probabilities.append(classifiers.score("qa", [text])[0])
        latencies.append((time.perf_counter() - started) * 1000)
    return latencies, probabilities


def _compiled_qa(classifiers, texts: list[str], eager: list) -> dict:
    """Q->A latency again with scoring through torch.compile (optional: needs a C++ compiler), and how far
    its label probabilities are from the eager ones."""
    started = time.perf_counter()
    try:
        classifiers.compile_scoring()  # compiles the one-text shape before returning
    except ModelError as error:  # no C++ compiler, or nothing folded to compile
        return {"available": False, "reason": str(error)}
    compile_s = time.perf_counter() - started
    latencies, probabilities = _qa_latencies(classifiers, texts)
    return {
        "available": True,
        "method": "torch.compile (inductor, dynamic shapes) of the folded scoring forward",
        "compile_s": round(compile_s, 1),
        **_latency_figures(latencies),
        "max_probability_difference_vs_eager": float(max(abs(a - b).max() for a, b in zip(probabilities, eager, strict=True))),
        "same_label_as_eager": sum(int(a.argmax()) == int(b.argmax()) for a, b in zip(probabilities, eager, strict=True)) / len(eager),
    }


def _streams(classifiers, texts: list[str]) -> tuple[dict, list[str]]:
    """Q->RA at batch 1: time to the first streamed piece and the streamed rate after it, per text."""
    first_tokens, rates, lengths, outputs = [], [], [], []
    for text in texts:
        started = time.perf_counter()
        first, output = None, ""
        for partial in classifiers.stream("qra", text):
            output = partial
            if first is None:
                first = time.perf_counter() - started
        total = time.perf_counter() - started
        tokens = len(classifiers.tokenizer(output, add_special_tokens=False)["input_ids"])
        first_tokens.append(first * 1000)
        lengths.append(tokens)
        outputs.append(output)
        if total > first:
            rates.append(max(tokens - 1, 0) / (total - first))
    figures = {
        "texts": len(texts),
        "first_token_p50_ms": round(statistics.median(first_tokens), 1),
        "tokens_per_s_p50": round(statistics.median(rates), 1) if rates else None,
        "mean_output_tokens": round(statistics.mean(lengths), 1),
    }
    return figures, outputs


def _latency_figures(latencies: list[float]) -> dict:
    return {
        "texts": len(latencies),
        "p50_ms": round(statistics.median(latencies), 1),
        "p95_ms": round(statistics.quantiles(latencies, n=20)[18], 1),
    }


def bench_predictions(qa_run: str, qra_run: str, texts_count: int, stream_count: int, compiled: bool = True) -> dict:
    """Q->A latency by label scoring (vs one forward per label), Q->RA first token and streaming rate;
    Q->A through torch.compile when `compiled`; and, when llama-cpp-python is installed, the same on the
    llama.cpp backend with its agreement."""
    from reasonapp.models import plain_linears
    from training.generation import score_labels_plainly
    from training.predict import Classifiers

    classifiers = Classifiers({"qa": qa_run, "qra": qra_run})
    texts, gold, labels = _emotion_rows(texts_count, seed=2, split="test")
    latencies, probabilities = _qa_latencies(classifiers, texts)
    predicted = [int(row.argmax()) for row in probabilities]
    reasoned = [p.label for p in classifiers.predict("qra", texts)]  # batched greedy, for the backends' agreement
    plain_latencies = []
    fmt = prompts.get_format("qa")
    with plain_linears(classifiers.model):  # one forward per label, MKL's matmuls
        for text in texts[:10]:
            started = time.perf_counter()
            score_labels_plainly(classifiers.model, classifiers.tokenizer, [fmt.messages(text, labels)], labels.names)
            plain_latencies.append((time.perf_counter() - started) * 1000)
    streamed, outputs = _streams(classifiers, texts[:stream_count])
    result = {
        "workload": "predictions",
        "qa": {
            **_latency_figures(latencies),
            "plain": {"method": "one forward per label, MKL matmuls", "p50_ms": round(statistics.median(plain_latencies), 1)},
            "speedup_p50": round(statistics.median(plain_latencies) / statistics.median(latencies), 2),
            "accuracy": _accuracy([labels.names[i] for i in predicted], gold),
        },
        "qra_stream": streamed,
        "qra_accuracy": _accuracy(reasoned, gold),
    }
    if compiled:
        result["qa_compiled"] = _compiled_qa(classifiers, texts, probabilities)
    del classifiers
    gc.collect()
    reference = {"qa": predicted, "qra": reasoned, "streams": outputs, "gold": gold}
    result["llama_cpp"] = bench_llama_cpp(qa_run, qra_run, texts, texts[:stream_count], reference)
    return result


def _accuracy(predicted: list, gold: list) -> float:
    return round(sum(p == g for p, g in zip(predicted, gold, strict=True)) / len(gold), 3)


def bench_llama_cpp(qa_run: str, qra_run: str, texts: list[str], stream_texts: list[str], reference: dict) -> dict:
    """The optional llama.cpp backend on the same texts: speed, and how often it gives the transformers answer."""
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return {"installed": False, "note": "pip install llama-cpp-python (see README) to measure it"}
    from training.llamacpp import LlamaCppClassifiers, export_gguf

    started = time.perf_counter()
    try:
        for run in (qa_run, qra_run):
            export_gguf(run, force=True)  # timed: the export a new run pays once
    except ModelError as error:  # e.g. a base model without a GGUF file
        return {"installed": True, "not_measured": str(error)}
    export_s = time.perf_counter() - started
    served = LlamaCppClassifiers({"qa": qa_run, "qra": qra_run})
    latencies, probabilities = _qa_latencies(served, texts)
    predicted = [int(row.argmax()) for row in probabilities]
    streamed, served_outputs = _streams(served, stream_texts)
    reasoned = [p.label for p in served.predict("qra", texts)]
    def agreement(ours: list, theirs: list, key=lambda value: value) -> float:
        return round(sum(key(a) == key(b) for a, b in zip(ours, theirs, strict=True)) / len(theirs), 3)

    def label(output: str):
        return served.parse("qra", output).label

    return {
        "installed": True,
        "weights": "base Q4_1 GGUF, adapted matrices merged and stored as Q8_0",
        "export_s": round(export_s, 1),
        "qa": {
            **_latency_figures(latencies),
            "same_label_as_transformers": agreement(predicted, reference["qa"]),
            "accuracy": _accuracy([served.runs["qa"].labels.names[i] for i in predicted], reference["gold"]),
        },
        "qra_stream": {
            **streamed,
            "same_text_as_transformers": agreement(served_outputs, reference["streams"]),
            "same_label_as_transformers": agreement(served_outputs, reference["streams"], key=label),
        },
        "qra_labels": {
            "texts": len(texts),
            "same_label_as_transformers": agreement(reasoned, reference["qra"]),
            "accuracy": _accuracy(reasoned, reference["gold"]),
        },
    }


def bench_memory(qa_run: str, qra_run: str) -> dict:
    """Resident memory of a fresh process holding the base model and both adapters (what the app holds)."""
    import json
    import subprocess
    import sys

    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec, so a child would report its parent's peak.
    code = (
        "import json;from training.predict import Classifiers;"
        f"c=Classifiers({{'qa':{qa_run!r},'qra':{qra_run!r}}});c.score('qa',['i feel fine']);"
        "s=open('/proc/self/status').read();kb=lambda k:int(s.split(k+':')[1].split()[0])/1024;"
        "print(json.dumps({'rss_mb':kb('VmRSS'),'peak_rss_mb':kb('VmHWM')}))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise ConfigError(f"memory probe failed: {result.stderr[-500:]}")
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    return {"workload": "app_memory_two_adapters", **{k: round(v, 1) for k, v in figures.items()}}


def bench_compare_pick(qa_run: str, qra_run: str, rounds: int) -> dict:
    """Picking runs in the Compare tab: the seconds until a new pair answers, and its first Q->A request.

    A pair loaded from nothing (the first pick, or what every pick cost before `Classifiers.switch`), then a new
    Q->RA run, then a new Q->A run, as a user picks them one after the other. The new runs are copies of the given
    ones in other directories: what a pick does does not depend on the adapters' values. Medians of `rounds`.
    """
    import shutil
    import statistics
    import tempfile

    from training.predict import load_classifiers

    text = "i was so thrilled when the letter finally arrived"
    figures: dict[str, list[float]] = {}

    def timed(name: str, runs: dict, previous=None):
        started = time.perf_counter()
        classifiers = load_classifiers(runs, backend="transformers", previous=previous)
        figures.setdefault(f"{name}_s", []).append(time.perf_counter() - started)
        started = time.perf_counter()
        classifiers.score("qa", [text])
        figures.setdefault(f"{name}_first_qa_ms", []).append((time.perf_counter() - started) * 1000)
        return classifiers

    with tempfile.TemporaryDirectory(prefix="reasonapp-bench-") as scratch:
        qa_new, qra_new = (shutil.copytree(run, Path(scratch) / f"picked-{Path(run).name}") for run in (qa_run, qra_run))
        for _ in range(rounds):
            loaded = timed("whole_load", {"qa": qa_run, "qra": qra_run})
            loaded = timed("new_qra_run", {"qa": qa_run, "qra": qra_new}, previous=loaded)
            loaded = timed("new_qa_run", {"qa": qa_new, "qra": qra_new}, previous=loaded)
            del loaded  # one model at a time, as in the app
    result = {"workload": "compare_pick", "rounds": rounds}
    result.update({name: round(statistics.median(values), 3 if name.endswith("_s") else 1) for name, values in figures.items()})
    result["two_picks_s"] = round(result["new_qa_run_s"] + result["new_qra_run_s"], 3)
    return result


def run_bench(rgen_run: str, qa_run: str, qra_run: str, augmented: str, quick: bool = False, only: list[str] | None = None) -> dict:
    """The selected workloads (default: all but stage2_endpoint, which needs llama-cpp-python's server), each given
    only the runs it uses and run in a process of its own (`in_child`: its peak RSS is its own); `rgen_run` may be
    `base:<model>` for the Stage 2 workloads (no Stage 1)."""
    import torch

    from training import rundir
    from training.augment import BASE_PREFIX

    selected = only or ["stage2", "training", "training_memory", "predictions", "memory", "compare_pick"]
    unknown = sorted(set(selected) - set(WORKLOAD_RUNS))
    if unknown:
        raise ConfigError(f"unknown bench workloads {unknown}; choose from {sorted(WORKLOAD_RUNS)}")
    given = {"--rgen-run": rgen_run, "--qa-run": qa_run, "--qra-run": qra_run, "--augmented": augmented}
    for name in sorted({flag for workload in selected for flag in WORKLOAD_RUNS[workload]}, key=list(given).index):
        path = given[name]
        if name == "--rgen-run" and path and str(path).startswith(BASE_PREFIX):
            continue
        if not path or not Path(path).is_dir():
            raise ConfigError(f"bench needs {name}: a directory from a real run (got {path!r}); see `python -m training experiment`")
    model_run = qra_run if qra_run and Path(qra_run).is_dir() else rgen_run
    base_model = str(model_run)[len(BASE_PREFIX) :] if str(model_run).startswith(BASE_PREFIX) else rundir.read_config(Path(model_run))["base_model"]
    started = time.time()
    results = {
        "machine": {"cpu": cpu_model(), "threads": torch.get_num_threads(), "torch": torch.__version__, "matmul_gflop_per_s": matmul_peak_gflop_per_s()},
        "quick": quick,
        "model": base_model,
        "workloads": {},
    }
    workloads = results["workloads"]  # each in a process of its own, with that process's peak RSS
    if "stage2" in selected:
        workloads["stage2"] = in_child("bench_stage2", rgen_run=rgen_run, rows=48 if quick else 256, plain_rows=6 if quick else 24, batch_size=32)
    if "stage2_endpoint" in selected:
        workloads["stage2_endpoint"] = in_child(
            "bench_stage2_endpoint", rgen_run=rgen_run, rows=16 if quick else 256, sequential_rows=4 if quick else 64, batch_size=32
        )
    if "training" in selected:
        workloads["training"] = in_child("bench_training", augmented=augmented, base_model=base_model, steps=6 if quick else 200, batch_size=8, max_length=256)
    if "training_memory" in selected:  # the default settings of `train`, per task; Q->RA again without checkpointing
        sizes = {"rows": 16 if quick else 200, "steps": 2 if quick else 6, "batch_size": 8, "max_length": 256}
        datasets = {"rgen": None, "qa": None, "qra": augmented}
        workloads["training_memory"] = {
            task: in_child("bench_training_memory", task=task, base_model=base_model, dataset=dataset, **sizes) for task, dataset in datasets.items()
        }
        if not quick:
            workloads["training_memory"]["qra_without_checkpointing"] = in_child(
                "bench_training_memory", task="qra", base_model=base_model, dataset=augmented, gradient_checkpointing=False, **sizes
            )
    if "predictions" in selected:
        workloads["predictions"] = in_child(
            "bench_predictions", qa_run=qa_run, qra_run=qra_run, texts_count=20 if quick else 100, stream_count=3 if quick else 10, compiled=not quick
        )
    if "memory" in selected:
        workloads["memory"] = bench_memory(qa_run, qra_run)
    if "compare_pick" in selected:
        workloads["compare_pick"] = in_child("bench_compare_pick", qa_run=qa_run, qra_run=qra_run, rounds=2 if quick else 5)
    children = [w.get("peak_rss_mb", 0) for w in workloads.values()] + [w.get("peak_rss_mb", 0) for w in workloads.get("training_memory", {}).values()]
    results["peak_rss_mb"] = round(max([_peak_rss_mb(), *children]), 1)
    results["wall_s"] = round(time.time() - started, 1)
    return results
