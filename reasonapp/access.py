"""Who may do what: roles from the Space's settings, checked on the server for every action.

A Space is public: every endpoint can be called without the page, and a sign-in button restricts
nobody. So each action the app offers is classified once (`ACTIONS`), and the UI checks the caller's
role before running it. Roles come from two variables (or secrets) of the Space:

    REASONAPP_ADMINS     train, generate, evaluate, export, push, stop, settings, import datasets, resolve disputes
                         (and everything a reviewer may)
    REASONAPP_REVIEWERS  review decisions (accept, edit, reject, undo, bulk accept)

each a comma-separated list of Hugging Face user names and `org:<name>` entries. Anyone else, signed in
or not, reads only: the overview, the queue, reports and (rate-limited) predictions. Run locally (no
`SPACE_ID`) with no roles set, the single user may do everything.
"""

from __future__ import annotations

import getpass
import os
import re
import threading
import time
import unicodedata
from collections import deque
from dataclasses import dataclass, field

from reasonapp.errors import ReasonappError

VISITOR, REVIEWER, ADMIN = "visitor", "reviewer", "admin"
RANK = {VISITOR: 0, REVIEWER: 1, ADMIN: 2}
MAX_NAME_CHARS = 64


class AccessDenied(ReasonappError):
    """The caller's role does not allow this action."""


@dataclass(frozen=True)
class Caller:
    """Who calls: a signed-in Hugging Face user (with their orgs), or an anonymous visitor."""

    username: str | None = None
    orgs: tuple[str, ...] = ()
    token: str | None = None  # the user's own OAuth token (push uses it on a Space; never the server's)

    @property
    def signed_in(self) -> bool:
        return bool(self.username)


def _members(text: str | None) -> tuple[frozenset[str], frozenset[str]]:
    """(user names, org names) of a REASONAPP_ADMINS-style list, compared case-insensitively."""
    users, orgs = set(), set()
    for entry in (text or "").split(","):
        entry = entry.strip().lower()
        if entry.startswith("org:"):
            orgs.add(entry[4:].strip())
        elif entry:
            users.add(entry)
    return frozenset(users), frozenset(orgs)


@dataclass(frozen=True)
class Policy:
    """The roles in force: read from the environment once, when the app is built."""

    admins: tuple[frozenset[str], frozenset[str]] = (frozenset(), frozenset())
    reviewers: tuple[frozenset[str], frozenset[str]] = (frozenset(), frozenset())
    on_space: bool = False

    @classmethod
    def from_environment(cls) -> Policy:
        return cls(
            admins=_members(os.environ.get("REASONAPP_ADMINS")),
            reviewers=_members(os.environ.get("REASONAPP_REVIEWERS")),
            on_space=bool(os.environ.get("SPACE_ID")),
        )

    @property
    def open(self) -> bool:
        """Local and no roles set: one person on their own machine, who may do everything."""
        return not self.on_space and not any(self.admins + self.reviewers)

    def role(self, caller: Caller) -> str:
        if self.open:
            return ADMIN
        if not caller.signed_in:
            return VISITOR
        name, orgs = caller.username.lower(), {org.lower() for org in caller.orgs}
        if name in self.admins[0] or orgs & self.admins[1]:
            return ADMIN
        if name in self.reviewers[0] or orgs & self.reviewers[1]:
            return REVIEWER
        return VISITOR

    def check(self, caller: Caller, action: str) -> str:
        """The caller's role, or AccessDenied saying what the action needs and how to get it."""
        needed = ACTIONS[action]
        role = self.role(caller)
        if RANK[role] >= RANK[needed]:
            return role
        who = f"signed in as {caller.username} ({role})" if caller.signed_in else "not signed in"
        how = "sign in with Hugging Face" if not caller.signed_in else f"ask an admin to add you to REASONAPP_{needed.upper()}S"
        raise AccessDenied(f"{ACTION_NAMES.get(action, action)} needs the {needed} role; you are {who}: {how}")


# Every action the app offers, by the role it needs. The UI maps each event to one of these; an event
# it cannot map is refused (tests check that every public endpoint is classified).
ACTIONS = {
    "read": VISITOR,  # overview, queue, counts, reports, monitors, show command
    "predict": VISITOR,  # Compare predictions (rate-limited for visitors)
    "review": REVIEWER,  # accept, edit, reject, skip, undo, regenerate a candidate, bulk accept
    "export": ADMIN,
    "resolve": ADMIN,  # team review: see reviewers' disagreeing decisions side by side and finalise the row
    "train": ADMIN,  # start, resume, stop training
    "evaluate": ADMIN,
    "generate": ADMIN,  # Stage 2 jobs
    "push": ADMIN,
    "settings": ADMIN,
    "import": ADMIN,  # datasets: read a server directory or an upload, save a dataset into the workspace
}
ACTION_NAMES = {
    "review": "A review decision",
    "export": "Export",
    "resolve": "Resolving a disagreement between reviewers",
    "train": "Training",
    "evaluate": "Evaluation",
    "generate": "Generating reasonings",
    "push": "Pushing to the Hub",
    "settings": "Changing settings",
    "predict": "Prediction",
    "import": "Importing a dataset",
}


def allowed_hub_runs() -> set[str]:
    """Hub ids of runs anyone may load in Compare (REASONAPP_HUB_RUNS, comma-separated); admins may load any."""
    return {entry.strip() for entry in os.environ.get("REASONAPP_HUB_RUNS", "").split(",") if entry.strip()}


def clean_name(name: str | None, default: str | None = None) -> str:
    """A reviewer name as stored: printable, one line, at most MAX_NAME_CHARS characters; the OS user when empty."""
    text = unicodedata.normalize("NFKC", name or "")
    text = "".join(ch for ch in text if unicodedata.category(ch)[0] not in "CZ" or ch == " ")
    text = re.sub(r"[<>&\"'`]", "", text)
    text = re.sub(r"\s+", " ", text).strip()[:MAX_NAME_CHARS].strip()
    return text or default or local_user()


def local_user() -> str:
    try:
        return clean_name(getpass.getuser(), "reviewer")
    except (KeyError, OSError):
        return "reviewer"


@dataclass
class RateLimiter:
    """At most `limit` calls per `window_s` seconds per key (a visitor's session): predictions are CPU time."""

    limit: int = 20
    window_s: float = 60.0
    _calls: dict[str, deque] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def check(self, key: str) -> None:
        now = time.monotonic()
        with self._lock:
            for other in [k for k, c in self._calls.items() if not c or now - c[-1] > self.window_s]:
                del self._calls[other]  # callers quiet for a window: nothing to remember
            calls = self._calls.setdefault(key, deque())
            while calls and now - calls[0] > self.window_s:
                calls.popleft()
            if len(calls) >= self.limit:
                wait = self.window_s - (now - calls[0])
                raise AccessDenied(f"too many predictions: {self.limit} a minute for visitors; try again in {wait:.0f} s, or sign in")
            calls.append(now)
