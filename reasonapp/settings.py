"""Where things live: the offline data mirror, the workspace, the model cache, and the Hub.

Every location can be set by an environment variable so that a Space (persistent `/data`), CI and a
laptop all run the same code.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from reasonapp.errors import ConfigError

logger = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def data_mirror() -> Path | None:
    """Local mirror of Hub datasets: `REASONAPP_DATA_MIRROR`, else `../shared/data` beside the project."""
    configured = os.environ.get("REASONAPP_DATA_MIRROR")
    if configured:
        return Path(configured).expanduser()
    beside = PROJECT_ROOT.parent / "shared" / "data"
    return beside if beside.is_dir() else None


def workspace_dir() -> Path:
    """Where runs, stores and exports go: `REASONAPP_WORKSPACE`, the Space's `/data`, or `./workspace`."""
    configured = os.environ.get("REASONAPP_WORKSPACE")
    if configured:
        path = Path(configured).expanduser()
    elif Path("/data").is_dir() and os.access("/data", os.W_OK):
        path = Path("/data/reasonapp")
    else:
        path = PROJECT_ROOT / "workspace"
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_dir() -> Path:
    """Converted model weights and other derived files that are safe to delete."""
    configured = os.environ.get("REASONAPP_CACHE")
    path = Path(configured).expanduser() if configured else Path.home() / ".cache" / "reasonapp"
    path.mkdir(parents=True, exist_ok=True)
    return path


BACKENDS = ("transformers", "llama.cpp")


def inference_backend() -> str:
    """What serves predictions in the app: transformers (default) or llama.cpp (optional, faster at batch 1)."""
    backend = os.environ.get("REASONAPP_BACKEND", "transformers").strip().lower()
    if backend not in BACKENDS:
        raise ConfigError(f"REASONAPP_BACKEND={backend!r}; choose one of {', '.join(BACKENDS)}")
    return backend


def compile_scoring() -> bool:
    """REASONAPP_COMPILE=1: Q->A label scoring through torch.compile (optional: needs a C++ compiler, and the
    first requests wait for the compile, ~1 min on a 2-core CPU)."""
    return os.environ.get("REASONAPP_COMPILE", "0").strip().lower() in {"1", "true", "yes"}


@functools.cache
def hub_reachable(timeout: float = 3.0) -> bool:
    """True when the Hub endpoint answers a TCP connect; checked once per process.

    `datasets` retries an unreachable Hub for about half a minute per call, so callers ask this
    first and go straight to the local mirror when it says no.
    """
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes"}:
        return False
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((endpoint.hostname, port), timeout=timeout):
            return True
    except OSError as error:
        logger.info("Hugging Face Hub unreachable (%s); using local files", error)
        return False
