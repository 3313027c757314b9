"""int8 encoding on CPU: the transformer exported to ONNX once per model fingerprint, quantized to int8
by OpenVINO NNCF (static, calibrated on a sample of the user's texts), cached on disk, run by OpenVINO as
the token-embedding stage of `textcl.models.Encoder`; plus the quality guard (cosine to fp32).

Pooling and normalisation are not exported: the Encoder runs the model's own modules after this stage.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import io
import json
import logging
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from textcl.errors import ConfigError

log = logging.getLogger(__name__)

# Bump when the export or quantization recipe changes: old exports are then not reused.
INT8_VERSION = "3"
# Chosen by measurement (BENCHMARKS.md, int8 section; all-MiniLM-L6-v2, NFCorpus, docs per CPU-second):
# OpenVINO + NNCF static int8 83.5 (cosine to fp32 0.9971 mean / 0.9945 min), ONNX Runtime dynamic
# per-channel int8 41.4 (0.9954 / 0.9916), ONNX Runtime static QDQ int8 38.1 (0.9457), fp32 ~23.
METHOD = "openvino + nncf static int8 (transformer preset, calibrated on the guard sample)"
MISSING_EXTRA = ("precision int8 needs OpenVINO and NNCF, which are not installed: pip install 'textcl[int8]' "
                 "(onnx + openvino + nncf), or use precision fp32")
# Measured with all-MiniLM-L6-v2 on the full NFCorpus test set: this int8 has cosine to fp32 0.9977 mean /
# 0.9923 min and nDCG@10 31.44 vs 31.59; torch's dynamic int8 (mean 0.937) lost 0.8
# nDCG@10 points. The thresholds sit between the two; a broken quantization lands far below both (the
# test's: mean 0.01).
MIN_MEAN_COSINE = 0.98
MIN_ROW_COSINE = 0.90
GUARD_TEXTS = 256  # half calibrate the quantization, half are compared with fp32


def available() -> bool:
    """True when the int8 extra (onnx, openvino, nncf) is installed."""
    try:
        import nncf  # noqa: F401  (optional dependencies: only imported to see whether they are there)
        import onnx  # noqa: F401
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def require() -> None:
    """Raise the "install textcl[int8]" error when the int8 extra is missing."""
    if not available():
        raise ConfigError(MISSING_EXTRA)


class _SignalStack(ctypes.Structure):  # Linux `stack_t`
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


@contextlib.contextmanager
def keep_signal_stack() -> Iterator[None]:
    """Put this thread's alternate signal stack back as it was after the block (Linux; elsewhere a no-op).

    OpenVINO's CPU plugin (2026.4 here) installs its own sigaltstack on the thread that creates it (each
    `compile_model` on a new `ov.Core`, NNCF's included) and, when it is destroyed with its stack still
    current, puts back the one it found; its own is freed either way. Two plugins released in creation
    order (an Encoder's re-export replacing its stage, two int8 encoders) leave the thread on the first
    one's freed stack. CPython's SIGINT handler runs on the alternate stack (SA_ONSTACK), so the next Ctrl-C
    killed the process with SIGSEGV (no traceback: faulthandler's handler uses the same stack) instead of
    training's checkpoint-and-stop. With the stack we had restored after each plugin is created, no
    plugin's stack stays current, so a plugin's teardown never installs a freed one.
    """
    if not sys.platform.startswith("linux"):
        yield
        return
    libc = ctypes.CDLL(None, use_errno=True)
    saved = _SignalStack()
    if libc.sigaltstack(None, ctypes.byref(saved)) != 0:
        yield
        return
    try:
        yield
    finally:
        # May fail (ENOMEM) where the kernel now needs a bigger stack (AMX state): then OpenVINO's stays.
        if libc.sigaltstack(ctypes.byref(saved), None) != 0:
            log.debug("int8: could not restore the alternate signal stack (errno %d)", ctypes.get_errno())


def default_cache_root() -> Path:
    """Where exports live without an embedding cache: $XDG_CACHE_HOME/textcl (or ~/.cache/textcl)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "textcl"


def export_dir(cache_root: str | os.PathLike, fingerprint: str, calibration: str = "") -> Path:
    """The folder of one model's int8 export: keyed by weights fingerprint, recipe version and the calibration
    sample (`calibration_key`), not by name."""
    key = hashlib.sha256(f"{fingerprint}:{INT8_VERSION}:{METHOD}:{calibration}".encode()).hexdigest()[:32]
    return Path(cache_root) / "int8" / key


def calibration_key(samples: dict[str, list[str]]) -> str:
    """sha256 of the (prompted) texts each role's calibration and guard sample holds."""
    return hashlib.sha256(json.dumps(samples, sort_keys=True).encode()).hexdigest()


class _TokenEmbeddings(torch.nn.Module):
    """The exported graph: input ids (+ mask, token types) -> last hidden state (the token embeddings)."""

    def __init__(self, auto_model: torch.nn.Module, with_types: bool):
        super().__init__()
        self.auto_model, self.with_types = auto_model, with_types

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        extra = {"token_type_ids": token_type_ids} if self.with_types else {}
        return self.auto_model(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state


def input_names(with_types: bool) -> list[str]:
    return ["input_ids", "attention_mask", *(["token_type_ids"] if with_types else [])]


def export_onnx(model: Any, path: Path, with_types: bool) -> None:
    """Export the model's first module (an HF transformer) to ONNX fp32 at `path`, dynamic batch and length."""
    first = model[0]
    auto_model = getattr(first, "auto_model", None) or getattr(first, "model", None)
    if auto_model is None:
        raise ConfigError(f"precision int8 supports models whose first module is a transformer; "
                          f"this one starts with {type(first).__name__}: use precision fp32")
    names = input_names(with_types)
    ids = torch.full((2, 8), 5, dtype=torch.long)
    mask = torch.ones((2, 8), dtype=torch.long)
    mask[1, 5:] = 0  # a padded row, so that the traced graph keeps the attention-mask path
    args = (ids, mask, torch.zeros_like(ids))[:len(names)]
    wrapper = _TokenEmbeddings(auto_model, with_types).eval().to("cpu")
    axes = {n: {0: "batch", 1: "length"} for n in [*names, "token_embeddings"]}
    config = getattr(auto_model, "config", None)
    attention = getattr(config, "_attn_implementation", None)
    try:
        # Eager attention exports as plain MatMul/Softmax, which ran faster here than the exported SDPA
        # graph (ONNX Runtime int8, NFCorpus, 240 docs, same run: 44.9 vs 34.2 docs per CPU-second).
        if attention is not None:
            config._attn_implementation = "eager"
        with torch.no_grad(), warnings.catch_warnings():
            # The tracer warns about Python branches on shapes; the ones in HF attention-mask code depend
            # on mask length == input length and a mask being given, true for every Encoder call.
            warnings.simplefilter("ignore")
            torch.onnx.export(wrapper, args, str(path), input_names=names, output_names=["token_embeddings"],
                              dynamic_axes=axes, opset_version=17, dynamo=False)
    finally:
        if attention is not None:
            config._attn_implementation = attention


def quantize_weights(fp32_path: Path, int8_path: Path, calibration: list[dict[str, np.ndarray]]) -> None:
    """NNCF post-training int8 quantization (transformer preset) of the ONNX graph, saved as OpenVINO IR
    (`int8_path` .xml + .bin). `calibration`: feeds (input name -> int64 array), one per batch."""
    import nncf  # optional dependency
    import openvino as ov  # optional dependency

    logging.getLogger("nncf").setLevel(logging.ERROR)
    fp32 = ov.Core().read_model(str(fp32_path))
    # NNCF draws progress bars on stdout, where `textcl mine` writes its JSON: swallow them.
    with contextlib.redirect_stdout(io.StringIO()), keep_signal_stack():  # NNCF compiles models on the CPU
        quantized = nncf.quantize(fp32, nncf.Dataset(calibration), model_type=nncf.ModelType.TRANSFORMER,
                                  subset_size=len(calibration))
    ov.save_model(quantized, str(int8_path))


def build_export(model: Any, folder: Path, with_types: bool, calibration: list[dict[str, np.ndarray]]) -> None:
    """Export + quantize into `folder` atomically (a half-written folder is never visible)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".tmp-"))
    try:
        export_onnx(model, tmp / "model_fp32.onnx", with_types)
        quantize_weights(tmp / "model_fp32.onnx", tmp / "model_int8.xml", calibration)
        for fp32 in tmp.glob("model_fp32.onnx*"):  # the fp32 graph (and any external-data file)
            fp32.unlink()
        meta = {"version": INT8_VERSION, "method": METHOD, "inputs": input_names(with_types)}
        (tmp / "export.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        try:
            os.replace(tmp, folder)
        except OSError:  # another process finished the same export first: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


class TokenStage:
    """Encoder stage `features -> features` that fills "token_embeddings" from the int8 OpenVINO model."""

    def __init__(self, folder: Path, threads: int | None = None):
        import openvino as ov  # optional dependency

        self.folder = folder
        config = {"INFERENCE_NUM_THREADS": threads or torch.get_num_threads(), "PERFORMANCE_HINT": "LATENCY"}
        with keep_signal_stack():  # see keep_signal_stack: the CPU plugin swaps the signal stack
            self.compiled = ov.Core().compile_model(str(folder / "model_int8.xml"), "CPU", config)
        self.inputs = [port.get_any_name() for port in self.compiled.inputs]

    def __call__(self, features: dict[str, Any]) -> dict[str, Any]:
        feeds = {name: features[name].to("cpu", torch.long).numpy() for name in self.inputs}
        tokens = self.compiled(feeds)[0]
        features["token_embeddings"] = torch.from_numpy(np.array(tokens, dtype=np.float32))
        return features


class Recorder:
    """Encoder stage that keeps each batch's model inputs as numpy (the calibration feeds) and passes on."""

    def __init__(self, with_types: bool):
        self.names, self.feeds = input_names(with_types), []

    def __call__(self, features: dict[str, Any]) -> dict[str, Any]:
        self.feeds.append({n: features[n].to("cpu", torch.long).numpy() for n in self.names})
        return features


def load_stage(model: Any, folder: Path, with_types: bool,
               calibration: Callable[[], list[dict[str, np.ndarray]]]) -> tuple[TokenStage, str]:
    """The int8 stage exported in `folder` (`export_dir`), exported on a cache miss (calibrated on
    `calibration()`'s feeds); returns (stage, "hit" | "miss")."""
    require()
    status = "hit"
    if not (folder / "model_int8.xml").is_file():
        status = "miss"
        log.info("int8: exporting and quantizing the model into %s", folder)
        build_export(model, folder, with_types, calibration())
    return TokenStage(folder), status


def guard_sample(texts: list[str], n: int = GUARD_TEXTS) -> list[str]:
    """Up to `n` non-empty texts spread evenly over the input (deterministic: no random state)."""
    texts = [t for t in texts if t.strip()] or list(texts)
    if len(texts) <= n:
        return texts
    return [texts[i] for i in np.linspace(0, len(texts) - 1, n).round().astype(int)]


def guard_result(fp32: np.ndarray, int8: np.ndarray) -> dict[str, Any]:
    """Mean/min row cosine of int8 vs fp32 embeddings, and whether they pass the thresholds."""
    def unit(x: np.ndarray) -> np.ndarray:
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    cos = np.sum(unit(fp32) * unit(int8), axis=1) if len(fp32) else np.ones(1)
    cos = np.nan_to_num(cos, nan=-1.0)  # a NaN row (overflowing weights) is a failure, not a pass
    mean, low = float(cos.mean()), float(cos.min())
    return {"method": METHOD, "texts": int(len(fp32)), "mean_cosine": round(mean, 5), "min_cosine": round(low, 5),
            "threshold_mean": MIN_MEAN_COSINE, "threshold_min": MIN_ROW_COSINE,
            "passed": bool(mean >= MIN_MEAN_COSINE and low >= MIN_ROW_COSINE)}


def role_guards(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One guard over several roles (documents, queries), each checked on its own sample: it passes when every
    role passes; its mean/min are the worst role's, and `roles` keeps each."""
    worst = min(results.values(), key=lambda g: (g["passed"], g["mean_cosine"]))
    return {**worst, "texts": sum(g["texts"] for g in results.values()), "roles": results,
            "passed": all(g["passed"] for g in results.values())}


def read_guard(folder: Path) -> dict[str, Any] | None:
    path = folder / "guard.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def write_guard(folder: Path, result: dict[str, Any]) -> None:
    (folder / "guard.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


def guard_error(result: dict[str, Any], fingerprint: str) -> ConfigError:
    roles = ", ".join(f"{role} role {g['mean_cosine']:.4f}" for role, g in result.get("roles", {}).items())
    return ConfigError(
        f"int8 quality guard failed for model {fingerprint[:12]}: embeddings have mean cosine "
        f"{result['mean_cosine']:.4f} (min {result['min_cosine']:.4f}) to fp32 on {result['texts']} texts"
        f"{f' ({roles})' if roles else ''}, below the thresholds {result['threshold_mean']} (mean) / "
        f"{result['threshold_min']} (min); this model does not quantize well: use precision fp32 (or bf16)")
