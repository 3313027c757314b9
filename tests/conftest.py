"""Shared fixtures: a tiny randomly initialised BERT (built offline) and a keyword mock encoder."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# `pytest -n N` (make test): N workers share the cores, one thread each (and each process they start); set
# before numpy and torch are imported, which is when they read it. Threads that outnumber cores spin and wait.
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
WORDS = ("the a of and to in is for on with what how why does do are cancer diet vitamin heart "
         "risk health study food sugar fat cell blood brain sleep exercise coffee tea milk meat "
         "fish fruit green red cat dog car tree house river music book play run eat drink man "
         "woman child good bad new old big small").split()


def build_tiny_model(path: Path, seed: int = 0) -> Path:
    """Write a 2-layer, hidden-32 BERT sentence-transformer with a word-level vocab to `path`."""
    import torch
    from sentence_transformers import SentenceTransformer
    try:  # sentence-transformers >= 6 (the old path still works there, with a DeprecationWarning)
        from sentence_transformers.sentence_transformer import modules as models
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers import models
    from transformers import BertConfig, BertModel, BertTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    hf_dir = path / "hf"
    hf_dir.mkdir(exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *[f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"],
             *list("abcdefghijklmnopqrstuvwxyz0123456789.,?!'-")]
    (hf_dir / "vocab.txt").write_text("\n".join(dict.fromkeys(vocab)) + "\n")
    # transformers 5 takes the vocabulary as `vocab` (a path or mapping); `vocab_file` is ignored there.
    vocab_map = {tok: i for i, tok in enumerate(dict.fromkeys(vocab))}
    try:
        tokenizer = BertTokenizerFast(vocab=vocab_map, do_lower_case=True)
    except TypeError:  # transformers 4.x
        tokenizer = BertTokenizerFast(vocab_file=str(hf_dir / "vocab.txt"), do_lower_case=True)
    assert tokenizer.vocab_size == len(vocab_map), "tiny tokenizer lost its vocabulary"
    tokenizer.save_pretrained(hf_dir)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(hf_dir, safe_serialization=True)
    transformer = models.Transformer(str(hf_dir), max_seq_length=64)
    pooling = models.Pooling(transformer.get_embedding_dimension(), pooling_mode="mean")
    model = SentenceTransformer(modules=[transformer, pooling, models.Normalize()], device="cpu")
    out = path / "st"
    model.save(str(out))
    return out


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"benchmark data not found at {SHARED_DATA}")
    return SHARED_DATA


class KeywordEncoder:
    """One-hot bag of keywords, L2-normalised: retrieval results can be checked by hand."""

    def __init__(self, keywords: list[str]):
        self.keywords = [k.lower() for k in keywords]

    def __call__(self, texts: list[str], role: str = "document") -> np.ndarray:
        out = np.zeros((len(texts), len(self.keywords) + 1), dtype=np.float32)
        for i, text in enumerate(texts):
            words = text.lower().split()
            for j, k in enumerate(self.keywords):
                out[i, j] = words.count(k)
            out[i, -1] = 1e-3  # no all-zero rows
        return out / np.linalg.norm(out, axis=1, keepdims=True)


@pytest.fixture
def keyword_encoder() -> type[KeywordEncoder]:
    return KeywordEncoder

