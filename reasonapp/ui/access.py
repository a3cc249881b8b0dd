"""Access in the page: every handler runs only for a caller whose role allows its action.

`enforce_access` wraps every handler of the built app once (like `guard_handlers`), so no endpoint is
left open by accident: each handler is classified in `HANDLER_ACTIONS` by its qualified name, an
unclassified one is refused, and the caller (signed-in Hugging Face user or anonymous) is read from the
request's OAuth session on the server, whatever the page shows. Handlers ask `current_caller()` and
`reviewer_name()` who they act for.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
from collections.abc import Callable
from pathlib import Path

import gradio as gr

from reasonapp.access import ADMIN, AccessDenied, Caller, Policy, RateLimiter, clean_name

# Every handler the app registers, by the action it performs (reasonapp.access.ACTIONS).
HANDLER_ACTIONS = {
    # Train tab
    "show_command": "read",
    "monitor": "read",
    "evaluation_view": "read",
    "evaluation_defaults": "read",
    "start": "train",
    "stop": "train",
    "resume": "train",
    "evaluate": "evaluate",
    "push_run": "push",
    # Train tab: a reloaded page reattaches to the run under way
    "reattach_run": "read",
    "evaluation_settings": "read",
    # Review tab
    "ReviewHandlers.load_queue": "read",
    "ReviewHandlers.quality_overview": "read",
    "ReviewHandlers.dataset_changed": "read",
    "ReviewHandlers.sync_status": "read",
    "ReviewHandlers.skip": "read",
    "ReviewHandlers.bulk_preview": "read",
    "ReviewHandlers.accept": "review",
    "ReviewHandlers.save_edit": "review",
    "ReviewHandlers.reject": "review",
    "ReviewHandlers.undo": "review",
    "ReviewHandlers.regenerate": "review",
    "ReviewHandlers.bulk_accept": "review",
    "ReviewHandlers.export": "export",
    "ReviewHandlers.agreement": "read",  # team review: the team's figures, no one's single decisions
    "ReviewHandlers.disputes": "resolve",  # the reviewers' decisions side by side: admins only
    "ReviewHandlers.next_dispute": "resolve",
    "ReviewHandlers.pick_version": "resolve",
    "ReviewHandlers.resolve": "resolve",
    "ReviewHandlers.resolve_reject": "resolve",
    "ReviewHandlers.stage2_start": "generate",  # Stage 2 as a job: admins
    "ReviewHandlers.stage2_stop": "generate",
    "ReviewHandlers.stage2_resume": "generate",
    "ReviewHandlers.stage2_state": "read",
    "ReviewHandlers.stage2_reattach": "read",
    # Review tab, Store list: which store a page reviews (the app's or a listed experiment store)
    "ReviewHandlers.choose_store": "read",
    # Review tab, Stage 2 panel: the job list keeps itself current
    "refresh_job_list.<locals>.tick": "read",  # job lists that keep themselves current (Stage 2, pipeline)
    # Compare tab
    "CompareHandlers.predict": "predict",
    "CompareHandlers.predict_file": "predict",
    "CompareHandlers.preload": "read",  # loads only runs the caller may pick (resolve_run), once per pair
    "refresh_compare_lists": "read",
    "comparison_report": "read",
    "disagreements": "read",
    "start_paired_evaluation": "evaluate",
    "paired_evaluation_view": "read",
    "paired_evaluation_defaults": "read",
    "poll_paired_evaluation": "read",
    "refresh_paired_evaluations": "read",
    # Compare tab: a reloaded page reattaches to the paired evaluation under way
    "reattach_paired_evaluation": "read",
    "running_evaluation_settings": "read",
    # Datasets tab and the app-wide dataset switch
    "read_dataset": "import",  # reads an upload or a server directory: admins
    "inspect_dataset": "import",
    "save_dataset": "import",
    "suggested_name": "import",  # the Name field follows the upload: part of reading it
    "DatasetSwitch.switch": "read",  # a listed dataset for anyone; a typed Hub id or directory for admins only
    "DatasetSwitch.restore": "read",  # page load: this browser's last choice, through DatasetSwitch.switch (same checks)
    "task_dataset": "read",  # the Train tab's Dataset field follows the task and the app's dataset
    # Pipeline tab: the whole method as one job (starting, stopping, resuming or continuing it trains: admins)
    "pipeline_form": "read",
    "pipeline_yaml": "read",
    "pipeline_view": "read",
    "pipeline_poll": "read",
    "pipeline_reattach": "read",
    "pipeline_start": "train",
    "pipeline_stop": "train",
    "pipeline_resume": "train",
    "pipeline_continue": "train",
    # the app and Gradio's own
    "who_is_here": "read",
    "refresh_on_change.<locals>.tick": "read",  # run lists that keep themselves current
    "Examples.create.<locals>.load_example": "read",
    "LoginButton._check_login_status": "read",  # the sign-in button's own check (on a Space)
}
# Lambdas only show or hide parts of the page (a confirmation box, a refresh): reads, named by where they are built.
READ_ONLY_LAMBDAS = ("build_train_tab.<locals>.<lambda>", "build_review_tab.<locals>.<lambda>", "build_compare_tab.<locals>.<lambda>")

_caller: contextvars.ContextVar[Caller | None] = contextvars.ContextVar("reasonapp_caller", default=None)
_policy: contextvars.ContextVar[Policy | None] = contextvars.ContextVar("reasonapp_policy", default=None)


def current_caller() -> Caller:
    """Who the running handler acts for (set by the access wrapper from the request)."""
    return _caller.get() or Caller()


def current_policy() -> Policy:
    """The policy of the app handling this call; outside a call (a handler called directly), the open local one."""
    return _policy.get() or Policy()


def reviewer_name(typed: str | None) -> str:
    """The name a decision is stored under: the signed-in user's; locally, the typed name, cleaned and bounded."""
    caller = current_caller()
    return caller.username if caller.signed_in else clean_name(typed)


