"""int8 encoding on CPU: the transformer exported to ONNX once per model fingerprint, its weights
quantized to int8 by ONNX Runtime (dynamic activations, per-channel weights), cached on disk, run as
the token-embedding stage of `textcl.model.Encoder`; plus the quality guard (cosine to fp32).

Pooling and normalisation are not exported: the Encoder runs the model's own modules after this stage.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from textcl.errors import ConfigError

log = logging.getLogger(__name__)

# Bump when the export or quantization recipe changes: old exports are then not reused.
INT8_VERSION = "2"
METHOD = "onnxruntime dynamic int8, per-channel QInt8 weights"
MISSING_EXTRA = ("precision int8 needs ONNX Runtime, which is not installed: pip install 'textcl[int8]' "
                 "(onnx + onnxruntime), or use precision fp32")
# Measured with all-MiniLM-L6-v2 on NFCorpus (BENCHMARKS.md, int8 section): this quantization gives mean
# cosine 0.995 / min 0.98 to fp32 at equal nDCG@10, while torch's dynamic int8 (mean 0.937) lost 0.8
# nDCG@10 points. The thresholds sit between the two; a broken export lands far below both.
MIN_MEAN_COSINE = 0.98
MIN_ROW_COSINE = 0.90
GUARD_TEXTS = 256


def onnxruntime_available() -> bool:
    try:
        import onnx  # noqa: F401  (optional dependency: only imported to see whether it is there)
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def require_onnxruntime() -> None:
    """Raise the "install textcl[int8]" error when onnx or onnxruntime is missing."""
    if not onnxruntime_available():
        raise ConfigError(MISSING_EXTRA)


def default_cache_root() -> Path:
    """Where exports live without an embedding cache: $XDG_CACHE_HOME/textcl (or ~/.cache/textcl)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "textcl"


def export_dir(cache_root: str | os.PathLike, fingerprint: str) -> Path:
    """The folder of one model's int8 export: keyed by weights fingerprint and recipe version, not by name."""
    key = hashlib.sha256(f"{fingerprint}:{INT8_VERSION}:{METHOD}".encode()).hexdigest()[:32]
    return Path(cache_root) / "int8" / key


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
        # Eager attention exports as plain MatMul/Softmax, which ONNX Runtime runs faster here than the
        # exported SDPA graph (NFCorpus, 240 docs, same run: 44.5 vs ~35 docs per CPU-second).
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


def quantize_weights(fp32_path: Path, int8_path: Path) -> None:
    """ONNX Runtime dynamic quantization with per-channel int8 weights (the measured best on VNNI CPUs)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic  # optional dependency

    # The quantizer logs one INFO line per tensor on the root logger; keep those out of textcl's log.
    root, level = logging.getLogger(), logging.getLogger().level
    root.setLevel(max(level, logging.ERROR))
    try:
        quantize_dynamic(str(fp32_path), str(int8_path), per_channel=True, weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)


def build_export(model: Any, folder: Path, with_types: bool) -> None:
    """Export + quantize into `folder` atomically (a half-written folder is never visible)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".tmp-"))
    try:
        export_onnx(model, tmp / "model_fp32.onnx", with_types)
        quantize_weights(tmp / "model_fp32.onnx", tmp / "model_int8.onnx")
        (tmp / "model_fp32.onnx").unlink()
        for extra in tmp.glob("*.data"):  # external-data files of the fp32 graph, if any
            extra.unlink()
        meta = {"version": INT8_VERSION, "method": METHOD, "inputs": input_names(with_types)}
        (tmp / "export.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        try:
            os.replace(tmp, folder)
        except OSError:  # another process finished the same export first: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


class OnnxTokenStage:
    """Encoder stage `features -> features` that fills "token_embeddings" from the int8 ONNX graph."""

    def __init__(self, folder: Path, threads: int | None = None):
        import onnxruntime as ort  # optional dependency

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.folder = folder
        self.session = ort.InferenceSession(str(folder / "model_int8.onnx"), options,
                                            providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]

    def __call__(self, features: dict[str, Any]) -> dict[str, Any]:
        feeds = {name: features[name].to("cpu", torch.long).numpy() for name in self.inputs}
        (tokens,) = self.session.run(["token_embeddings"], feeds)
        features["token_embeddings"] = torch.from_numpy(tokens)
        return features


def load_stage(model: Any, fingerprint: str, cache_root: str | os.PathLike, with_types: bool
               ) -> tuple[OnnxTokenStage, str]:
    """The int8 stage for this model, exported on a cache miss; returns (stage, "hit" | "miss")."""
    require_onnxruntime()
    folder = export_dir(cache_root, fingerprint)
    status = "hit"
    if not (folder / "model_int8.onnx").is_file():
        status = "miss"
        log.info("int8: exporting and quantizing the model (fingerprint %s) into %s", fingerprint[:12], folder)
        build_export(model, folder, with_types)
    return OnnxTokenStage(folder), status


def guard_sample(texts: list[str], n: int = GUARD_TEXTS) -> list[str]:
    """Up to `n` non-empty texts spread evenly over the input (deterministic: no random state)."""
    texts = [t for t in texts if t.strip()] or list(texts)
    if len(texts) <= n:
        return texts
    return [texts[i] for i in np.linspace(0, len(texts) - 1, n).round().astype(int)]


def guard_result(fp32: np.ndarray, int8: np.ndarray) -> dict[str, Any]:
    """Mean/min row cosine of L2-normalised int8 vs fp32 embeddings, and whether they pass the thresholds."""
    cos = np.sum(fp32 * int8, axis=1) if len(fp32) else np.ones(1)
    mean, low = float(cos.mean()), float(cos.min())
    return {"method": METHOD, "texts": int(len(fp32)), "mean_cosine": round(mean, 5), "min_cosine": round(low, 5),
            "threshold_mean": MIN_MEAN_COSINE, "threshold_min": MIN_ROW_COSINE,
            "passed": bool(mean >= MIN_MEAN_COSINE and low >= MIN_ROW_COSINE)}


def read_guard(folder: Path) -> dict[str, Any] | None:
    path = folder / "guard.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def write_guard(folder: Path, result: dict[str, Any]) -> None:
    (folder / "guard.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


def guard_error(result: dict[str, Any], fingerprint: str) -> ConfigError:
    return ConfigError(
        f"int8 quality guard failed for model {fingerprint[:12]}: embeddings have mean cosine "
        f"{result['mean_cosine']:.4f} (min {result['min_cosine']:.4f}) to fp32 on {result['texts']} texts, "
        f"below the thresholds {result['threshold_mean']} (mean) / {result['threshold_min']} (min); "
        "this model does not quantize well: use precision fp32 (or bf16)")
