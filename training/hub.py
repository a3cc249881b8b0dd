"""Share runs and reviewed datasets on the Hugging Face Hub, with cards that say what they are.

    python -m training push workspace/runs/qra --repo-id you/emotion-qra [--private] [--merged]
    python -m training push workspace/exports/emotion-reviewed --repo-id you/emotion-reasonings

A run is pushed in its run-directory layout (`adapter/` or `model/`, `config.json`, metrics,
evaluation), so the app's Compare tab can load it back by repo id. The token comes from the caller
(the Space's OAuth login), `HF_TOKEN`, or the local login; it is never written, logged or shown:
any message that could carry it is scrubbed first.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

from reasonapp import prompts
from reasonapp.errors import ReasonappError, RunDirError
from reasonapp.quality import quality_line
from training import rundir

PAPER_CITATION = """@article{henrichsen2025reasoning,
  title   = {Reasoning-infused classification},
  author  = {Henrichsen and Krebs},
  journal = {arXiv preprint arXiv:2507.00214},
  year    = {2025}
}"""
TASK_TITLES = {"rgen": "R-Gen (Stage 1 reasoning generator)", "qa": "Q→A classifier", "qra": "Q→RA classifier", "qar": "Q→AR classifier"}
RUN_FILES = ["config.json", "final_metrics.json", "metrics.jsonl", "eval-test/metrics.json", "eval-test/report.md"]


class HubError(ReasonappError):
    """A push that cannot be made, with what to do about it."""


class HubUnreachable(HubError):
    """No connection to the Hub was made (network down, wrong HF_ENDPOINT, offline mode): nothing was pushed."""


def _connection_errors() -> tuple[type[BaseException], ...]:
    """What the HTTP clients under huggingface_hub raise when they get no connection or no answer in time.

    huggingface_hub 1.x+ talks through httpx (2.x: its fork httpx2), older releases through requests;
    whichever of them is installed is listed.
    """
    import importlib

    errors: list[type[BaseException]] = []
    for module_name, names in (
        ("httpx2", ("ConnectError", "TimeoutException")),
        ("httpx", ("ConnectError", "TimeoutException")),
        ("requests.exceptions", ("ConnectionError", "Timeout")),
    ):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        errors += [getattr(module, name) for name in names if hasattr(module, name)]
    return tuple(errors)


def resolve_token(token: str | None = None) -> str:
    from huggingface_hub import get_token

    token = token or os.environ.get("HF_TOKEN") or get_token()
    if not token:
        raise HubError("no Hugging Face token: set HF_TOKEN, run `hf auth login`, or sign in with the button on a Space")
    return token


def _scrub(text: str, token: str) -> str:
    return text.replace(token, "***") if token else text


def check_repo_id(repo_id: str) -> str:
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise HubError(f"invalid repo id {repo_id!r}: use 'user-or-org/name' with letters, digits, '-', '_' and '.'") from error
    if "/" not in repo_id:
        raise HubError(f"invalid repo id {repo_id!r}: give it as 'user-or-org/name'")
    return repo_id


# ---------------------------------------------------------------------------------------------
# cards


def model_card(config: dict, run_dir: Path, repo_id: str, merged: bool):
    from huggingface_hub import ModelCard, ModelCardData

    task = config["task"]
    evaluation = rundir.read_json(run_dir / "eval-test" / "metrics.json") or {}
    final = rundir.read_json(run_dir / rundir.FINAL_METRICS) or {}
    dataset = str(config.get("source_dataset") or config["dataset"])
    on_hub = "/" in dataset and not Path(dataset).exists()  # a Hub id, not a local directory
    data = ModelCardData(
        base_model=config["base_model"],
        datasets=[dataset] if on_hub else None,
        library_name="transformers" if merged else "peft",
        pipeline_tag="text-generation",
        tags=["reasonapp", "reasoning-infused-classification", task, "lora" if not merged else "merged"],
    )
    metrics_table = ""
    if evaluation.get("systems"):
        lines = ["| system | accuracy | macro-F1 | invalid |", "| --- | ---: | ---: | ---: |"]
        for name, m in evaluation["systems"].items():
            lines.append(f"| {name} | {m['accuracy'] * 100:.1f}% | {m['macro_f1'] * 100:.1f}% | {m['invalid_rate'] * 100:.1f}% |")
        metrics_table = f"Evaluated on `{evaluation['dataset']}` / {evaluation['split']} ({evaluation['rows']} rows):\n\n" + "\n".join(lines)
        if evaluation.get("verdict"):
            metrics_table += f"\n\n{evaluation['verdict']}"
    else:
        metrics_table = "Not evaluated yet (`python -m training evaluate`)."
    example = _example_prompt(config)
    load = (
        f'model = AutoModelForCausalLM.from_pretrained("{repo_id}", subfolder="model")'
        if merged
        else f'base = AutoModelForCausalLM.from_pretrained("{config["base_model"]}")\nmodel = PeftModel.from_pretrained(base, "{repo_id}", subfolder="adapter")'
    )
    content = f"""---
{data.to_yaml()}
---

