"""Train tab: configure a run, start it as its own process, watch it, stop it, evaluate it.

Nothing here trains: `training.launcher` starts `python -m training train` in a new process session
and this tab reads the run directory every two seconds (`gr.Timer`). Reloading the page reattaches
to any run, running or finished, by picking it from the list.
"""

from __future__ import annotations

import html
from pathlib import Path

import gradio as gr
import pandas as pd

from reasonapp.dataset_import import display_name
from reasonapp.errors import ReasonappError
from reasonapp.ui.access import current_policy, readable
from reasonapp.ui.run_lists import refresh_on_change
from training import launcher, rundir
from training.sft import TASKS, TrainConfig

# Gradio 6's Textbox takes its autoscroll from the page (off unless embedded with autoscroll="true"), not from
# its own `autoscroll=True`: without this the log box would show its oldest lines. Runs in the browser.
SCROLL_LOG_TO_NEWEST = """() => requestAnimationFrame(() => {
    const box = document.querySelector('#train-log textarea');
    if (box) box.scrollTop = box.scrollHeight;
})"""


def _number(value, cast=float, default=None):
    if value in (None, ""):
        return default
    return cast(value)


def build_config(task, base_model, dataset, limit, epochs, max_steps, learning_rate, batch_size, lora_r, seed, output_dir="") -> TrainConfig:
    """The form's values as a TrainConfig; raises ConfigError with a message for the user."""
    limit = _number(limit, int, 0)
    return TrainConfig(
        task=task,
        base_model=(base_model or "").strip(),
        dataset=(dataset or "").strip() or None,
        limit=limit if limit and limit > 0 else None,
        epochs=_number(epochs, float, 1.0),
        max_steps=_number(max_steps, int, -1),
        learning_rate=_number(learning_rate, float, 2e-4),
        batch_size=_number(batch_size, int, 8),
        lora_r=_number(lora_r, int, 16),
        seed=_number(seed, int, 0),
        output_dir=run_directory(output_dir),
        logging_steps=1,  # a live loss curve wants every step
    )


def run_directory(value: str | None) -> str:
    """The Run directory field as a path: empty stays empty (TrainConfig names a new one), a bare name goes under the runs folder."""
    value = (value or "").strip()
    if not value:
        return ""
    path = Path(value).expanduser()
    return str(rundir.runs_root() / path if len(path.parts) == 1 else path.absolute())


def run_choices() -> list[tuple[str, str]]:
    """(name · task, run dir) of every run, newest first, and of runs launched but not started yet.

    No state in the label: the Status box and Past runs show it (the list is refreshed when a run starts
    or ends, but a label changing under an open dropdown would move what the user is about to pick).
    """
    choices = [(f"{Path(run['run_dir']).name} · {run['config'].get('task', '?')}", run["run_dir"]) for run in rundir.list_runs()]
    for launch in sorted(rundir.runs_root().glob(f"*/{launcher.LAUNCH_CONFIG}"), reverse=True):
        if not (launch.parent / rundir.CONFIG).is_file():  # launched, not yet started (or failed before it could)
            task = launcher.launch_settings(launch.parent).get("task", "?")
            choices.append((f"{launch.parent.name} · {task}", str(launch.parent)))
    return choices


def runs_table() -> pd.DataFrame:
    rows = []
    for run in rundir.list_runs():
        config, final = run["config"], run["final_metrics"] or {}
        evaluation = rundir.read_json(Path(run["run_dir"]) / "eval-test" / "metrics.json") or {}
        accuracy = {k: f"{v['accuracy'] * 100:.1f}%" for k, v in evaluation.get("systems", {}).items()}
        rows.append(
            {
                "run": Path(run["run_dir"]).name,
                "task": config.get("task"),
                "state": run["status"].get("state"),
                "base model": config.get("base_model"),
                "rows": final.get("train_rows"),
                "steps": final.get("global_step"),
                "train loss": round(final["train_loss"], 4) if final.get("train_loss") is not None else None,
                "test accuracy": ", ".join(f"{k} {v}" for k, v in accuracy.items()),
            }
        )
    return pd.DataFrame(rows, columns=["run", "task", "state", "base model", "rows", "steps", "train loss", "test accuracy"])


# Timer handler: the run list and Past runs, sent again only when a run was launched, started, ended or evaluated.
refresh_run_lists = refresh_on_change(rundir.runs_signature, lambda: gr.update(choices=run_choices()), runs_table)


