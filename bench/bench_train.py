"""Training throughput and held-out quality: textcl vs sentence-transformers' SentenceTransformerTrainer.

Same model (bundled all-MiniLM-L6-v2), same NFCorpus triplets (query, positive, one negative), batch
32, max_seq_length 256, lr 2e-5, 10% warmup, linear decay, same number of steps, in ONE run:
ST fp32 (default), ST bf16 (`bf16=True`), textcl bf16 and fp32. Throughput = triplets/s between the end of the
first step and the end of the last (the first step's warm-up excluded, identically for all). After
training, every model is scored on the NFCorpus dev split (nDCG@10) with the same exact evaluator.

    .venv/bin/python bench/bench_train.py --mode quick --out bench/results/train.md
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time

import numpy as np
from common import BF16_SKIPPED, NFCORPUS, ROOT, append_record, bench_precision, bf16_rows, write_section

from textcl.config import EvalConfig, load_recipe
from textcl.data.io import load_beir, load_examples
from textcl.eval import evaluate
from textcl.models import Encoder, resolve_model_path
from textcl.train.loop import train
from textcl.types import Example

BATCH, SEQ, LR, SEED = 32, 256, 2e-5, 42
log = logging.getLogger("bench_train")


def triplets(n: int) -> list[Example]:
    """First `n` train queries (file order) with their first positive and a deterministic random negative
    (a corpus document not judged relevant to the query; numpy seed 42) — no miner involved."""
    examples, _ = load_examples(NFCORPUS, split="train")
    corpus = load_beir(NFCORPUS, split="train").corpus
    doc_ids = sorted(corpus)
    rng = np.random.default_rng(SEED)
    out = []
    for ex in examples[:n]:
        judged = set(ex.positive_ids)
        neg = doc_ids[int(rng.integers(len(doc_ids)))]
        while neg in judged:
            neg = doc_ids[int(rng.integers(len(doc_ids)))]
        out.append(Example(query=ex.query, positives=(ex.positives[0],), negatives=(corpus[neg].full_text,),
                           query_id=ex.query_id, positive_ids=(ex.positive_ids[0],), negative_ids=(neg,)))
    return out


def rate(stamps: list[float], sizes: list[int] | None = None) -> float:
    """Triplets per second from the end of step 1 to the end of the last step (actual batch sizes)."""
    done = sum(sizes[1:]) if sizes else (len(stamps) - 1) * BATCH
    return done / (stamps[-1] - stamps[0])


def run_st(model_path: str, data: list[Example], steps: int, bf16: bool, out: str) -> tuple[float, object]:
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
        losses,
    )
    from sentence_transformers.sentence_transformer.training_args import BatchSamplers
    from transformers import TrainerCallback

    stamps: list[float] = []

    class Timer(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
            stamps.append(time.perf_counter())

    model = SentenceTransformer(model_path, device="cpu")
    model.max_seq_length = SEQ
    ds = Dataset.from_dict({"anchor": [e.query for e in data], "positive": [e.positives[0] for e in data],
                            "negative": [e.negatives[0] for e in data]})
    args = SentenceTransformerTrainingArguments(
        output_dir=out, per_device_train_batch_size=BATCH, max_steps=steps, learning_rate=LR, warmup_ratio=0.1,
        lr_scheduler_type="linear", bf16=bf16, use_cpu=True, save_strategy="no", report_to="none",
        logging_steps=10_000, seed=SEED, dataloader_drop_last=True, batch_sampler=BatchSamplers.NO_DUPLICATES, disable_tqdm=True)
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=ds,
                                         loss=losses.MultipleNegativesRankingLoss(model), callbacks=[Timer()])
    trainer.train()
    return rate(stamps), model


def run_textcl(model_path: str, data: list[Example], steps: int, out: str, *extra: str) -> tuple[float, object]:
    from sentence_transformers import SentenceTransformer

    stamps: list[float] = []
    sizes: list[int] = []

    def record(event: dict) -> None:
        stamps.append(time.perf_counter())
        sizes.append(event["examples"])

    config = load_recipe(None, [f"model.name_or_path={model_path}", f"model.max_seq_length={SEQ}",
                                f"train.batch_size={BATCH}", f"train.max_steps={steps}", f"train.lr={LR}",
                                "train.warmup_ratio=0.1", "train.precision=bf16", "train.num_negatives=1",
                                f"train.output_dir={out}", f"seed={SEED}", "train.log_every=10000", *extra])
    train(config, data, callbacks=[record])
    return rate(stamps, sizes), SentenceTransformer(out, device="cpu")


def dev_ndcg(model: object) -> float:
    enc = Encoder(model, precision=bench_precision(), batch_size=64, show_progress=False)
    metrics = evaluate(enc, EvalConfig(retrieval=[str(NFCORPUS)], k_values=[10]), "dev")
    return metrics["nfcorpus/ndcg@10"]


def main() -> int:
    from sentence_transformers import SentenceTransformer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["quick", "full"], default="quick")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "train.md"))
    parser.add_argument("--steps", type=int, default=None, help="default: 4 (quick), 40 (full)")
    parser.add_argument("--eval", action=argparse.BooleanOptionalAction, default=None,
                        help="score dev nDCG@10 after training (default: full mode only; ~3 min per model here)")
    args = parser.parse_args()
    do_eval = args.mode == "full" if args.eval is None else args.eval
    logging.basicConfig(level=logging.WARNING)
    steps = args.steps or (4 if args.mode == "quick" else 40)
    model_path = resolve_model_path("all-MiniLM-L6-v2")
    data = triplets(BATCH * steps * 2)  # twice what the steps use, so duplicate-aware samplers fill batches
    with_bf16 = bf16_rows(args.mode)
    load_before = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = dev_ndcg(SentenceTransformer(model_path, device="cpu")) if do_eval else None
        for name, fn in [("sentence-transformers fp32 (default)", lambda: run_st(model_path, data, steps, False,
                                                                                 f"{tmp}/st32")),
                         ("sentence-transformers bf16", lambda: run_st(model_path, data, steps, True, f"{tmp}/st16")),
                         ("textcl bf16", lambda: run_textcl(model_path, data, steps, f"{tmp}/tc",
                                                            "train.length_grouped=true")),
                         ("textcl fp32", lambda: run_textcl(model_path, data, steps, f"{tmp}/tc32",
                                                            "train.length_grouped=true", "train.precision=fp32"))]:
            if "bf16" in name and not with_bf16:
                continue
            speed, model = fn()
            rows.append((name, speed, dev_ndcg(model) if do_eval else None))
            print(f"{name}: {speed:.2f} triplets/s", flush=True)
    append_record(ROOT / "bench" / "records" / "train.jsonl", {"bench": "train", "mode": args.mode, "steps": steps, "batch": BATCH,
                  "max_seq_length": SEQ, "lr": LR, "load_before": load_before, "base_dev_ndcg@10": base,
                  "rows": [{"setup": n, "triplets_per_s": s, "dev_ndcg@10": d} for n, s, d in rows]})  # issue 29
    st32 = rows[0][1]
    st16 = next((speed for name, speed, _ in rows if name == "sentence-transformers bf16"), None)
    lines = ["## Training throughput: textcl vs SentenceTransformerTrainer", "",
             f"all-MiniLM-L6-v2 on NFCorpus train triplets, batch {BATCH}, max_seq_length {SEQ}, {steps} steps, "
             f"lr {LR}, warmup 10%, linear. Negatives: one deterministic random non-relevant document per query "
             f"(seed {SEED}; the miner was not used here). ST: `SentenceTransformerTrainer` + "
             "`MultipleNegativesRankingLoss` (scale 20 = temperature 0.05), NO_DUPLICATES sampler. "
             "Throughput excludes the first step and counts the triplets actually in each batch. Dev nDCG@10 by textcl's exact evaluator "
             + (f"(base model: {base:.4f})." if base is not None else "(not run in this mode: pass --eval).")
             + " Steps run one after another: ST fp32, ST bf16, textcl bf16, textcl fp32.", "",
             "| setup | triplets/s | vs ST fp32 | vs ST bf16 | dev nDCG@10 after |", "|---|---|---|---|---|"]
    for name, speed, ndcg in rows:
        shown = f"{ndcg:.4f}" if ndcg is not None else "not measured"
        lines.append(f"| {name} | {speed:.2f} | {speed / st32:.2f}x | "
                     f"{f'{speed / st16:.2f}x' if st16 else 'not run'} | {shown} |")
    cmd = " ".join(["bench/bench_train.py", *sys.argv[1:]])
    lines += ["", f"Command: `.venv/bin/python {cmd}`. Measured on a shared "
              "2-core machine while other jobs ran: absolute numbers are noisy; ratios come from the same run.", ""]
    if not with_bf16:
        lines += [BF16_SKIPPED, ""]
    write_section(args.out, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
