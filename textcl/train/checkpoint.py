"""Atomic, verifiable training checkpoints and exact resume.

A checkpoint is a folder `checkpoints/step-00000123/` holding the model weights (safetensors), the
optimizer and scheduler state, every RNG state and the data position, and once `train.corpus_refresh_every`
has re-embedded the training corpus, those embeddings (safetensors). It is written into a hidden
temporary folder, every file is fsynced, sha256 checksums are written last, and only then is the
folder renamed into place and the `latest` pointer replaced. A crash at any moment therefore leaves
either the previous checkpoint or the new one, never a half-written folder that resume would pick.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import random
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from safetensors.torch import load_model as load_safetensors_model
from safetensors.torch import save_model as save_safetensors_model

from textcl.errors import ConfigError, TrainingError

log = logging.getLogger(__name__)

CHECKSUMS = "checksums.json"
CORPUS_EMBEDDINGS = "corpus_embeddings.safetensors"
LATEST = "latest"
_TMP_PREFIX = ".tmp-"


@dataclass
class TrainerState:
    """Everything besides tensors that a resumed run needs to continue exactly."""

    step: int = 0  # optimizer steps taken (skipped non-finite steps included)
    epoch: int = 0
    batch_in_epoch: int = 0  # batches of `epoch` already consumed
    skipped_steps: int = 0
    best_metric: float | None = None
    best_step: int | None = None
    best_interpolation: float | None = None  # fine-tuned share when a WiSE-FT interpolation won on dev
    evals_without_improvement: int = 0
    world_size: int = 1
    history: list[dict] = field(default_factory=list)
    resume_settings: dict = field(default_factory=dict)  # config fields that must not change on resume
    corpus_refreshed_at: int | None = None  # step whose weights embedded the training corpus (None: the base model)


# ---------------------------------------------------------------- RNG state


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch RNG states in a form `torch.load(weights_only=True)` accepts."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"kind": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------- atomic file helpers


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some filesystems cannot open directories; rename is still atomic there
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic_text(path: Path, text: str) -> None:
    """Replace `path` with `text` atomically (temp file, fsync, rename)."""
    tmp = path.with_name(f"{_TMP_PREFIX}{path.name}")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _resource_error(exc: OSError, target: Path) -> TrainingError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        what = "no space left on device"
    else:
        what = str(exc)
    return TrainingError(f"could not write checkpoint {target}: {what}. The previous checkpoint is intact; "
                         f"free disk space (or set train.keep_checkpoints lower) and resume with --resume")


def atomic_folder(target: Path, write: Callable[[Path], None]) -> Path:
    """Run `write(tmp)` into a temporary sibling folder, checksum + fsync it, then rename it to `target`.

    On any error the temporary folder is removed and `target` (if it existed) is untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{_TMP_PREFIX}{target.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        write(tmp)
        normal_permissions(tmp)
        sums = {}
        for file in sorted(p for p in tmp.rglob("*") if p.is_file()):
            _fsync_file(file)
            sums[file.relative_to(tmp).as_posix()] = sha256_file(file)
        (tmp / CHECKSUMS).write_text(json.dumps(sums, indent=1, sort_keys=True), encoding="utf-8")
        _fsync_file(tmp / CHECKSUMS)
        _fsync_dir(tmp)
        if target.exists():  # replace: move the old one aside first so rename is a single step
            old = target.with_name(f"{_TMP_PREFIX}old-{target.name}-{os.getpid()}")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
        _fsync_dir(target.parent)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise _resource_error(exc, target) from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def normal_permissions(folder: Path) -> None:
    """Give files the mode the umask allows (safetensors writes 0600; a model folder should read like
    any other)."""
    umask = os.umask(0)
    os.umask(umask)
    for file in Path(folder).rglob("*"):
        if file.is_file():
            file.chmod(0o666 & ~umask)


def verify_folder(folder: Path) -> None:
    """Raise TrainingError unless every file listed in checksums.json exists with its sha256."""
    folder = Path(folder)
    sums_path = folder / CHECKSUMS
    if not sums_path.is_file():
        raise TrainingError(f"checkpoint {folder} has no {CHECKSUMS}: it was never completed")
    try:
        sums = json.loads(sums_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise TrainingError(f"checkpoint {folder}: unreadable {CHECKSUMS} ({exc})") from None
    for name, expected in sums.items():
        file = folder / name
        if not file.is_file():
            raise TrainingError(f"checkpoint {folder}: file '{name}' is missing")
        if sha256_file(file) != expected:
            raise TrainingError(f"checkpoint {folder}: checksum mismatch for '{name}' (corrupted)")


# ---------------------------------------------------------------- save / load


def save_checkpoint(folder: Path, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any, state: TrainerState, corpus_embeddings: torch.Tensor | None = None,
                    rng_states: list[dict] | None = None) -> Path:
    """Atomically write `folder` = checkpoints/step-N and point `checkpoints/latest` at it. `corpus_embeddings`:
    the training corpus as refreshed by the weights being trained (None while the base model's are in use).
    `rng_states`: every rank's RNG states (rank r > 0 in rng-rank{r}.pt: its dropout resumes as its own)."""
    folder = Path(folder)

    def write(tmp: Path) -> None:
        save_safetensors_model(model, str(tmp / "model.safetensors"))
        if corpus_embeddings is not None:
            save_file({"embeddings": corpus_embeddings.detach().cpu().contiguous()}, str(tmp / CORPUS_EMBEDDINGS))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        torch.save(rng_states[0] if rng_states else rng_state(), tmp / "rng.pt")
        for r, states in enumerate((rng_states or [])[1:], 1):
            torch.save(states, tmp / f"rng-rank{r}.pt")
        (tmp / "trainer_state.json").write_text(json.dumps(asdict(state), indent=1), encoding="utf-8")

    atomic_folder(folder, write)
    try:
        write_atomic_text(folder.parent / LATEST, folder.name + "\n")
    except OSError as exc:
        raise _resource_error(exc, folder.parent / LATEST) from exc
    log.info("saved checkpoint %s (step %d)", folder, state.step)
    return folder


def _torch_load(path: Path) -> Any:
    # weights_only=True: a checkpoint is data, never code (no pickle of arbitrary objects).
    return torch.load(path, map_location="cpu", weights_only=True)


def load_checkpoint(folder: Path, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any, rank: int = 0) -> TrainerState:
    """Verify checksums, then restore model, optimizer, scheduler and RNG states (`rank`'s) in place."""
    folder = Path(folder)
    verify_folder(folder)
    missing, unexpected = load_safetensors_model(model, str(folder / "model.safetensors"), strict=False)
    if missing or unexpected:
        raise TrainingError(f"checkpoint {folder} does not match the model: missing {missing[:3]}, "
                            f"unexpected {unexpected[:3]}")
    if (folder / "optimizer.pt").is_file():
        optimizer.load_state_dict(_torch_load(folder / "optimizer.pt"))
    else:  # pruned by finish_run: the run had ended, no step is left to take with this optimizer
        log.info("%s: the run had finished and its optimizer state was pruned", folder)
    scheduler.load_state_dict(_torch_load(folder / "scheduler.pt"))
    own = folder / f"rng-rank{rank}.pt"
    set_rng_state(_torch_load(own if rank and own.is_file() else folder / "rng.pt"))
    raw = json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
    if "fingerprint" in raw:  # the key's name in checkpoints written before the rename
        raw["resume_settings"] = raw.pop("fingerprint")
    return TrainerState(**raw)


def load_corpus_embeddings(folder: Path) -> torch.Tensor | None:
    """The refreshed training-corpus embeddings a checkpoint holds, or None (the run still used the base
    model's). `resume_path` has verified the folder's checksums."""
    path = Path(folder) / CORPUS_EMBEDDINGS
    return load_file(str(path))["embeddings"] if path.is_file() else None


def list_checkpoints(root: Path) -> list[Path]:
    """Completed `step-N` folders under `root`, newest first (temporary folders are ignored)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-")]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]), reverse=True)


def find_resumable(root: Path) -> Path | None:
    """The checkpoint named by `latest` if it verifies, else the newest one that does (with a warning)."""
    root = Path(root)
    candidates = list_checkpoints(root)
    pointer = root / LATEST
    if pointer.is_file():
        named = root / pointer.read_text(encoding="utf-8").strip()
        candidates = [named] + [c for c in candidates if c != named]
    for folder in candidates:
        try:
            verify_folder(folder)
            return folder
        except TrainingError as exc:
            log.warning("skipping checkpoint that does not verify: %s", exc)
    return None


def prune_checkpoints(root: Path, keep: int) -> None:
    """Delete all but the newest `keep` step folders and any stale temporary folders."""
    root = Path(root)
    for stale in root.glob(f"{_TMP_PREFIX}*"):
        if stale.is_dir() and not stale.name.endswith(f"-{os.getpid()}"):
            shutil.rmtree(stale, ignore_errors=True)
    for old in list_checkpoints(root)[max(keep, 1):]:
        shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------- resume policy


def resume_settings(config: Any, n_examples: int, world: int) -> dict:
    """Settings that must match for a resumed run to continue the same trajectory."""
    tc = config.train
    negatives = {"tune": tc.tune, "negatives": tc.negatives, "corpus_candidates": tc.corpus_candidates,
                 "corpus_samples": tc.corpus_samples, "corpus_refresh_every": tc.corpus_refresh_every,
                 "corpus_positives": tc.corpus_positives}
    if tc.similarity_anchor:  # only when on: checkpoints from before the setting existed stay resumable
        negatives["similarity_anchor"] = tc.similarity_anchor
    if tc.corpus_shard:
        negatives["corpus_shard"] = True
    return {"seed": config.seed, "model": config.model.name_or_path, "loss": asdict(config.loss),
            "batch_size": tc.batch_size, "lr": tc.lr, "scheduler": tc.scheduler, "n_examples": n_examples,
            "world_size": world, "max_steps": tc.max_steps, "epochs": tc.epochs,
            "layer_lr_decay": tc.layer_lr_decay,
            "negatives": negatives}


def check_resume_settings(saved: dict, current: dict, where: Path) -> None:
    """Refuse to resume when a setting differs from the checkpoint's (one it lacks counts as different)."""
    diff = [k for k in current if saved.get(k) != current[k]]
    if diff:
        detail = ", ".join(f"{k}: {saved.get(k)!r} -> {current[k]!r}" for k in diff)
        raise ConfigError(f"cannot resume from {where}: settings changed ({detail}); restore them or start a "
                          f"fresh run in another train.output_dir")


def resume_path(resume: bool | str, ckpt_root: Path) -> Path | None:
    if resume is False or resume is None:
        return None
    if isinstance(resume, str) and resume not in ("auto", "latest"):
        verify_folder(Path(resume))
        return Path(resume)
    found = find_resumable(ckpt_root)
    if found is None and resume is True:
        raise ConfigError(f"--resume: no complete checkpoint in {ckpt_root}")
    return found


def finish_run(ckpt_root: Path, out_dir: Path, prune: bool) -> None:
    """Give the model folder normal file permissions; with `prune` (the run has ended), drop the
    checkpoints' optimizer state (their largest file; an ended run resumes without it)."""
    for folder in list_checkpoints(ckpt_root) if prune else []:
        optimizer = folder / "optimizer.pt"
        if optimizer.is_file():
            sums = json.loads((folder / CHECKSUMS).read_text(encoding="utf-8"))
            sums.pop("optimizer.pt", None)
            write_atomic_text(folder / CHECKSUMS, json.dumps(sums, indent=1, sort_keys=True))
            optimizer.unlink()
    normal_permissions(out_dir)