def dataset_after_switch(task: str | None, app_dataset: str, typed: str | None) -> str:
    """The Dataset field when the page switches dataset: a qa run trains on the app's dataset; rgen, qra and qar
    read other data (a reasoning set, an export), so what is typed there stays."""
    return app_dataset if task == "qa" else (typed or "")


def task_dataset(task: str | None, app_dataset: str, typed: str | None) -> str:
    """The Dataset field when the task changes: the app's dataset for qa, the newest export of reviewed reasonings for
    qra and qar, empty (the task's default) for rgen; a value the user typed (neither empty nor the app's dataset) stays."""
    from training.augment import latest_export

    typed = (typed or "").strip()
    if typed and typed != app_dataset:
        return typed
    if task in ("qra", "qar"):
        return latest_export() or ""
    return app_dataset if task == "qa" else ""


def in_page_words(message: str) -> str:
    """A training config error as the Train tab says it (its Dataset field, not the CLI's flag)."""
    return message.replace(
        "needs --dataset: an augmented dataset with a reasoning column",
        "needs a Dataset: the folder of an export of reviewed reasonings (Review tab → Export), e.g. workspace/exports/<name>",
    )


# The form's fields by name (not *form): an API caller sees what each parameter is, not param_0 … param_10.
def show_command(task, base_model, dataset, limit, epochs, max_steps, learning_rate, batch_size, lora_r, seed, output_dir):
    """(the command, the Run directory field): an empty field gets the directory named in the command, which Start then uses."""
    try:
        config = build_config(task, base_model, dataset, limit, epochs, max_steps, learning_rate, batch_size, lora_r, seed, output_dir)
    except ReasonappError as error:
        return f"# {in_page_words(str(error))}", output_dir
    return launcher.show_command(config), config.output_dir


def start(task, base_model, dataset, limit, epochs, max_steps, learning_rate, batch_size, lora_r, seed, output_dir):
    """(run list, message, Run directory field): the field is emptied once its run is launched, so the next Start gets a new one."""
    try:
        config = build_config(task, base_model, dataset, limit, epochs, max_steps, learning_rate, batch_size, lora_r, seed, output_dir)
        run_dir = launcher.start_training(config)
    except ReasonappError as error:
        gr.Warning(in_page_words(str(error)))
        return gr.update(), f"Not started: {in_page_words(str(error))}", output_dir
    return gr.update(choices=run_choices(), value=str(run_dir)), f"Started {run_dir}", ""


def loss_frame(points: list[tuple[int, float]]) -> pd.DataFrame:
    """Numeric dtypes even when empty: Gradio infers the axis type per update, and object means nominal."""
    return pd.DataFrame(
        {"step": pd.Series([p[0] for p in points], dtype="int64"), "loss": pd.Series([p[1] for p in points], dtype="float64")}
    )


def monitor(run_dir: str | None):
    """(status line, loss plot data, log tail, error, Stop button) for the selected run; Stop is live only while it runs."""
    if not run_dir or not readable(run_dir):
        return "Pick a run, or start one.", loss_frame([]), "", "", gr.update(interactive=False)
    if not rundir.is_run_dir(run_dir):
        return rundir.not_a_run_message(run_dir), loss_frame([]), "", "", gr.update(interactive=False)
    state = launcher.run_state(run_dir)
    total = state["total_steps"]
    line = f"{state['state']} · step {state['step']}/{total or '?'}"
    if total:
        line += f" · {state['step'] / total * 100:.0f}%"
    if state["eta_s"] is not None:
        line += f" · ETA {state['eta_s'] / 60:.1f} min"
    if state["metrics"] and state["metrics"][-1].get("tokens_per_s"):
        line += f" · {state['metrics'][-1]['tokens_per_s']:.0f} tokens/s"
    line += f" · run {Path(run_dir).name}"  # which run this is, after a reload too
    points = [(m["step"], m["loss"]) for m in state["metrics"] if m.get("loss") is not None]
    evaluation = launcher.evaluation_state(run_dir)
    error = state["error"] or (f"Evaluation failed: {evaluation['error']}" if evaluation["error"] else "")
    return line, loss_frame(points), state["log"], error, gr.update(interactive=state["state"] == "running")


