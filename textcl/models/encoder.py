"""`Encoder`: texts in, float32 rows out, by the model's text rule (`textcl.textrule`): the model's own
preprocess, batches packed by token length, fp32 / a bf16 copy / an int8 OpenVINO stage (`textcl.int8`) before
the model's own pooling, an optional on-disk cache keyed by weights, settings and text; `MemoEncoder` for a
frozen model."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.util import batch_to_device

from textcl import int8, progress
from textcl.config import ModelConfig
from textcl.embcache import EmbeddingStore, text_key
from textcl.errors import ConfigError
from textcl.models.load import model_fingerprint, weights_version
from textcl.models.precision import encoder_precision, resolve_precision
from textcl.textrule import ROLES, TextRule, model_prompt, preprocess, text_rule

log = logging.getLogger(__name__)


CACHE_VERSION = "3"  # 3: tokenised by the model's own preprocess; similarity in the key


class Encoder:
    """Callable Encode over a SentenceTransformer: `enc(texts, role) -> float32 [n, dim]`, by the model's text
    rule (`rule`; L2-normalised for a cosine model).

    `batch_size` is the number of max-length sequences per batch; batches of shorter texts hold more
    texts (a token budget of batch_size * max_seq_length). A prompt of None uses the model's own
    prompt for that role (`textrule.model_prompt`), "" means none. Precision int8 (or auto with `allow_int8`) runs
    the transformer through `textcl.int8`, exported under `cache_dir` (else ~/.cache/textcl);
    `int8_report` then holds the quality guard's result.
    """

    def __init__(self, model: SentenceTransformer, *, precision: str = "auto", batch_size: int = 64,
                 query_prompt: str | None = None, document_prompt: str | None = None,
                 similarity: str | None = None, rule: TextRule | None = None,
                 cache_dir: str | os.PathLike | None = None, show_progress: bool = True,
                 allow_int8: bool = False):
        self.model = model
        self.device = model.device
        self.requested_precision = precision
        self.precision = encoder_precision(precision, self.device, allow_int8)
        self.batch_size = batch_size
        self.rule = rule if rule is not None else text_rule(model, query_prompt, document_prompt, similarity)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.show_progress = show_progress
        self.fingerprint = model_fingerprint(model)
        self._hashed_state = weights_version(model)
        self._shadow: torch.nn.Module | None = None
        self._stores: dict[Path, EmbeddingStore] = {}
        self._int8_stage: int8.TokenStage | None = None
        self._int8_weights: tuple = ()
        self._plan: dict[str, list[str]] = {}  # int8 calibration sample per role (`prepare`)
        self.int8_report: dict[str, Any] = {}

    # ------------------------------------------------------------ public

    @property
    def prompts(self) -> Mapping[str, str]:
        return self.rule.prompts

    @property
    def query_fingerprint(self) -> str:
        """One model encodes both roles: the same as `fingerprint` (a RoutedEncoder's differ)."""
        return self.fingerprint

    def __call__(self, texts: list[str], role: str = "document") -> np.ndarray:
        if role not in self.prompts:
            raise ConfigError(f"role must be 'query' or 'document', got {role!r}")
        texts = list(texts)
        if self.precision == "int8" and texts:
            self._prepare_int8(texts, role)
        if self.cache_dir is None or not texts:
            return self._encode(texts, role, self._stages())
        self._refresh_fingerprint()
        store = self._store(role)
        keys = [text_key(t) for t in texts]
        todo = store.missing(keys)
        if todo:
            store.add([keys[i] for i in todo], self._encode([texts[i] for i in todo], role, self._stages()))
        else:
            log.debug("embedding cache hit: %d texts in %s", len(texts), store.folder)
        return store.get(keys)

    def settings(self, role: str) -> dict[str, Any]:
        """Everything besides weights and text that changes the output (part of the cache key)."""
        out = {"version": CACHE_VERSION, "precision": self.precision, "prompt": self.prompts[role],
               "similarity": self.rule.similarity, "max_seq_length": self.model.max_seq_length,
               "device": self.device.type}
        if self.precision == "int8":
            out["int8"] = f"{int8.INT8_VERSION}:{int8.METHOD}"
        return out

    # ------------------------------------------------------------ internals

    def _refresh_fingerprint(self) -> None:
        """Re-hash the weights only when a tensor changed since the last hash (training changes them in
        place, which bumps each tensor's version counter); hashing every call cost ~0.3 s for MiniLM."""
        state = weights_version(self.model)
        if state != self._hashed_state:
            self.fingerprint = model_fingerprint(self.model)
            self._hashed_state = state

    def _store(self, role: str) -> EmbeddingStore:
        """The cache folder for the current weights and this role's settings (texts are keyed inside)."""
        h = hashlib.sha256()
        h.update(self.fingerprint.encode())
        h.update(json.dumps(self.settings(role), sort_keys=True).encode())
        folder = self.cache_dir / h.hexdigest()
        if folder not in self._stores:
            self._stores[folder] = EmbeddingStore(folder)
        return self._stores[folder]

    def _stages(self) -> list:
        """What maps features to "sentence_embedding": the model (fp32), its bf16 copy, or, for int8, the
        int8 token stage followed by the model's own modules after the transformer (pooling, dense...)."""
        if self.precision == "int8":
            return [self._int8_stage, *list(self.model)[1:]]
        return [self._runner()]

    def prepare(self, texts: Mapping[str, Sequence[str]]) -> None:
        """Say what this run will encode ({role: texts}) before it encodes anything, so that int8 calibrates on
        a sample of all of it (documents and queries) whatever is encoded first. Other precisions: no-op."""
        if self.precision != "int8":
            return
        plan = {role: int8.guard_sample(list(t)) for role, t in texts.items() if role in self.prompts and len(t)}
        if plan and plan != self._plan:
            self._plan, self._int8_stage = plan, None

    def _prepare_int8(self, texts: list[str], role: str) -> None:
        """Load (or export) the int8 stage for the current weights and calibration sample: `prepare`'s plan, else
        a sample of this first call's texts. On a fresh export each role's sample is encoded in fp32: half of it
        calibrates the quantization, the other half is what the quality guard compares, role by role. A failed
        guard raises for int8 and falls back to fp32/bf16 for auto."""
        weights = weights_version(self.model)
        if self._int8_stage is not None and weights == self._int8_weights:
            return
        self.fingerprint = model_fingerprint(self.model)
        if not self._plan:
            self._plan = {role: int8.guard_sample(texts)}
        root = self.cache_dir if self.cache_dir is not None else int8.default_cache_root()
        calibration = int8.calibration_key({r: [self.prompts[r] + t for t in ts] for r, ts in self._plan.items()})
        folder = int8.export_dir(root, self.fingerprint, calibration)
        guard = int8.read_guard(folder)
        recorder = int8.Recorder(self._with_types())
        checks: dict[str, tuple[list[str], np.ndarray]] = {}
        if guard is None:
            # Calibrate on half of each sample and check on the other half: a guard on the calibration texts
            # themselves would flatter static quantization.
            for r, sample in self._plan.items():
                calibrate, check = sample[::2], sample[1::2] or sample
                self._encode(calibrate, r, [recorder, self.model])
                checks[r] = (check, self._encode(check, r, [self.model]))
        stage, status = int8.load_stage(self.model, folder, self._with_types(), lambda: recorder.feeds)
        if guard is None:
            rest = list(self.model)[1:]
            guard = int8.role_guards({r: int8.guard_result(ref, self._encode(check, r, [stage, *rest]))
                                      for r, (check, ref) in checks.items()})
            int8.write_guard(stage.folder, guard)
            for r, g in guard["roles"].items():
                log.info("int8 guard (%s role): cosine to fp32 mean %.4f, min %.4f on %d texts (%s)", r, g["mean_cosine"],
                         g["min_cosine"], g["texts"], "passed" if g["passed"] else "FAILED")
        self.int8_report = {**guard, "export": status, "folder": str(stage.folder)}
        if not guard["passed"]:
            if self.requested_precision == "int8":
                raise int8.guard_error(guard, self.fingerprint)
            self.precision = resolve_precision(self.requested_precision, self.device)
            log.warning("precision auto: int8 failed its quality guard (mean cosine %.4f, min %.4f); using %s",
                        guard["mean_cosine"], guard["min_cosine"], self.precision)
            return
        self._int8_stage, self._int8_weights = stage, weights

    def _with_types(self) -> bool:
        return "token_type_ids" in getattr(self.model.tokenizer, "model_input_names", [])

    def _runner(self) -> torch.nn.Module:
        """The module to run: the model itself (fp32) or a bf16 copy kept in sync with its weights."""
        if self.precision == "fp32":
            return self.model
        src = dict(self.model.named_parameters())
        if self._shadow is None or set(src) != {name for name, _ in self._shadow.named_parameters()}:
            # first use, or the model's modules changed (LoRA layers merged after training): a fresh copy
            self._shadow = copy.deepcopy(self.model).to(torch.bfloat16).eval()
        else:  # weights may have changed since (training): copy them in, cheap next to a forward pass
            with torch.no_grad():
                for name, p in self._shadow.named_parameters():
                    p.copy_(src[name])
        return self._shadow

    def _lengths(self, texts: list[str], role: str, chunk: int = 2048) -> np.ndarray:
        """Token count of each text as the model's own preprocessing gives it (prompt included, truncated)."""
        out = []
        for start in range(0, len(texts), chunk):
            part = texts[start:start + chunk]
            mask = preprocess(self.model, part, self.prompts[role], role).get("attention_mask")
            # a first module without an attention mask (StaticEmbedding): characters stand in for tokens
            out.append(mask.sum(dim=1).numpy() if mask is not None else np.array([len(t) for t in part]))
        return np.concatenate(out)

    def _batches(self, lengths: np.ndarray) -> list[np.ndarray]:
        """Groups of indices, longest first, under a token budget of batch_size * max_seq_length.

        A batch also closes when the next text would push padding past 10% of the batch, once the
        batch already holds an eighth of the budget (tiny batches cost more in overhead than padding).
        """
        order = np.argsort(-lengths, kind="stable")
        max_len = self.model.max_seq_length
        max_len = max_len if max_len is not None and np.isfinite(max_len) else lengths.max()  # StaticEmbedding: inf
        budget = self.batch_size * max(int(max_len), 1)
        batches, start, n_total = [], 0, len(order)
        while start < n_total:
            width = max(int(lengths[order[start]]), 1)
            limit = max(1, min(budget // width, n_total - start))
            n, real = 1, width
            while n < limit:
                nxt = int(lengths[order[start + n]])
                if (real + nxt) < 0.9 * width * (n + 1) and width * n >= budget // 8:
                    break
                real += nxt
                n += 1
            batches.append(order[start:start + n])
            start += n
        return batches

    def _encode(self, texts: list[str], role: str, stages: list) -> np.ndarray:
        """Encode in batches packed by token length; each batch is the model's own `preprocess` of its texts
        (the path training and sentence-transformers take), run through `stages`, finished by the rule."""
        dim = self.model.get_embedding_dimension()
        if not texts:
            return np.zeros((0, dim), dtype=np.float32)
        lengths = self._lengths(texts, role)
        out = torch.empty((len(texts), dim), dtype=torch.float32)
        bar = progress.bar(total=len(texts), desc="encode", unit="text", enabled=self.show_progress, leave=False)
        with torch.inference_mode():
            for idx in self._batches(lengths):
                features = preprocess(self.model, [texts[i] for i in idx], self.prompts[role], role)
                features = batch_to_device(features, self.device)
                for stage in stages:
                    features = stage(features)
                out[torch.from_numpy(idx)] = self.rule.finish(features["sentence_embedding"]).cpu()
                bar.update(len(idx))
        bar.close()
        return out.numpy()


class MemoEncoder:
    """An Encode over a model that never changes (the frozen document tower): every distinct text is
    encoded once per role and kept in memory, so the corpus is encoded once for mining, training and
    every evaluation."""

    def __init__(self, encode: Encoder):
        self.inner = encode
        self.fingerprint = encode.fingerprint
        self.rule = encode.rule
        self.prepare = encode.prepare
        self._rows: dict[str, dict[str, int]] = {role: {} for role in ROLES}
        self._store: dict[str, list[np.ndarray]] = {role: [] for role in ROLES}

    def __call__(self, texts: list[str], role: str = "document") -> np.ndarray:
        rows = self._rows[role]
        missing = list(dict.fromkeys(t for t in texts if t not in rows))
        if missing:
            new = self.inner(missing, role)
            base = sum(len(b) for b in self._store[role])
            for i, t in enumerate(missing):
                rows.setdefault(t, base + i)
            self._store[role].append(new)
            self._store[role] = [np.concatenate(self._store[role])]
        if not texts:
            return np.zeros((0, self.inner.model.get_embedding_dimension()), dtype=np.float32)
        return self._store[role][0][[rows[t] for t in texts]]


def model_rule(model: SentenceTransformer, mc: ModelConfig) -> TextRule:
    """`textrule.text_rule` of `model` with a recipe's model section (None = the model's own prompt/similarity)."""
    return text_rule(model, mc.query_prompt, mc.document_prompt, mc.similarity)


def adopt_rule(model: SentenceTransformer, rule: TextRule) -> None:
    """Write `rule` into the model's own settings (prompts, similarity) when the recipe overrode them, so the
    folder it is saved to encodes with `encode_query` / `encode_document` as textcl trained and scored it."""
    for role in ("query", "document"):
        if model_prompt(model, role) != rule.prompts[role]:
            model.prompts = {**(model.prompts or {}), role: rule.prompts[role]}
    if model.similarity_fn_name != rule.similarity:
        model.similarity_fn_name = rule.similarity
