"""`textcl train RECIPE --set ... [--resume]` end to end on a tiny BEIR folder with dev evaluation."""

from __future__ import annotations

import json
from pathlib import Path

from sentence_transformers import SentenceTransformer
from train_helpers import WORDS

from textcl.cli import main


def _beir(folder: Path) -> Path:
    """Ten topics; each query's relevant doc shares its topic words. Train qrels q0-q7, dev q8-q9."""
    (folder / "qrels").mkdir(parents=True)
    with open(folder / "corpus.jsonl", "w") as fh:
        for i in range(10):
            fh.write(json.dumps({"_id": f"d{i}", "title": "", "text": " ".join(WORDS[3 * i:3 * i + 3] * 2)}) + "\n")
    with open(folder / "queries.jsonl", "w") as fh:
        for i in range(10):
            fh.write(json.dumps({"_id": f"q{i}", "text": " ".join(WORDS[3 * i:3 * i + 2])}) + "\n")
    for split, ids in (("train", range(8)), ("dev", range(8, 10))):
        rows = ["query-id\tcorpus-id\tscore"] + [f"q{i}\td{i}\t1" for i in ids]
        (folder / "qrels" / f"{split}.tsv").write_text("\n".join(rows) + "\n")
    return folder


def test_train_command_with_dev_eval_then_resume(tiny_model_path, tmp_path):
    data = _beir(tmp_path / "toy")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"""
model: {{name_or_path: {tiny_model_path}, max_seq_length: 32}}
data: {{train: toy, format: beir, split: train}}
mining: {{output: mined.jsonl}}
train: {{output_dir: out, batch_size: 4, lr: 1e-3, precision: fp32, eval_every: 2}}
eval: {{retrieval: [toy], dev_split: dev, k_values: [1, 10]}}
""")
    out = tmp_path / "run"
    rc = main(["train", str(recipe), "--set", "train.max_steps=4", "--set", f"train.output_dir={out}"])
    assert rc == 0
    assert data.is_dir() and SentenceTransformer(str(out), device="cpu").encode(["cancer"]).shape == (1, 32)
    card = (out / "README.md").read_text()
    assert "| dev | toy/ndcg@10 |" in card and "format\": \"beir\"" in card
    state = json.loads((out / "checkpoints" / "step-00000004" / "trainer_state.json").read_text())
    assert [h["step"] for h in state["history"] if "eval" in h] == [0, 2, 4]
    # Resuming a finished run restores it and rewrites the same best model.
    before = (out / "model.safetensors").read_bytes()
    rc = main(["train", str(recipe), "--set", "train.max_steps=4", "--set", f"train.output_dir={out}",
               "--resume"])
    assert rc == 0 and (out / "model.safetensors").read_bytes() == before


def test_train_command_reports_bad_recipe(tmp_path, caplog):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("train: {batch_sise: 4}\n")
    assert main(["train", str(recipe)]) == 2
    assert "did you mean 'batch_size'" in caplog.text