def stop(run_dir: str | None) -> str:
    if not run_dir:
        return "No run selected."
    try:
        launcher.stop_training(run_dir)
    except ReasonappError as error:
        return str(error)
    return f"Stop requested: {Path(run_dir).name} saves a checkpoint and ends after its current step (Resume continues it)."


def resume(run_dir: str | None) -> str:
    if not run_dir:
        return "No run selected."
    if not rundir.is_run_dir(run_dir):
        return rundir.not_a_run_message(run_dir)
    state = launcher.run_state(run_dir)["state"]
    if state in ("running", "starting", "finished"):
        return f"{Path(run_dir).name} is {state}; nothing to resume."
    try:
        launcher.resume_training(run_dir)
    except ReasonappError as error:
        return f"Not resumed: {error}"
    return f"Resuming {Path(run_dir).name} from its last checkpoint."


def evaluation_defaults(run_dir: str | None) -> str:
    """The Evaluation dataset field for a run just picked: the dataset its training rows came from."""
    if not run_dir or not readable(run_dir) or not (Path(run_dir) / rundir.CONFIG).is_file():
        return ""
    return launcher.default_evaluation_dataset(run_dir)


def evaluate(run_dir: str | None, limit, dataset: str | None = "", split: str | None = "test") -> str:
    """Launch the evaluation of the selected run on `dataset` / `split` (empty: the run's source dataset, test)."""
    if not run_dir:
        return "No run selected."
    config = rundir.read_json(Path(run_dir) / rundir.CONFIG) or {}
    task = config.get("task")
    if task not in ("qa", "qra", "qar", "multitask") or launcher.run_state(run_dir)["state"] != "finished":
        return "Evaluate needs a finished qa, qra, qar or multitask run."
    limit = _number(limit, int, 0) or None
    dataset = (dataset or "").strip() or launcher.default_evaluation_dataset(run_dir)
    split = (split or "").strip() or "test"
    qa, qra = (run_dir, None) if task == "qa" else (None, run_dir)
    out = Path(run_dir) / f"eval-{split}"
    earlier = rundir.read_json(out / "metrics.json")  # this button evaluates the run again: the message says what it replaces
    try:
        launcher.start_evaluation(qa, qra, limit, out, dataset, split, overwrite=True)
    except ReasonappError as error:
        return f"Not evaluated: {error}"
    replacing = f" It replaces the earlier evaluation of {earlier.get('rows', '?')} rows." if isinstance(earlier, dict) else ""
    return f"Evaluating {Path(run_dir).name} on {display_name(dataset)} / {split}{f' ({limit} rows)' if limit else ''}; the report appears below when done.{replacing}"


def evaluation_view(run_dir: str | None):
    """(report markdown, confusion plot path) of the run's latest evaluation, if any; a failure's reason is in the Error box."""
    evaluation = launcher.evaluation_state(run_dir) if readable(run_dir) else {"state": None}
    if evaluation["state"] == "finished":
        out = Path(evaluation["dir"])
        confusion = out / "confusion.png"
        return html.escape((out / "report.md").read_text(), quote=False), str(confusion) if confusion.is_file() else None
    if evaluation["state"] == "running":
        return f"Evaluation running ({Path(evaluation['dir']).name})…\n\n```\n{evaluation['log']}\n```", None
    if evaluation["state"] == "failed":
        return f"Evaluation failed: the reason is in the Error box, the whole log in {Path(evaluation['dir']) / launcher.EVAL_LOG}.", None
    return "", None


def push_run(run_dir: str | None, repo_id: str, private: bool, merged: bool, oauth_token: gr.OAuthToken | None = None) -> str:
    """Push the selected run; the token is the Space login's, else HF_TOKEN or the local login."""
    from training.hub import push

    if not run_dir:
        return "No run selected."
    on_space = current_policy().on_space
    token = oauth_token.token if oauth_token else None
    if on_space and not token:  # never the Space's own HF_TOKEN: a push acts for the signed-in admin
        return "Not pushed: sign in with Hugging Face first; a push from the Space uses your own token."
    try:
        result = push(run_dir, (repo_id or "").strip(), private=private, merged=merged, token=token, new_repo_only=on_space)
    except ReasonappError as error:
        return f"Not pushed: {error}"
    return f"Pushed {len(result['files'])} files: {result['commit_url']}"

# -- a reloaded page reattaches ------------------------------------------------------------------
FORM_FIELDS = ("task", "base_model", "dataset", "limit", "epochs", "max_steps", "learning_rate", "batch_size", "lora_r", "seed")
UNDER_WAY = ("starting", "running")


