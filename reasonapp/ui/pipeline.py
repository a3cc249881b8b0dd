"""Pipeline tab: the whole method in one click, `python -m training experiment` from a config as a job of its own.

Nothing here trains: `training.launcher.start_pipeline` writes the YAML the form shows into a new
<workspace>/jobs/pipeline-<time> and starts `experiment` there; the page reads the job's state file every two
seconds (`gr.Timer`): each stage's state, progress and time, the log tail, and at the end the evaluation report.
A reloaded page reattaches to the newest job and puts its settings back into the form. With the review pause the
job waits after Stage 2 until the store is reviewed and Continue is clicked. The experiment runs on the page's
dataset (the app-wide Dataset switch); on the dataset the app opened on, the config's own.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import gradio as gr
import pandas as pd
import yaml

from reasonapp import settings
from reasonapp.errors import ConfigError, ReasonappError
from reasonapp.ui.access import readable
from reasonapp.ui.compare import paired_evaluation_view
from reasonapp.ui.run_lists import refresh_job_list
from training import launcher
from training.experiment import DEFAULTS, experiment_config_from_mapping

CONFIGS = settings.PROJECT_ROOT / "configs"
DEFAULT_CONFIG = "cpu-small"
TRAINED = ("rgen", "qa", "qra")
STAGE_COLUMNS = ["stage", "state", "progress", "started", "time (s)"]
POLL_SECONDS = 2.0
REVIEW_HOW = (
    "Review them in the Review tab: choose this store in its Store list (marked awaiting review), accept or edit the "
    "good ones, then click Continue: Q→RA trains on the accepted and edited rows only."
)


def config_choices() -> list[str]:
    """The experiment configs shipped in configs/ (not the comparison ones), by name."""
    names = []
    for path in sorted(CONFIGS.glob("*.yaml")):
        values = yaml.safe_load(path.read_text()) or {}
        if isinstance(values, dict) and set(values) <= set(DEFAULTS):
            names.append(path.stem)
    return names


def read_config_file(name: str | None) -> dict:
    """A shipped config's settings as written (what the form starts from)."""
    if (name or "") not in config_choices():
        raise ConfigError(f"no experiment config {name!r} in configs/; choose one of {config_choices()}")
    return yaml.safe_load((CONFIGS / f"{name}.yaml").read_text()) or {}


def _section(values: dict, name: str) -> dict:
    return values.get(name) or {}


def form_values(values: dict) -> tuple:
    """(base model, n_train, R-Gen rows, R-Gen epochs, epochs, max steps, evaluation rows, review) of a config's settings."""
    steps = {_section(values, stage).get("max_steps", -1) for stage in TRAINED}
    return (
        values.get("base_model", DEFAULTS["base_model"]),
        values.get("n_train", DEFAULTS["n_train"]),
        _section(values, "rgen").get("limit") or 0,
        _section(values, "rgen").get("epochs", 1),
        _section(values, "qa").get("epochs", 1),
        steps.pop() if len(steps) == 1 else -1,
        _section(values, "evaluate").get("limit") or 0,
        bool(values.get("review", False)),
    )


def _whole(value, what: str) -> int:
    if value in (None, "") or float(value) != int(float(value)):
        raise ConfigError(f"{what} must be a whole number, got {value!r}")
    return int(float(value))


def pipeline_dataset(page_dataset: str | None, home_dataset: str | None) -> str | None:
    """The dataset the experiment runs on: the page's, once switched away from the one the app opened on (None: the config's own)."""
    page_dataset = (page_dataset or "").strip()
    return page_dataset if page_dataset and page_dataset != (home_dataset or "").strip() else None


def build_pipeline_config(
    name, base_model, n_train, rgen_rows, rgen_epochs, epochs, max_steps, eval_rows, review, dataset: str | None = None
) -> dict:
    """The chosen config with the form's sizes in it, on `dataset` when given: only what the form changed differs from the file."""
    values = copy.deepcopy(read_config_file(name))
    if dataset:
        values["dataset"] = dataset
    if (base_model or "").strip():
        values["base_model"] = base_model.strip()
    values["n_train"] = _whole(n_train, "n_train")
    sections = {stage: dict(_section(values, stage)) for stage in (*TRAINED, "evaluate")}
    rows = _whole(rgen_rows or 0, "R-Gen rows")
    if rows > 0:
        sections["rgen"]["limit"] = rows
    else:
        sections["rgen"].pop("limit", None)
    for stage, wanted in (("rgen", rgen_epochs), ("qa", epochs), ("qra", epochs)):
        if wanted not in (None, "") and float(sections[stage].get("epochs", 1)) != float(wanted):
            sections[stage]["epochs"] = float(wanted)
    steps = _whole(max_steps if max_steps not in (None, "") else -1, "max steps")
    for stage in TRAINED:
        if steps > 0:
            sections[stage]["max_steps"] = steps
        else:
            sections[stage].pop("max_steps", None)
    limit = _whole(eval_rows or 0, "evaluation rows")
    sections["evaluate"]["limit"] = limit if limit > 0 else None
    values.update({stage: section for stage, section in sections.items() if section or stage in values})
    if review or "review" in values:
        values["review"] = bool(review)
    return values