# {repo_id.split('/')[-1]}: {TASK_TITLES.get(task, task)}

Trained with [reasonapp](https://arxiv.org/abs/2507.00214), a workbench for two-stage reasoning-infused
classification (Henrichsen & Krebs, arXiv 2507.00214). {"A merged model" if merged else "A LoRA adapter"} on
`{config['base_model']}`, task `{task}`, prompt format version {config.get('prompt_version')}.

## Training

- data: `{config.get('dataset')}` (split `{config.get('split')}`, {final.get('train_rows', config.get('limit') or 'all')} rows)
- epochs {config.get('epochs')}, learning rate {config.get('learning_rate')}, batch size {config.get('batch_size')},
  max length {config.get('max_length')}, LoRA r={config.get('lora_r')} alpha={config.get('lora_alpha')}, seed {config.get('seed')}
- final training loss: {final.get('train_loss', 'n/a')}, steps {final.get('global_step', 'n/a')}
- labels: {', '.join(config.get('label_names', [])) or 'n/a'}

## Evaluation

{metrics_table}

## Prompt format

Messages go through the base model's chat template. The user turn:

```
{example['prompt']}
```

and the model writes:

```
{example['completion']}
```

## Use

```python
from transformers import AutoModelForCausalLM, AutoTokenizer
from peft import PeftModel

tokenizer = AutoTokenizer.from_pretrained("{repo_id}", subfolder="{'model' if merged else 'adapter'}")
{load}
messages = [{{"role": "user", "content": {json.dumps(example['prompt'])}}}]
inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
print(tokenizer.decode(model.generate(**inputs, max_new_tokens=96)[0], skip_special_tokens=True))
```

Or load it in the reasonapp Compare tab by its repo id.

## Citation

```bibtex
{PAPER_CITATION}
```
"""
    return ModelCard(content)


def _example_prompt(config: dict) -> dict:
    if config["task"] == "rgen":
        messages = prompts.rgen_messages("Which emotion does the text express?\nText: i feel so relieved", "joy")
        return {"prompt": messages[0]["content"], "completion": "<a short reasoning>"}
    labels = prompts.LabelSpace(tuple(config["label_names"]), config.get("task_description") or "Which label fits the text?")
    fmt = prompts.get_format(config["task"])
    text = "i feel so relieved that it is over"
    completion = fmt.completion(labels.names[0], "<a short reasoning citing the text>" if fmt.uses_reasoning else None)
    return {"prompt": fmt.messages(text, labels)[0]["content"], "completion": completion}


def dataset_card(provenance: dict, repo_id: str, label_names: list[str], rows: int):
    from huggingface_hub import DatasetCard, DatasetCardData

    data = DatasetCardData(
        task_categories=["text-classification"],
        tags=["reasonapp", "reasoning-infused-classification", "rationales"],
        size_categories=["n<1K"] if rows < 1000 else (["1K<n<10K"] if rows < 10_000 else ["10K<n<100K"]),
    )
    review = provenance.get("review", {})
    policy = provenance.get("policy", "keep-all")
    if policy != "keep-all":
        blank = ", their rows kept with a blank reasoning" if provenance.get("dropped_rows") == "blank" else ""
        policy = f"{policy} ({provenance.get('dropped_by_policy', 0)} reasonings dropped{blank})"
    quality = quality_line(provenance["quality"]) if provenance.get("quality") else "n/a"
    content = f"""---
{data.to_yaml()}
---

# {repo_id.split('/')[-1]}

Classification examples with a reasoning for each, written by an R-Gen model and reviewed by people in
[reasonapp](https://arxiv.org/abs/2507.00214). Columns: `text`, `label` ({', '.join(label_names)}),
`reasoning`, and provenance: `status` (accepted / edited / pending), `reviewer`, `flags` (automatic
quality signals), `generator` (R-Gen run, prompt version, decoding), `source_split`, `source_row`.

## Provenance

- source dataset: `{provenance.get('source_dataset')}`
- rows: {rows} ({provenance.get('exported_status') or provenance.get('review')})
- review state of the whole store: {json.dumps(review)}
- unreviewed rows included: {provenance.get('include_pending', False)}
- rows with quality flags: {provenance.get('flagged_rows', 'n/a')}
- export policy (by the flags): {policy}
- reasoning quality: {quality}

## Citation

```bibtex
{PAPER_CITATION}
```
"""
    return DatasetCard(content)


# ---------------------------------------------------------------------------------------------
# pushing


def _commit(
    repo_id: str, repo_type: str, files: dict[str, Path | bytes], private: bool, token: str, message: str, new_repo_only: bool = False
) -> dict:
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    api = HfApi(token=token)
    unreachable = _connection_errors()
    try:
        if new_repo_only and api.repo_exists(repo_id, repo_type=repo_type):
            raise HubError(f"{repo_id} already exists; a push from the Space creates a new repo: name one that does not exist yet")
        repo = api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=not new_repo_only)
        operations = [CommitOperationAdd(path_in_repo=path, path_or_fileobj=content if isinstance(content, bytes) else str(content)) for path, content in files.items()]
        commit = api.create_commit(repo_id, operations, commit_message=message, repo_type=repo_type)
    except OfflineModeIsEnabled:  # an OSError: before the generic failure below
        raise HubUnreachable("could not reach the Hugging Face Hub: HF_HUB_OFFLINE is set; unset it to push (nothing was pushed)") from None
    except unreachable as error:
        raise HubUnreachable(
            _scrub(f"could not reach the Hugging Face Hub at {api.endpoint} ({type(error).__name__}: {error}); ", token)
            + "check the network connection and HF_ENDPOINT (unset: huggingface.co), then retry (nothing was pushed)"
        ) from None
    except (HfHubHTTPError, OSError, ValueError) as error:
        raise HubError(_scrub(f"push to {repo_id} failed: {error}", token) + " (nothing partial was committed; retry when the Hub answers)") from None
    return {"repo_url": str(repo), "commit_url": commit.commit_url, "commit": commit.oid, "files": sorted(files)}


def push_run(
    run_dir: str | Path, repo_id: str, private: bool = False, merged: bool = False, token: str | None = None, new_repo_only: bool = False
) -> dict:
    """Push a finished run (adapter, or the adapter merged into its base) with its config, metrics and card."""
    run_dir = Path(run_dir)
    check_repo_id(repo_id)
    config = rundir.read_config(run_dir)
    adapter = run_dir / rundir.ADAPTER
    full_model = run_dir / rundir.FULL_MODEL
    if not (adapter / "adapter_config.json").is_file() and not (full_model / "config.json").is_file():
        raise RunDirError(f"{run_dir} has no trained adapter or model to push (state: {rundir.read_json(run_dir / rundir.STATUS, {}).get('state', 'unknown')})")
    token = resolve_token(token)

    files: dict[str, Path | bytes] = {}
    with tempfile.TemporaryDirectory() as staging:
        if merged and adapter.is_dir():
            from reasonapp.models import load_with_adapters

            model, tokenizer = load_with_adapters(config["base_model"], {"default": adapter}, device="cpu")
            model.merge_and_unload().save_pretrained(Path(staging) / "model")
            tokenizer.save_pretrained(Path(staging) / "model")
            source, folder = Path(staging) / "model", "model"
        elif adapter.is_dir():
            source, folder = adapter, "adapter"
        else:
            source, folder = full_model, "model"
        for path in sorted(source.rglob("*")):
            if path.is_file():
                files[f"{folder}/{path.relative_to(source)}"] = path
        for name in RUN_FILES:
            if (run_dir / name).is_file():
                files[name] = run_dir / name
        files["README.md"] = str(model_card(config, run_dir, repo_id, merged and adapter.is_dir())).encode()
        return _commit(repo_id, "model", files, private, token, f"Push {config['task']} run {run_dir.name} from reasonapp", new_repo_only)


def push_dataset(export_dir: str | Path, repo_id: str, private: bool = False, token: str | None = None, new_repo_only: bool = False) -> dict:
    """Push an exported augmented dataset (parquet + provenance) as a dataset repo with its card."""
    export_dir = Path(export_dir)
    check_repo_id(repo_id)
    provenance = rundir.read_json(export_dir / "provenance.json")
    if provenance is None or not (export_dir / "train.parquet").is_file():
        raise RunDirError(f"{export_dir} is not an exported dataset (run `python -m training export` first)")
    token = resolve_token(token)
    label_names = json.loads((export_dir / "labels.json").read_text())
    files: dict[str, Path | bytes] = {
        "data/train.parquet": export_dir / "train.parquet",
        "labels.json": export_dir / "labels.json",
        "provenance.json": export_dir / "provenance.json",
        "README.md": str(dataset_card(provenance, repo_id, label_names, provenance.get("rows", 0))).encode(),
    }
    return _commit(repo_id, "dataset", files, private, token, f"Push reviewed reasonings from {export_dir.name}", new_repo_only)


def push(
    path: str | Path, repo_id: str, private: bool = False, merged: bool = False, token: str | None = None, new_repo_only: bool = False
) -> dict:
    """A run directory or an exported dataset, whichever `path` is; `new_repo_only` refuses a repo that exists already."""
    path = Path(path)
    if (path / "provenance.json").is_file() and (path / "train.parquet").is_file():
        return push_dataset(path, repo_id, private, token, new_repo_only)
    if (path / rundir.CONFIG).is_file():
        return push_run(path, repo_id, private, merged, token, new_repo_only)
    raise RunDirError(f"{path} is neither a run directory nor an exported dataset")


# ---------------------------------------------------------------------------------------------
# review decisions that survive a Space restart


SYNC_EVERY_MINUTES = 2.0


class DecisionSync:
    """The decision log folder mirrored to a private dataset repo: pulled back at start, pushed every few minutes and at exit.

    huggingface_hub's CommitScheduler does the pushing (only changed files, in a background thread, and once more at
    exit); it never restores, so `restore` pulls the log files and replays them into the store.
    """

    def __init__(self, repo_id: str, folder: str | Path, token: str | None = None, every_minutes: float = SYNC_EVERY_MINUTES):
        check_repo_id(repo_id)
        self.repo_id, self.folder, self.token, self.every_minutes = repo_id, Path(folder), token, every_minutes
        self.last_sync: float | None = None
        self.last_error: str | None = None
        self._scheduler = None

    def restore(self, store_path: str | Path | None) -> dict:
        """Pull every process's log from the repo and apply what the store lacks; returns what was restored.

        The store is opened (and so created) only when there is something to restore.
        """
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

        from reasonapp.journal import merge_pulled_logs, read_events, replay

        self.folder.mkdir(parents=True, exist_ok=True)
        # pulled beside the folder, then merged: a pulled file may be older than this disk's (a kill after its last sync)
        note = None
        with tempfile.TemporaryDirectory(dir=self.folder.parent, prefix=".decisions-pulled-") as pulled:
            try:
                snapshot_download(self.repo_id, repo_type="dataset", local_dir=pulled, allow_patterns=["*.jsonl"], token=self.token)
            except RepositoryNotFoundError:  # nothing to pull; this disk's own log, if any, is still replayed
                note = f"{self.repo_id} does not exist yet: it is created at the first sync"
            except (HfHubHTTPError, OSError, *_connection_errors()) as error:
                said = " ".join(str(error).split())  # huggingface_hub's text has line breaks: one line for the start
                raise HubError(_scrub(f"could not pull the decision log from {self.repo_id}: {said}", self.token)) from None
            merge_pulled_logs(pulled, self.folder)
        from reasonapp.store import ReasoningStore

        events = read_events(self.folder)
        applied = 0
        if events:
            store = ReasoningStore(store_path, journal=None)  # replayed changes are in the log already
            try:
                applied = replay(store, events)
                if applied:
                    store.mark_templates()
            finally:
                store.close()
        if note and events:
            note += f"; {len(events)} changes logged on this disk, {applied} restored into this store"
        return {"events": len(events), "applied": applied, "newest": max((e["at"] for e in events), default=None), "note": note}

    def start(self) -> None:
        """Push the folder every `every_minutes` and at exit (a SIGTERM must end the process through sys.exit for that)."""
        from huggingface_hub import CommitScheduler
        from huggingface_hub.errors import HfHubHTTPError

        sync = self

        class Scheduler(CommitScheduler):
            def push_to_hub(self):
                try:
                    result = super().push_to_hub()
                except Exception as error:  # the next round retries; the page shows it meanwhile
                    sync.last_error = _scrub(str(error), sync.token)
                    raise
                sync.last_sync, sync.last_error = time.time(), None
                return result

        def create() -> bool:
            try:  # the scheduler creates the repo first: a network call
                self._scheduler = Scheduler(
                    repo_id=self.repo_id, repo_type="dataset", folder_path=self.folder, every=self.every_minutes, private=True,
                    token=self.token, allow_patterns=["*.jsonl"],
                )
            except (HfHubHTTPError, OSError, *_connection_errors()) as error:
                self.last_error = _scrub(f"{type(error).__name__}: {error}", self.token)
                return False
            return True

        if not create():  # the Hub is unreachable now: keep logging on disk and try again each round, in the background
            import threading

            def retry() -> None:
                while not create():
                    time.sleep(self.every_minutes * 60)

            threading.Thread(target=retry, name="decision-sync-start", daemon=True).start()

    def flush(self) -> None:
        """Push now and wait (at shutdown, and in tests)."""
        if self._scheduler is not None:
            self._scheduler.trigger().result()

    def status_line(self) -> str:
        if self.last_error:
            return f"Decision log: last sync to {self.repo_id} failed ({self.last_error}); retrying every {self.every_minutes:g} min"
        when = time.strftime("%H:%M:%S", time.localtime(self.last_sync)) if self.last_sync else "not yet this session"
        return f"Decision log synced to {self.repo_id} every {self.every_minutes:g} min; last sync: {when}"