def _under_way(run_dir: str) -> bool:
    """Whether the run trains or is evaluated now; status.json first, so a finished run costs one small read."""
    if launcher.evaluation_state(run_dir)["state"] == "running":
        return True
    recorded = rundir.read_json(Path(run_dir) / rundir.STATUS, {}).get("state")
    return recorded in (None, *UNDER_WAY) and launcher.run_state(run_dir)["state"] in UNDER_WAY


def run_under_way() -> str | None:
    """The run a reloaded page reattaches to: the newest whose training or evaluation is under way, else None."""
    return next((run_dir for _, run_dir in run_choices() if _under_way(run_dir)), None)


def run_form(run_dir: str) -> list:
    """The form as the run was started (its launch.yaml; a CLI run's config.json), the Run directory field empty:
    Start from there makes a new run with the same settings, never this one's directory again."""
    settings = launcher.launch_settings(run_dir) or rundir.read_json(Path(run_dir) / rundir.CONFIG, {}) or {}
    values = {**settings, "dataset": settings.get("dataset") or "", "limit": settings.get("limit") or 0}
    return [values.get(name, gr.skip()) for name in FORM_FIELDS] + [""]


def reattach_run():
    """On a page load: the run under way selected and its settings back in the form (nothing changes when none is)."""
    run_dir = run_under_way()
    if run_dir is None:
        return (gr.skip(),) * (len(FORM_FIELDS) + 3)
    message = f"Reattached to {Path(run_dir).name}, started before this page opened: its settings are in the form."
    return gr.update(choices=run_choices(), value=run_dir), *run_form(run_dir), message


def evaluation_settings(run_dir: str | None):
    """(dataset, split, rows) of the run's evaluation under way, for the Evaluation fields; unchanged when none runs."""
    evaluation = launcher.evaluation_state(run_dir) if readable(run_dir) else {"state": None}
    if evaluation["state"] != "running":
        return gr.skip(), gr.skip(), gr.skip()
    launched = launcher.evaluation_settings(evaluation["dir"])
    return launched["dataset"] or gr.skip(), launched["split"] or gr.skip(), launched["limit"]