def _on_dataset(values: dict, page_dataset: str | None, home_dataset: str | None) -> dict:
    dataset = pipeline_dataset(page_dataset, home_dataset)
    return {**values, "dataset": dataset} if dataset else values


def pipeline_form(name: str | None, page_dataset: str | None = None, home_dataset: str | None = None):
    """A config picked: its settings in the form, and its YAML (on the page's dataset)."""
    try:
        values = read_config_file(name)
    except ReasonappError as error:
        return (*(gr.skip() for _ in range(8)), f"# {error}")
    return (*form_values(values), yaml.safe_dump(_on_dataset(values, page_dataset, home_dataset), sort_keys=False))


def pipeline_yaml(
    name, base_model, n_train, rgen_rows, rgen_epochs, epochs, max_steps, eval_rows, review, page_dataset=None, home_dataset=None
) -> str:
    """The YAML Start would run (on the page's dataset), or what is wrong with the form (as Start would refuse it)."""
    try:
        dataset = pipeline_dataset(page_dataset, home_dataset)
        values = build_pipeline_config(name, base_model, n_train, rgen_rows, rgen_epochs, epochs, max_steps, eval_rows, review, dataset)
        experiment_config_from_mapping(values)
        return yaml.safe_dump(values, sort_keys=False)
    except (ReasonappError, ValueError) as error:
        return f"# {error}"


def _demo_refusal() -> str | None:
    from reasonapp.ui.app import demo_mode

    return "Not started: training is off in this demo (REASONAPP_DEMO=1)." if demo_mode() else None


def pipeline_start(
    name, base_model, n_train, rgen_rows, rgen_epochs, epochs, max_steps, eval_rows, review, page_dataset=None, home_dataset=None
):
    """(job list, message): check the form's config and launch the experiment on it (on the page's dataset) as a job."""
    refused = _demo_refusal()
    if refused:
        return gr.update(), refused
    try:
        dataset = pipeline_dataset(page_dataset, home_dataset)
        config = build_pipeline_config(name, base_model, n_train, rgen_rows, rgen_epochs, epochs, max_steps, eval_rows, review, dataset)
        job_dir = launcher.start_pipeline(config)
    except (ReasonappError, ValueError) as error:
        return gr.update(), f"Not started: {error}"
    return gr.update(choices=launcher.pipeline_jobs(), value=str(job_dir)), f"Started {job_dir.name}: the stages below show how it goes."


def _act(action, job: str | None, done: str) -> str:
    if not job:
        return "Pick a pipeline job first."
    if not launcher.is_workspace_job(job, launcher.PIPELINE_CONFIG):
        return "Not a pipeline job of this workspace: pick one from the list."  # a typed path acts on nothing
    refused = _demo_refusal() if action is not launcher.stop_pipeline else None
    if refused:
        return refused
    try:
        action(job)
    except ReasonappError as error:
        return str(error)
    return f"{Path(job).name}: {done}"


def pipeline_stop(job: str | None) -> str:
    return _act(launcher.stop_pipeline, job, "stop requested; a training stage ends at its next checkpoint, Stage 2 after its batch. Resume goes on from there.")


def pipeline_resume(job: str | None) -> str:
    return _act(launcher.resume_pipeline, job, "resumed; finished stages are skipped.")


def pipeline_continue(job: str | None) -> str:
    return _act(launcher.continue_pipeline, job, "continued: the reviewed rows are exported and Q→RA trains on them.")


def _clock(stamp) -> str:
    return time.strftime("%H:%M:%S", time.localtime(stamp)) if stamp else ""


def stages_table(state: dict) -> pd.DataFrame:
    rows = [
        [stage.get("label", stage["stage"]), stage["state"] + (" (cached)" if stage.get("cached") else ""), stage.get("progress", ""),
         _clock(stage.get("started")), f"{stage['wall_s']:.1f}" if stage.get("wall_s") is not None else ""]
        for stage in state["stages"]
    ]
    return pd.DataFrame(rows, columns=STAGE_COLUMNS)