def readable(path: str | None) -> bool:
    """Whether the caller may read files of this folder: an admin any, anyone else the workspace's only
    (a free-text run or evaluation field must not show report.md or a log tail from elsewhere on the server)."""
    if not path:
        return False
    from reasonapp import settings

    if current_policy().role(current_caller()) == ADMIN:
        return True
    return Path(path).resolve().is_relative_to(settings.workspace_dir().resolve())


def caller_from_request(request: gr.Request | None) -> Caller:
    """The signed-in Hugging Face user of this request's OAuth session (Gradio keeps it server-side), else anonymous."""
    underlying = getattr(request, "request", None) or request
    scope = getattr(underlying, "scope", None)
    session = scope.get("session", {}) if isinstance(scope, dict) else (getattr(underlying, "session", None) or {})
    info = session.get("oauth_info") if isinstance(session, dict) else None
    userinfo = (info or {}).get("userinfo") or {}
    username = userinfo.get("preferred_username")
    if not username:
        return Caller()
    orgs = tuple(str(org.get("preferred_username") or org.get("name")) for org in userinfo.get("orgs") or [] if isinstance(org, dict))
    return Caller(username=str(username), orgs=orgs, token=info.get("access_token"))


def _client_key(request: gr.Request | None, on_space: bool = False) -> str:
    """Who a visitor's predictions count against: the connecting host; on a Space, where every visitor connects through
    its proxy, the address that proxy appends to X-Forwarded-For (the last entry: what a client writes there comes
    before it, so a client cannot choose its own key)."""
    if on_space:
        headers = getattr(request, "headers", None) or {}
        forwarded = [part.strip() for part in str(headers.get("x-forwarded-for", "")).split(",") if part.strip()]
        if forwarded:
            return forwarded[-1]
    client = getattr(request, "client", None)
    return getattr(client, "host", None) or "unknown"


def action_of(fn: Callable) -> str | None:
    name = getattr(inspect.unwrap(fn), "__qualname__", "")
    if name in HANDLER_ACTIONS:
        return HANDLER_ACTIONS[name]
    return "read" if name in READ_ONLY_LAMBDAS else None