def build_train_tab(
    default_base_model: str, demo_mode: bool = False, app_dataset: str = "", app_dataset_state: gr.State | None = None
) -> tuple[gr.Radio, gr.Textbox]:
    """The tab; returns (task, dataset field) for the app-wide dataset switch, which fills the field for qa."""
    with gr.Row():
        with gr.Column(scale=1):
            task = gr.Radio(list(TASKS), value="qa", label="Task", info="rgen: Stage 1 · qa: Q→A · qra: Q→RA · qar: Q→AR", elem_id="train-task")
            base_model = gr.Textbox(default_base_model, label="Base model", max_lines=1, elem_id="train-base-model")
            dataset = gr.Textbox(
                app_dataset, label="Dataset", max_lines=1, elem_id="train-dataset",
                placeholder="empty: the task's default; qa: the app's dataset; qra/qar: an exported augmented dataset",
            )
            with gr.Row():
                limit = gr.Number(2000, label="Sample limit (0 = all)", precision=0, minimum=0, elem_id="train-limit")
                epochs = gr.Number(1, label="Epochs", minimum=0.01, elem_id="train-epochs")
                max_steps = gr.Number(-1, label="Max steps (-1: by epochs)", precision=0, elem_id="train-max-steps")
            with gr.Row():
                learning_rate = gr.Number(2e-4, label="Learning rate", minimum=0, elem_id="train-learning-rate")
                batch_size = gr.Number(8, label="Batch size", precision=0, minimum=1, elem_id="train-batch-size")
                lora_r = gr.Number(16, label="LoRA r", precision=0, minimum=1, elem_id="train-lora-r")
                seed = gr.Number(0, label="Seed", precision=0, elem_id="train-seed")
            output_dir = gr.Textbox(
                "",
                label="Run directory",
                max_lines=1,
                placeholder="empty: a new one under workspace/runs, named by Show command or Start; a bare name goes there too",
                elem_id="train-output-dir",
            )
            with gr.Row():
                show = gr.Button("Show command", elem_id="train-show")
                begin = gr.Button(
                    "Start training" if not demo_mode else "Training is off in this demo",
                    variant="primary",
                    interactive=not demo_mode,
                    elem_id="train-start",
                )
            command = gr.Code(label="Equivalent command", language="shell", interactive=False)
            message = gr.Textbox(label="Message", interactive=False, elem_id="train-message")
        with gr.Column(scale=2):
            with gr.Row():
                run = gr.Dropdown(run_choices(), label="Run", elem_id="train-run", scale=4, allow_custom_value=True)
                refresh = gr.Button("Refresh", scale=1)
            status = gr.Textbox(label="Status", interactive=False, elem_id="train-status")
            loss = gr.LinePlot(x="step", y="loss", label="Training loss", height=260, elem_id="train-loss")
            error = gr.Textbox(label="Error", interactive=False, elem_id="train-error")
            with gr.Row():
                halt = gr.Button("Stop", variant="stop", interactive=False, elem_id="train-stop")
                again = gr.Button("Resume", elem_id="train-resume")
            with gr.Row():
                eval_dataset = gr.Textbox(
                    "",
                    label="Evaluation dataset",
                    max_lines=1,
                    placeholder="empty: the one the run's rows came from (an export's source dataset)",
                    scale=3,
                    elem_id="train-eval-dataset",
                )
                eval_split = gr.Dropdown(["test", "validation", "train"], value="test", label="Split", allow_custom_value=True, scale=1)
                eval_limit = gr.Number(200, label="Eval rows (0 = all)", precision=0, minimum=0, scale=1)
                evaluate_button = gr.Button("Evaluate", scale=1, elem_id="train-evaluate")
            log = gr.Textbox(label="Log (last lines)", lines=10, max_lines=10, interactive=False, elem_id="train-log")
            report = gr.Markdown()
            confusion = gr.Image(label="Confusion matrices", type="filepath", interactive=False)
    with gr.Accordion("Push the selected run to the Hub", open=False):
        with gr.Row():
            repo_id = gr.Textbox(label="Repo id", placeholder="user-or-org/name", max_lines=1)
            private = gr.Checkbox(label="Private", value=True)
            merged = gr.Checkbox(label="Merge the adapter into the base model", value=False)
            push = gr.Button("Push", elem_id="train-push")
        push_message = gr.Textbox(label="Push result", interactive=False)
    with gr.Accordion("Past runs", open=False):
        table = gr.Dataframe(runs_table(), interactive=False)

    if app_dataset_state is not None:
        task.input(task_dataset, [task, app_dataset_state, dataset], dataset, api_visibility="private")
    form = [task, base_model, dataset, limit, epochs, max_steps, learning_rate, batch_size, lora_r, seed, output_dir]
    show.click(show_command, form, [command, output_dir], api_name="train_show_command")
    if not demo_mode:
        begin.click(start, form, [run, message, output_dir], api_name="train_start")
    push.click(push_run, [run, repo_id, private, merged], push_message, api_name="train_push")
    lists_seen = gr.State(None)  # what this page's run list and Past runs last showed (runs_signature)
    refresh.click(lambda: refresh_run_lists(None), None, [run, table, lists_seen], api_visibility="private")
    timer = gr.Timer(2.0)
    timer.tick(refresh_run_lists, lists_seen, [run, table, lists_seen], api_visibility="private", show_progress="hidden")
    monitored = [status, loss, log, error, halt]
    timer.tick(monitor, run, monitored, api_visibility="private", show_progress="hidden")
    run.change(monitor, run, monitored, api_name="train_monitor").then(evaluation_view, run, [report, confusion], api_visibility="private")
    run.change(evaluation_defaults, run, eval_dataset, api_visibility="private").then(
        evaluation_settings, run, [eval_dataset, eval_split, eval_limit], api_visibility="private"
    )
    # a page load (a reload) reattaches to the run under way: selected, its settings back in the form
    gr.on(None, reattach_run, None, [run, *form, message], api_visibility="private")
    timer.tick(evaluation_view, run, [report, confusion], api_visibility="private", show_progress="hidden")
    log.change(None, None, None, js=SCROLL_LOG_TO_NEWEST)
    halt.click(stop, run, message, api_name="train_stop")
    if not demo_mode:
        again.click(resume, run, message, api_name="train_resume")
    evaluate_button.click(evaluate, [run, eval_limit, eval_dataset, eval_split], message, api_name="train_evaluate")
    return task, dataset