def state_line(state: dict) -> str:
    line = f"{Path(state['dir']).name}: {state['state']}"
    if state["stopping"]:
        line += " (stopping)"
    if state["state"] == "awaiting-review":
        line += f". Stage 2 is done: its reasonings are in {state['review_store']}. " + REVIEW_HOW.format(store=state["review_store"])
    elif state["error"]:
        line += f": {state['error']}"
    elif state["state"] == "finished":
        line += f" · the stages took {sum(stage.get('wall_s') or 0 for stage in state['stages']):.0f} s"
    return line


def pipeline_view(job: str | None):
    """(state line, stages table, log tail, report, confusion matrices) of a job."""
    if not job:
        return "No pipeline job yet: pick a config and click Start.", pd.DataFrame(columns=STAGE_COLUMNS), "", "", None
    if not readable(job) or not (Path(job) / launcher.PIPELINE_CONFIG).is_file():
        return "Not a pipeline job of this workspace: pick one from the list.", pd.DataFrame(columns=STAGE_COLUMNS), "", "", None
    state = launcher.pipeline_state(job)
    report, confusion = "", None
    if state["report"]:
        _, report, confusion, _ = paired_evaluation_view(state["report"])  # the evaluation folder, as the Compare tab shows it
    return state_line(state), stages_table(state), state["log"], report, confusion


