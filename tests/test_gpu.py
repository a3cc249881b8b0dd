"""On a CUDA GPU: models load in bfloat16, training learns, and the fast inference paths still agree with the plain ones.

bfloat16 keeps ~3 significant digits, so these compare labels and greedy texts, and log-probabilities within a
bfloat16-sized tolerance, where the CPU tests (float32) ask for 1e-4. They run only where CUDA is available:
`make test` on a GPU machine, or `pytest tests/test_gpu.py` there.
"""

import numpy as np
import pytest
import torch

from reasonapp.prompts import get_format
from tests.test_generation import EMOTIONS, _prefix_of

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

TEXTS = [
    "i feel fine",
    "a much longer text about being rather scared of the dark at night",
    "im so angry that they cancelled again",
    "i miss him so much",
    "i was amazed when the package arrived early",
    "i love the way she laughs",
]


@pytest.fixture(scope="module")
def gpu_model(smollm2_dir):
    from reasonapp.models import load_base_model

    return load_base_model(smollm2_dir)


def test_a_gpu_loads_the_model_in_bfloat16_on_cuda(gpu_model):
    model, _ = gpu_model
    parameter = next(model.parameters())
    assert parameter.device.type == "cuda"
    assert parameter.dtype == (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)


def test_label_scoring_on_the_gpu_picks_the_plain_pass_labels(gpu_model):
    from training.generation import score_labels, score_labels_plainly

    model, tokenizer = gpu_model
    fmt = get_format("qa")
    conversations = [fmt.messages(text, EMOTIONS) for text in TEXTS]
    prefix = _prefix_of(tokenizer, fmt, EMOTIONS)
    plain = score_labels_plainly(model, tokenizer, conversations, EMOTIONS.names)
    fast = score_labels(model, tokenizer, conversations, EMOTIONS.names, batch_size=4, prefix=prefix)
    assert (fast.argmax(1) == plain.argmax(1)).all()
    assert abs(fast - plain).max() < 0.25  # nats; bfloat16 rounding over ~60 tokens of context


def test_batched_generation_on_the_gpu_matches_plain_greedy_generation(gpu_model):
    from training.generation import Decoding, generate, stream

    model, tokenizer = gpu_model
    fmt = get_format("qra")
    conversations = [fmt.messages(text, EMOTIONS) for text in TEXTS]
    decoding = Decoding(max_new_tokens=16)
    shared = generate(model, tokenizer, conversations, decoding, batch_size=3)
    plain = generate(model, tokenizer, conversations, decoding, batch_size=1, share_prefix=False)
    assert sum(a == b for a, b in zip(shared, plain, strict=True)) >= len(TEXTS) - 1  # a bf16 near-tie may flip one
    streamed = list(stream(model, tokenizer, conversations[0], decoding, _prefix_of(tokenizer, fmt, EMOTIONS)))
    assert len(streamed) > 1 and streamed[-1] == generate(model, tokenizer, conversations[:1], decoding)[0]


@pytest.fixture(scope="module")
def gpu_runs(smollm2_dir, tmp_path_factory, shared_data):
    """Q->A on 800 real emotion rows and a small Q->RA run, both trained on the GPU in bfloat16."""
    from tests.test_training import write_augmented
    from training.sft import TrainConfig, train

    root = tmp_path_factory.mktemp("gpu-runs")
    qa = train(
        TrainConfig(
            task="qa", base_model=smollm2_dir, limit=800, batch_size=16, max_length=128, output_dir=str(root / "qa")
        )
    )
    augmented = write_augmented(root / "augmented")
    qra = train(
        TrainConfig(
            task="qra",
            base_model=smollm2_dir,
            dataset=augmented,
            max_steps=10,
            batch_size=8,
            output_dir=str(root / "qra"),
        )
    )
    return qa, qra


def test_training_on_the_gpu_learns_and_classifiers_keep_every_adapter_unmerged(gpu_runs, shared_data):
    from reasonapp.data import load_classification_dataset
    from reasonapp.models import load_with_adapters
    from training import rundir
    from training.generation import score_labels
    from training.predict import Classifiers

    qa, qra = gpu_runs
    losses = [row["loss"] for row in rundir.load_metrics(qa)]
    assert losses[-1] < losses[0] / 2

    test = load_classification_dataset("dair-ai/emotion").splits["test"].select(range(200))
    texts, gold = list(test["text"]), list(test["label"])
    classifiers = Classifiers({"qa": qa, "qra": qra})
    assert next(classifiers.model.parameters()).device.type == "cuda"
    assert classifiers._folded is None  # bfloat16 would round a folded adapter away
    probabilities = classifiers.score("qa", texts)
    predicted = probabilities.argmax(1)
    assert (predicted == np.array(gold)).mean() > 0.5  # six labels; the majority class is ~0.35

    # what the trained adapter computes, loaded on its own
    model, tokenizer = load_with_adapters(classifiers.runs["qa"].base_model, {"qa": classifiers.runs["qa"].adapter_dir})
    labels = classifiers.runs["qa"].labels  # the run's label set and task description: its trained prompt
    conversations = [get_format("qa").messages(text, labels) for text in texts]
    alone = score_labels(model, tokenizer, conversations, labels.names).argmax(1)
    assert (predicted == alone).mean() >= 0.97

    assert len(classifiers.predict("qra", texts[:4])) == 4
    assert len(list(classifiers.stream("qra", texts[0]))) > 1
    assert abs(classifiers.score("qa", texts) - probabilities).max() < 1e-6  # generating left the weights alone


def test_stage2_on_the_gpu_generates_with_the_rgen_adapter_unmerged(smollm2_dir, tmp_path, shared_data):
    from peft import PeftModel

    from training.augment import generate_reasonings, load_rgen
    from training.sft import TrainConfig, train

    rgen = train(TrainConfig(task="rgen", base_model=smollm2_dir, limit=64, max_steps=4, batch_size=8, output_dir=str(tmp_path / "rgen")))
    model, tokenizer, _ = load_rgen(rgen)
    assert isinstance(model, PeftModel)  # merged, the adapter would be rounded into the bfloat16 weights
    texts, labels = ["i feel so alone tonight", "im thrilled about the trip"], ["sadness", "joy"]
    assert all(generate_reasonings(model, tokenizer, texts, labels, EMOTIONS, batch_size=2))
