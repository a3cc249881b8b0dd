"""Who may do what on a Space: every public endpoint called as an admin, a reviewer, a signed-in stranger and an
anonymous visitor, through gradio_client against the app served with SPACE_ID and OAuth settings, as on a Space."""

import base64
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import pytest

from reasonapp.access import ADMIN, REVIEWER, VISITOR, AccessDenied, Caller, Policy, RateLimiter, clean_name
from reasonapp.store import ReasoningStore
from tests.hub_standin import HubStandIn
from tests.ui_helpers import free_port, start_app_process

ROOT = Path(__file__).resolve().parents[1]
LABELS = ["sadness", "joy", "love", "anger", "fear", "surprise"]
OAUTH_SECRET = "test-oauth-client-secret"
FILTERS = ["pending", "all", "", 0, 0, "any", "in order"]


# -- the policy, as a specification --------------------------------------------------------------


def test_roles_come_from_user_names_and_orgs_and_anyone_else_only_reads():
    policy = Policy(admins=(frozenset({"alice"}), frozenset()), reviewers=(frozenset({"bob"}), frozenset({"reviewteam"})), on_space=True)
    assert policy.role(Caller("Alice")) == ADMIN
    assert policy.role(Caller("bob")) == REVIEWER and policy.role(Caller("dan", orgs=("ReviewTeam",))) == REVIEWER
    assert policy.role(Caller("carol")) == VISITOR and policy.role(Caller()) == VISITOR
    with pytest.raises(AccessDenied, match="needs the reviewer role; you are not signed in: sign in with Hugging Face"):
        policy.check(Caller(), "review")
    with pytest.raises(AccessDenied, match="signed in as carol .*REASONAPP_REVIEWERS"):
        policy.check(Caller("carol"), "review")
    assert policy.check(Caller(), "predict") == VISITOR


def test_locally_without_roles_the_single_user_may_do_everything_but_on_a_space_anonymous_may_not():
    assert Policy().role(Caller()) == ADMIN
    assert Policy(on_space=True).role(Caller()) == VISITOR
    assert Policy(admins=(frozenset({"alice"}), frozenset())).role(Caller()) == VISITOR  # roles set locally: they apply


def test_reviewer_names_are_one_bounded_printable_line():
    name = clean_name("<script>alert(1)</script>\x00" + "x" * 20_000)
    assert len(name) == 64 and "<" not in name and "\x00" not in name
    assert clean_name("  ann\n lee ") == "ann lee" and clean_name("", "anonymous") == "anonymous"


def test_visitors_predictions_are_rate_limited():
    limiter = RateLimiter(limit=3, window_s=60)
    for _ in range(3):
        limiter.check("1.2.3.4")
    with pytest.raises(AccessDenied, match="too many predictions"):
        limiter.check("1.2.3.4")
    limiter.check("5.6.7.8")


def test_every_handler_of_the_app_is_classified_on_a_space_too(shared_data, monkeypatch):
    from reasonapp.ui.access import action_of
    from reasonapp.ui.app import build_app

    space_env = {"SYSTEM": "spaces", "SPACE_ID": "team/reasonapp", "OAUTH_CLIENT_ID": "client-id", "OAUTH_CLIENT_SECRET": OAUTH_SECRET,
                 "OPENID_PROVIDER_URL": "http://127.0.0.1:9", "OAUTH_SCOPES": "openid profile write-repos"}
    for name, value in space_env.items():
        monkeypatch.setenv(name, value)  # the sign-in button brings handlers of its own
        if name.startswith(("OAUTH", "OPENID")):  # gradio.oauth read these when it was imported
            monkeypatch.setattr(f"gradio.oauth.{name}", value)
    app = build_app()
    assert any(getattr(block_fn.fn, "__qualname__", "").startswith("LoginButton") for block_fn in app.fns.values())
    unclassified = [block_fn.name for block_fn in app.fns.values() if block_fn.fn is not None and action_of(block_fn.fn) is None]
    assert unclassified == []