def pipeline_poll(job: str | None, seen):
    """Timer handler: the view, sent again only when the job's state, stages or log changed since `seen`."""
    state = launcher.pipeline_state(job) if job and readable(job) and (Path(job) / launcher.PIPELINE_CONFIG).is_file() else None
    current = (job, repr(state and {key: value for key, value in state.items() if key != "stages"}),
               repr(state and [(s["state"], s.get("progress"), s.get("wall_s") is not None) for s in state["stages"]]))
    if state and state["state"] == "running":
        current += (int(time.time() // 10),)  # a running stage's time moves on
    if current == seen:
        return (*(gr.skip() for _ in range(5)), seen)
    return (*pipeline_view(job), current)


# Timer handler: the pipeline job list, a job launched here or from another page selected.
refresh_pipeline_jobs = refresh_job_list(launcher.pipeline_jobs)


def pipeline_reattach(page_dataset: str | None = None, home_dataset: str | None = None):
    """Page load: the newest job selected, and its settings back in the form (config, sizes, review pause); the YAML
    is the job's, on the page's dataset once the page is switched away from the app's."""
    jobs = launcher.pipeline_jobs()
    if not jobs:
        return (gr.update(choices=[], value=None), *(gr.skip() for _ in range(10)))
    values = launcher.pipeline_settings(jobs[0])
    name = values.get("name") if values.get("name") in config_choices() else gr.skip()
    shown = yaml.safe_dump(_on_dataset(values, page_dataset, home_dataset), sort_keys=False)
    return (gr.update(choices=jobs, value=jobs[0]), name, *form_values(values), shown)


def build_pipeline_tab(
    blocks: gr.Blocks,
    default_base_model: str | None = None,
    default_config: str = DEFAULT_CONFIG,
    demo_mode: bool = False,
    app_dataset: str | None = None,
    app_dataset_state: gr.State | None = None,
) -> None:
    """The tab inside `blocks` (whose page load reattaches it to the newest job); Start, Resume and Continue are off in the demo.

    With `app_dataset_state` (the page's dataset, which the app opened on `app_dataset`) the experiment follows the
    app-wide Dataset switch: the YAML shown and started names the page's dataset, or the config's own on `app_dataset`."""
    choices = config_choices()
    start_values = read_config_file(default_config) if default_config in choices else {}
    if default_base_model and start_values:
        start_values = {**start_values, "base_model": default_base_model}
    base, n_train_value, rgen_rows_value, rgen_epochs_value, epochs_value, steps_value, eval_rows_value, review_value = form_values(start_values)
    gr.Markdown(
        "The whole method from one config (`python -m training experiment`): R-Gen, Stage 2, Q→A, Q→RA and their evaluation, "
        "each stage cached by its settings under `workspace/experiments/<name>`. It runs as its own process: close or reload "
        "the page at will. Stop ends a training stage at a checkpoint and Stage 2 after its batch; Resume skips what is done."
    )
    with gr.Row():
        with gr.Column(scale=1):
            config = gr.Dropdown(choices, value=default_config if default_config in choices else None, label="Config", allow_custom_value=True, elem_id="pipeline-config")
            base_model = gr.Textbox(base, label="Base model", max_lines=1, elem_id="pipeline-base-model")
            with gr.Row():
                n_train = gr.Number(n_train_value, label="Training rows (n_train)", precision=0, minimum=1, elem_id="pipeline-n-train")
                rgen_rows = gr.Number(rgen_rows_value, label="R-Gen rows (0 = all)", precision=0, minimum=0, elem_id="pipeline-rgen-rows")
                eval_rows = gr.Number(eval_rows_value, label="Evaluation rows (0 = all)", precision=0, minimum=0, elem_id="pipeline-eval-rows")
            with gr.Row():
                rgen_epochs = gr.Number(rgen_epochs_value, label="R-Gen epochs", minimum=0.01, elem_id="pipeline-rgen-epochs")
                epochs = gr.Number(epochs_value, label="Q→A / Q→RA epochs", minimum=0.01, elem_id="pipeline-epochs")
                max_steps = gr.Number(steps_value, label="Max steps (-1: by epochs)", precision=0, elem_id="pipeline-max-steps")
            review = gr.Checkbox(review_value, label="Pause after Stage 2 for review; Continue trains Q→RA on the reviewed rows", elem_id="pipeline-review")
            shown = yaml.safe_dump(start_values, sort_keys=False) if start_values else ""
            config_yaml = gr.Code(shown, label="The config Start runs", language="yaml", interactive=False, elem_id="pipeline-yaml")
            with gr.Row():
                begin = gr.Button("Start" if not demo_mode else "Off in this demo", variant="primary", interactive=not demo_mode, elem_id="pipeline-start")
                halt = gr.Button("Stop", variant="stop", elem_id="pipeline-stop")
                again = gr.Button("Resume", interactive=not demo_mode, elem_id="pipeline-resume")
                onward = gr.Button("Continue", interactive=not demo_mode, elem_id="pipeline-continue")
            message = gr.Textbox(label="Message", interactive=False, elem_id="pipeline-message")
        with gr.Column(scale=2):
            jobs = launcher.pipeline_jobs()
            job = gr.Dropdown(jobs, value=jobs[0] if jobs else None, label="Pipeline job", allow_custom_value=True, elem_id="pipeline-job")
            state = gr.Textbox(label="State", interactive=False, lines=2, elem_id="pipeline-state")
            stages = gr.Dataframe(pd.DataFrame(columns=STAGE_COLUMNS), interactive=False, elem_id="pipeline-stages")
            log = gr.Textbox(label="Log (last lines)", lines=12, max_lines=12, interactive=False, elem_id="pipeline-log")
            report = gr.Markdown(elem_id="pipeline-report")
            confusion = gr.Image(label="Confusion matrices", type="filepath", interactive=False)

    form = [config, base_model, n_train, rgen_rows, rgen_epochs, epochs, max_steps, eval_rows, review]
    sizes = form[1:]
    page = [app_dataset_state, gr.State(app_dataset)] if app_dataset_state is not None else []  # the page's dataset, the app's
    config.input(pipeline_form, [config, *page], [*sizes, config_yaml], api_visibility="private")
    for field in sizes:
        field.change(pipeline_yaml, [*form, *page], config_yaml, api_visibility="private", show_progress="hidden")
    if app_dataset_state is not None:  # a switch (or a reload that restores one) names the page's dataset in the YAML
        app_dataset_state.change(pipeline_yaml, [*form, *page], config_yaml, api_visibility="private", show_progress="hidden")
    if not demo_mode:
        begin.click(pipeline_start, [*form, *page], [job, message], api_name="pipeline_start")
        again.click(pipeline_resume, job, message, api_name="pipeline_resume")
        onward.click(pipeline_continue, job, message, api_name="pipeline_continue")
    halt.click(pipeline_stop, job, message, api_name="pipeline_stop")
    view = [state, stages, log, report, confusion]
    job.change(pipeline_view, job, view, api_name="pipeline_state")
    seen, jobs_seen = gr.State(None), gr.State(None)
    timer = gr.Timer(POLL_SECONDS)
    timer.tick(refresh_pipeline_jobs, jobs_seen, [job, jobs_seen], api_visibility="private", show_progress="hidden")
    timer.tick(pipeline_poll, [job, seen], [*view, seen], api_visibility="private", show_progress="hidden")
    reattached = blocks.load(pipeline_reattach, page or None, [job, config, *sizes, config_yaml], api_visibility="private")
    if app_dataset_state is not None:  # the YAML again on the page's dataset as it is now: a restored choice may have landed first
        reattached.then(pipeline_yaml, [*form, *page], config_yaml, api_visibility="private", show_progress="hidden")
