#!/usr/bin/env bash
# The GPU check of issue 31, for a lent machine (one GPU, no internet but PyPI, under 10 minutes in all):
#   1. a venv with `pip install -e .` (PyPI; skipped when PYTHON is given, e.g. PYTHON=.venv/bin/python);
#   2. the training corpus resident on the GPU: loop.set_up on the query-side recipe, a few steps, the corpus
#      embeddings' device and storage pointer checked before and after (no per-step copy);
#   3. recipes/nfcorpus-fast.yaml (query-side) and recipes/nfcorpus-adapter.yaml (lr 3e-4) on the GPU, seed 42;
#   4. step time and test nDCG@10 against the CPU records in bench/records/ (fast.jsonl, adapter.jsonl).
# Writes under $OUT (default out/gpu-check): env.txt, resident.json, the two run folders, gpu_check.jsonl (records,
# via bench/common.py's append_record) and compare.md.
#   bash bench/gpu_check.sh                       # on the lent machine
#   DRY_RUN=1 PYTHON=.venv/bin/python bash bench/gpu_check.sh   # CPU plumbing check: 2 steps each, no GPU asserts
# NFCorpus and STS-B are read from $DATA (default: ../shared/data, else shared/data inside the repository).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/gpu-check}
mkdir -p "$OUT"
DATA=${DATA:-../shared/data}
[ -d "$DATA/nfcorpus" ] || DATA=shared/data
[ -d "$DATA/nfcorpus" ] || { echo "NFCorpus not found: set DATA to the folder holding nfcorpus/ and stsbenchmark/" >&2; exit 2; }
DATA=$(cd "$DATA" && pwd)
START=$(date +%s)

if [ -z "${PYTHON:-}" ]; then
    python3 -m venv .gpu-venv
    .gpu-venv/bin/pip install -q --upgrade pip
    .gpu-venv/bin/pip install -q -e .
    PYTHON=.gpu-venv/bin/python
fi
TEXTCL="$(dirname "$PYTHON")/textcl"
{ nvidia-smi || true; "$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"; } \
    > "$OUT/env.txt" 2>&1
echo "setup: $(( $(date +%s) - START )) s"

SETS=(--set "data.train=$DATA/nfcorpus" --set "eval.retrieval=[$DATA/nfcorpus]" --set "index.corpus=$DATA/nfcorpus")
FAST=("${SETS[@]}" --set "eval.ood_sts=[$DATA/stsbenchmark]")
ADAPTER=("${SETS[@]}" --set train.lr=0.0003)
if [ -n "${DRY_RUN:-}" ]; then  # CPU: the plumbing only (2 steps, no WiSE-FT mixes)
    FAST+=(--set train.max_steps=2 --set "train.interpolate_base=[]" --set train.max_ood_drop=null)
    ADAPTER+=(--set train.max_steps=2)
fi

# 2. the corpus lives on the device: same storage before and after the steps, on cuda
"$PYTHON" - "$OUT" "$DATA" "${DRY_RUN:-}" <<'EOF'
import json, sys
from textcl.config import load_recipe
from textcl.paths import place_outputs
from textcl.train import loop
out, data, dry = sys.argv[1:4]
config = place_outputs(load_recipe("recipes/nfcorpus-fast.yaml", [
    f"output_dir={out}/resident", f"data.train={data}/nfcorpus", "eval.retrieval=[]", "eval.ood_sts=[]",
    "train.max_steps=3", "train.interpolate_base=[]", "train.max_ood_drop=null", "train.early_stopping_patience=null"]))
trainer = loop.set_up(config, overwrite=True)
emb = trainer.corpus.embeddings
before = (str(emb.device), emb.data_ptr(), str(emb.dtype), list(emb.shape))
loop.fit(trainer)
after = (str(trainer.corpus.embeddings.device), trainer.corpus.embeddings.data_ptr())
record = {"device": before[0], "dtype": before[2], "shape": before[3], "same_storage": before[1] == after[1],
          "device_after": after[0]}