# -- the app as a Space: a signed-in session is the cookie Gradio's OAuth sets -------------------


def session_cookie(username: str, token: str, orgs=()) -> str:
    """The `session` cookie Starlette's SessionMiddleware reads, signed with the key Gradio derives for OAuth."""
    import itsdangerous

    session = {"oauth_info": {"access_token": token, "scope": "openid profile write-repos", "expires_at": int(time.time()) + 3600,
                              "userinfo": {"preferred_username": username, "name": username, "profile": "", "picture": "",
                                           "orgs": [{"preferred_username": org} for org in orgs]}}}
    secret = hashlib.sha256((OAUTH_SECRET + "-v4").encode()).hexdigest()
    data = base64.b64encode(json.dumps(session).encode())
    return "session=" + itsdangerous.TimestampSigner(secret).sign(data).decode()


@pytest.fixture(scope="module")
def space(tmp_path_factory, shared_data):
    """The app served in its own process with a Space's environment, a review store, and a Hub stand-in."""
    from tests.test_hub import FAKE_TOKEN

    root = tmp_path_factory.mktemp("space")
    store = ReasoningStore(root / "store.sqlite")
    store.add_examples("dair-ai/emotion", "train", [(i, f"i feel so happy today {i}", "joy") for i in range(6)], LABELS)
    store.write_generated(((i, f"Feeling happy today {i} shows joy.") for i in store.ids_needing_reasoning("dair-ai/emotion", "train")), {"rgen_run": "r"})
    store.close()
    port = free_port()
    with HubStandIn(FAKE_TOKEN) as hub:  # it accepts the admin's OAuth token only: the server's HF_TOKEN would get 401
        env = {
            **os.environ, "SYSTEM": "spaces", "SPACE_ID": "team/reasonapp", "OAUTH_CLIENT_ID": "client-id", "OAUTH_CLIENT_SECRET": OAUTH_SECRET,
            "OPENID_PROVIDER_URL": "http://127.0.0.1:9", "OAUTH_SCOPES": "openid profile write-repos",
            "REASONAPP_ADMINS": "alice", "REASONAPP_REVIEWERS": "bob,org:reviewteam",
            "REASONAPP_WORKSPACE": str(root / "workspace"), "REASONAPP_STORE": str(root / "store.sqlite"),
            "HF_ENDPOINT": hub.endpoint, "HF_HUB_OFFLINE": "0", "HF_TOKEN": "hf_server_token_never_used_for_a_push",
            "HF_HOME": str(root / "hf-home"), "GRADIO_SERVER_PORT": str(port),
        }
        code = "from reasonapp.ui.app import build_app, launch_settings; build_app().queue().launch(server_name='127.0.0.1', **launch_settings())"
        process = start_app_process([sys.executable, "-c", code], env, port)
        try:
            yield {"url": f"http://127.0.0.1:{port}/", "store": root / "store.sqlite", "hub": hub, "workspace": root / "workspace"}
        finally:
            process.terminate()
            process.wait(timeout=30)


def client(space, user=None, orgs=()):
    from gradio_client import Client

    headers = {"Cookie": session_cookie(user, f"oauth-token-of-{user}", orgs)} if user else None
    return Client(space["url"], verbose=False, headers=headers)


def refused(call, said: str) -> None:
    with pytest.raises(Exception) as error:
        call()
    assert said in str(error.value), str(error.value)