def _with_request_parameter(fn: Callable, wrapper: Callable) -> int:
    """Give `wrapper` the signature of `fn` plus a gr.Request parameter, which Gradio fills from the call.

    It goes after the last positional parameter (before a `*args`), where Gradio inserts it among the inputs;
    returns that position.
    """
    signature = inspect.signature(fn)
    extra = inspect.Parameter("_reasonapp_request", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None, annotation=gr.Request)
    parameters = list(signature.parameters.values())
    position = next((i for i, p in enumerate(parameters) if p.kind not in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)), len(parameters))
    if any(p.default is not p.empty for p in parameters[:position]) and position < len(parameters):
        raise TypeError(f"{fn.__qualname__}: defaults before *args cannot take the request parameter")
    parameters.insert(position, extra.replace(default=inspect.Parameter.empty) if position < len(parameters) else extra)
    wrapper.__signature__ = signature.replace(parameters=parameters)
    wrapper.__annotations__ = {**getattr(fn, "__annotations__", {}), "_reasonapp_request": gr.Request}
    return position


def restrict(fn: Callable, action: str | None, policy: Policy, limiter: RateLimiter) -> Callable:
    """`fn` run only when the caller may perform `action`; the caller and policy are visible to it meanwhile."""
    position = 0

    def admit(args: tuple) -> tuple[tuple, Caller]:
        at = min(position, len(args) - 1)  # Gradio inserts the request there, or appends it to fewer inputs
        request, args = (args[at], args[:at] + args[at + 1 :]) if args else (None, args)
        caller = caller_from_request(request)
        if action is None:
            name = getattr(inspect.unwrap(fn), "__qualname__", "?")
            raise gr.Error(f"This action ({name}) is not open to callers of the app's API.", print_exception=False)
        try:
            role = policy.check(caller, action)
            if action == "predict" and role != ADMIN and not policy.open:
                limiter.check(caller.username or _client_key(request, policy.on_space))
        except AccessDenied as denied:
            raise gr.Error(str(denied), print_exception=False) from None
        return args, caller

    def act_for(caller: Caller) -> None:
        # Each handler call (each step of a streaming one) runs in a context of its own that Gradio copies for its
        # worker thread; setting the caller there at every entry means no call ever sees another's.
        _caller.set(caller)
        _policy.set(policy)

    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def restricted_generator(*args):
            args, caller = admit(args)
            act_for(caller)
            steps = fn(*args)
            while True:
                act_for(caller)  # a streaming handler's steps may each run in another thread's context
                try:
                    value = next(steps)
                except StopIteration:
                    return
                yield value

        wrapper = restricted_generator
    else:

        @functools.wraps(fn)
        def restricted(*args):
            args, caller = admit(args)
            act_for(caller)
            return fn(*args)

        wrapper = restricted
    position = _with_request_parameter(fn, wrapper)
    wrapper.reasonapp_restricted = True
    return wrapper


def enforce_access(blocks: gr.Blocks, policy: Policy | None = None, limiter: RateLimiter | None = None) -> Policy:
    """Wrap every Python handler of `blocks` with the role check of its action; returns the policy in force."""
    policy = policy or Policy.from_environment()
    limiter = limiter or RateLimiter()
    for block_fn in blocks.fns.values():
        if block_fn.fn is None or inspect.iscoroutinefunction(block_fn.fn) or getattr(block_fn.fn, "reasonapp_restricted", False):
            continue
        block_fn.fn = restrict(block_fn.fn, action_of(block_fn.fn), policy, limiter)
    return policy


def who_is_here() -> str:
    """The header line: who the page acts for, and what they may do."""
    policy, caller = current_policy(), current_caller()
    if policy.open:
        return "Local workbench: no roles are set, so you may do everything."
    role = policy.role(caller)
    if not caller.signed_in:
        return "Not signed in: you can read the queue, reports and predictions. Sign in with Hugging Face to review."
    can = {"admin": "train, generate, evaluate, export, push, review and resolve", "reviewer": "review", "visitor": "read only"}[role]
    return f"Signed in as **{caller.username}** ({role}: {can})."