json.dump(record, open(f"{out}/resident.json", "w"), indent=1)
print("resident:", record)
assert record["same_storage"] and after[0] == before[0], "the corpus moved during training"
assert dry or before[0].startswith("cuda"), f"the corpus is on {before[0]}, not the GPU"
EOF
echo "resident check: $(( $(date +%s) - START )) s"

# 3. the two recipes, seed 42 (the CPU records' first seed)
"$TEXTCL" run recipes/nfcorpus-fast.yaml --no-progress --set seed=42 --set "output_dir=$OUT/fast" "${FAST[@]}"
echo "query-side recipe: $(( $(date +%s) - START )) s"
"$TEXTCL" run recipes/nfcorpus-adapter.yaml --no-progress --set seed=42 --set "output_dir=$OUT/adapter" \
    "${ADAPTER[@]}"
echo "adapter recipe: $(( $(date +%s) - START )) s"

# 4. against the CPU records
"$PYTHON" - "$OUT" <<'EOF'
import json, statistics, sys
from pathlib import Path
sys.path.insert(0, "bench")
from common import append_record
from bench_fast import RECIPE_VARIANT, result_row
out = Path(sys.argv[1])
records = lambda name: [json.loads(x) for x in Path("bench/records", name).read_text().splitlines() if x.strip()]
env = (out / "env.txt").read_text()
fast = result_row(out / "fast", 42, "full")
cpu_fast = [r for r in records("fast.jsonl") if r.get("mode") == "full" and r.get("steps")
            and r.get("variant") == RECIPE_VARIANT]  # the recipe as it is today, not the variants tried
summary = json.loads((out / "adapter" / "summary.json").read_text())
adapter = json.loads((out / "adapter" / "model" / "adapter" / "adapter.json").read_text()) \
    if (out / "adapter" / "model" / "adapter" / "adapter.json").is_file() else {}
cpu_adapter = [r for r in records("adapter.jsonl") if r.get("lr") == 0.0003]
def per_step(rows, key="train"):
    return statistics.median(r["stages_s"][key] / r["steps"] for r in rows if r.get("steps"))
def pts(xs):
    xs = [100 * x for x in xs if x is not None]
    return f"{statistics.mean(xs):.2f} ± {statistics.stdev(xs):.2f} ({len(xs)} seeds)" if len(xs) > 1 else f"{xs}"
rows = [
    {"run": "query-side recipe", "gpu_train_s": fast["stages_s"].get("train"), "gpu_steps": fast["steps"],
     "gpu_s_per_step": fast["stages_s"]["train"] / fast["steps"], "cpu_s_per_step": per_step(cpu_fast),
     "gpu_ndcg10": fast["nfcorpus_after"], "cpu_ndcg10": pts([r["nfcorpus_after"] for r in cpu_fast])},
    {"run": "adapter recipe (lr 3e-4)", "gpu_train_s": adapter.get("train_s"), "gpu_steps": adapter.get("steps"),
     "gpu_s_per_step": adapter["train_s"] / adapter["steps"] if adapter.get("steps") else None,
     "cpu_s_per_step": statistics.median(r["train_s"] / r["steps"] for r in cpu_adapter),
     "gpu_ndcg10": summary["after"].get("nfcorpus/ndcg@10"), "cpu_ndcg10": pts([r["test_after"] for r in cpu_adapter])},
]
lines = ["| run | GPU train s (steps) | GPU s/step | CPU s/step (records) | GPU test nDCG@10 x100 | CPU test nDCG@10 x100 |",
         "|---|---|---|---|---|---|"]
for r in rows:
    append_record(out / "gpu_check.jsonl", {**r, "resident": json.loads((out / "resident.json").read_text()),
                                            "gpu": env.splitlines()[-1]})
    lines.append(f"| {r['run']} | {r['gpu_train_s']} ({r['gpu_steps']}) | {r['gpu_s_per_step']:.4f} | "
                 f"{r['cpu_s_per_step']:.4f} | {100 * r['gpu_ndcg10']:.2f} | {r['cpu_ndcg10']} |")
(out / "compare.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
echo "total: $(( $(date +%s) - START )) s"