@pytest.mark.slow
def test_an_anonymous_caller_reads_but_every_write_is_refused(space):
    anonymous = client(space)
    queue = anonymous.predict(*FILTERS, api_name="/review_queue")
    assert queue[7] == "6 rows match"
    not_signed_in = "you are not signed in: sign in with Hugging Face"
    refused(lambda: anonymous.predict("mine now", "mallory", api_name="/review_accept"), not_signed_in)
    refused(lambda: anonymous.predict("mallory", *FILTERS, api_name="/review_bulk_accept"), not_signed_in)
    refused(lambda: anonymous.predict("", "mallory", api_name="/review_undo"), not_signed_in)
    refused(lambda: anonymous.predict("stolen", True, "keep-all", "remove", api_name="/review_export"), not_signed_in)
    refused(lambda: anonymous.predict(str(space["workspace"]), "mallory/stolen", False, False, api_name="/train_push"), not_signed_in)
    refused(lambda: anonymous.predict(None, api_name="/train_stop"), not_signed_in)
    refused(lambda: anonymous.predict(None, api_name="/train_resume"), not_signed_in)
    refused(lambda: anonymous.predict(None, 10, "", "test", api_name="/train_evaluate"), not_signed_in)
    refused(lambda: anonymous.predict(None, None, "", "test", 10, api_name="/compare_evaluate"), not_signed_in)
    refused(lambda: anonymous.predict("base:x", "default", "", "train", 8, "greedy", 2, 2, api_name="/review_stage2_start"), not_signed_in)
    refused(lambda: anonymous.predict(None, api_name="/review_stage2_stop"), not_signed_in)
    refused(lambda: anonymous.predict(None, api_name="/review_stage2_resume"), not_signed_in)
    assert "No Stage 2 job yet" in anonymous.predict(None, api_name="/review_stage2_state")  # reading is open
    info = anonymous.view_api(return_format="dict", print_info=False)
    start_arguments = [p.get("parameter_default") for p in info["named_endpoints"]["/train_start"]["parameters"]]
    refused(lambda: anonymous.predict(*start_arguments, api_name="/train_start"), not_signed_in)
    pipeline_arguments = [p.get("parameter_default") for p in info["named_endpoints"]["/pipeline_start"]["parameters"]]
    refused(lambda: anonymous.predict(*pipeline_arguments, api_name="/pipeline_start"), not_signed_in)
    for action in ("stop", "resume", "continue"):
        refused(lambda endpoint=f"/pipeline_{action}": anonymous.predict(None, api_name=endpoint), not_signed_in)
    anonymous.predict(None, api_name="/pipeline_state")  # reading is open
    assert not (space["workspace"] / "jobs").exists() or not list((space["workspace"] / "jobs").glob("pipeline-*"))
    store = ReasoningStore(space["store"])
    assert store.counts()["status"]["pending"] == 6 and not (space["workspace"] / "exports").exists()
    assert not list((space["workspace"] / "runs").glob("*")) if (space["workspace"] / "runs").exists() else True
    assert not (space["workspace"] / "evaluations").exists()
    # reports are open to read, but only the listed ones: not a file elsewhere on the server, nor whether a folder exists
    elsewhere = space["workspace"].parent / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    (elsewhere / "comparison.md").write_text("# secret report")
    (elsewhere / "predictions.jsonl").write_text('{"text": "secret", "gold": "joy", "qa_scored": "joy", "qra": "fear"}\n')
    for folder in (elsewhere, elsewhere / "missing"):
        refused(lambda folder=folder: anonymous.predict(str(folder), api_name="/compare_report"), "Pick a comparison report from the list")
        refused(lambda folder=folder: anonymous.predict(str(folder), "all", api_name="/compare_disagreements"), "Pick an evaluated split of this")
    # predictions are open to visitors, rate-limited: the refusal here is the missing run, not the role
    refused(lambda: anonymous.predict("i am happy", None, None, api_name="/compare_predict"), "Pick a Q→A run")
    refused(lambda: anonymous.predict("i am happy", "someone/any-model", None, api_name="/compare_predict"), "not offered here")


@pytest.mark.slow
def test_a_reviewer_decides_under_their_signed_in_name_and_a_stranger_may_not(space):
    refused(lambda: client(space, "carol").predict("ok", "carol", api_name="/review_accept"), "signed in as carol (visitor")
    bob = client(space, "bob")
    shown = bob.predict(*FILTERS, api_name="/review_queue")
    result = bob.predict(shown[2], "mallory <script>", api_name="/review_accept")
    assert "Row 0: accepted." in result[7]
    row = ReasoningStore(space["store"]).get(1)
    assert (row.status, row.reviewer) == ("accepted", "bob")  # the typed name is ignored on a Space
    dan = client(space, "dan", orgs=("reviewteam",))  # a reviewer through an org
    dan.predict(*FILTERS, api_name="/review_queue")
    assert "Row 1: rejected." in dan.predict("", "", api_name="/review_reject")[7]
    refused(lambda: bob.predict("bob-export", True, "keep-all", "remove", api_name="/review_export"), "needs the admin role")
    refused(lambda: bob.predict(None, api_name="/train_stop"), "needs the admin role")


@pytest.mark.slow
def test_an_admin_exports_and_pushes_with_their_own_token_into_a_new_repo_only(space):
    alice = client(space, "alice")
    exported = alice.predict("for-hub", True, "keep-all", "remove", api_name="/review_export")
    assert exported.startswith("Exported"), exported
    export_dir = str(space["workspace"] / "exports" / "for-hub")
    space["hub"].token = "oauth-token-of-alice"  # the stand-in accepts only her token
    pushed = alice.predict(export_dir, "tester/reasonings", False, False, api_name="/train_push")
    assert pushed.startswith("Pushed"), pushed
    assert ("dataset", "tester/reasonings") in space["hub"].repos
    again = alice.predict(export_dir, "tester/reasonings", False, False, api_name="/train_push")
    assert again.startswith("Not pushed") and "already exists" in again


@pytest.mark.slow
@pytest.mark.browser
def test_browser_header_names_the_signed_in_reviewer_and_no_name_field_is_offered(space):
    from tests.ui_helpers import browser_page, screenshot

    with browser_page() as page:
        page.goto(space["url"], wait_until="load")
        page.wait_for_selector("#app-identity :text('Not signed in')")
        page.context.add_cookies([{"name": "session", "value": session_cookie("bob", "oauth-token-of-bob").split("=", 1)[1], "url": space["url"]}])
        page.goto(space["url"], wait_until="load")
        page.wait_for_selector("#app-identity :text('Signed in as bob')")
        assert "(reviewer: review)" in page.inner_text("#app-identity")
        page.wait_for_timeout(2000)  # every load event has answered: none of them was refused
        assert "not open to callers" not in page.inner_text("body")
        page.get_by_role("tab", name="Review").click()
        page.wait_for_selector("#review-accept")
        assert page.locator("#review-reviewer").count() == 0 or not page.locator("#review-reviewer").is_visible()
        screenshot(page, "space-signed-in-reviewer.png")


def test_the_rate_limit_counts_the_connecting_host_or_a_spaces_proxy_address_not_a_header_the_client_writes():
    from types import SimpleNamespace

    from reasonapp.ui.access import _client_key

    spoofing = SimpleNamespace(headers={"x-forwarded-for": "1.2.3.4"}, client=SimpleNamespace(host="10.0.0.7"))
    assert _client_key(spoofing) == "10.0.0.7"
    # on a Space every visitor connects through its proxy (one host for all): the address it appends counts, not one
    # the client wrote before it
    proxied = SimpleNamespace(headers={"x-forwarded-for": "1.2.3.4, 203.0.113.9"}, client=SimpleNamespace(host="10.0.0.7"))
    other = SimpleNamespace(headers={"x-forwarded-for": "198.51.100.4"}, client=SimpleNamespace(host="10.0.0.7"))
    assert (_client_key(proxied, on_space=True), _client_key(other, on_space=True)) == ("203.0.113.9", "198.51.100.4")
    assert _client_key(SimpleNamespace(headers={}, client=SimpleNamespace(host="10.0.0.7")), on_space=True) == "10.0.0.7"
    limiter = RateLimiter(limit=1, window_s=0.0)
    limiter.check("a")
    limiter.check("b")
    assert set(limiter._calls) == {"b"}  # a caller quiet for a window is forgotten: the table does not grow
