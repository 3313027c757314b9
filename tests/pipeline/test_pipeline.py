"""Pipeline: stage hashing, skipping and resuming (fake stages), then `textcl run` end to end on the tiny
model: every stage, cached re-run, partial re-run after a config or data change, skip list."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from textcl.cli import main
from textcl.config import RunConfig, load_recipe
from textcl.errors import ConfigError
from textcl.eval import evaluate
from textcl.index import SearchIndex
from textcl.models import Encoder, load_model, make_encoder, model_fingerprint
from textcl.pipeline import (
    STAGES,
    Context,
    NotApplicable,
    Stage,
    file_stamp,
    resume_rule,
    run_pipeline,
    run_stage,
)

ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------- framework, with fake stages


def _stages(calls: list, value: dict):
    first = Stage("a", lambda cfg: {"x": value["x"]}, lambda c, resume: calls.append("a") or {"out": value["x"] * 2})
    second = Stage("b", lambda cfg: {}, lambda c, resume: calls.append("b") or {"got": c.results["a"]["out"]},
                   depends=("a",))
    return first, second


def _run(ctx: Context, stages, skip=(), force=()) -> None:
    for st in stages:
        run_stage(ctx, st, set(skip), force=st.name in force)


def test_stage_reuse_invalidation_and_skip(tmp_path):
    calls: list = []
    value = {"x": 1}
    ctx = Context(RunConfig(), tmp_path)
    _run(ctx, _stages(calls, value))
    assert calls == ["a", "b"] and ctx.results["b"] == {"got": 2}
    marker = json.loads((tmp_path / "stages" / "a.json").read_text())
    assert marker["complete"] and marker["result"] == {"out": 2} and marker["inputs"]["inputs"] == {"x": 1}

    ctx = Context(RunConfig(), tmp_path)  # same inputs: nothing runs, results come from the markers
    _run(ctx, _stages(calls, value))
    assert calls == ["a", "b"] and ctx.status["a"]["status"] == "cached" and ctx.results["b"] == {"got": 2}

    value["x"] = 5  # an input of "a" changed: "a" re-runs, and "b" because a's result changed
    ctx = Context(RunConfig(), tmp_path)
    _run(ctx, _stages(calls, value))
    assert calls == ["a", "b", "a", "b"] and ctx.results["b"] == {"got": 10}

    ctx = Context(RunConfig(), tmp_path)  # skipped: the earlier result is kept for downstream stages
    _run(ctx, _stages(calls, value), skip=("a",))
    assert calls == ["a", "b", "a", "b"] and ctx.status["a"]["status"] == "skipped, previous result kept"
    assert ctx.status["b"]["status"] == "cached"

    ctx = Context(RunConfig(), tmp_path)  # forced: runs even though nothing changed
    _run(ctx, _stages(calls, value), force=("a",))
    assert calls[-1] == "a" and ctx.status["b"]["status"] == "cached"  # same result -> b still valid


def test_interrupted_stage_reruns_and_not_applicable(tmp_path):
    calls: list = []

    def boom(ctx, resume):
        calls.append("boom")
        raise KeyboardInterrupt

    ctx = Context(RunConfig(), tmp_path)
    with pytest.raises(KeyboardInterrupt):
        run_stage(ctx, Stage("a", lambda cfg: {}, boom), set())
    assert json.loads((tmp_path / "stages" / "a.json").read_text())["complete"] is False
    run_stage(ctx, Stage("a", lambda cfg: {}, lambda c, resume: {"ok": 1}), set())  # incomplete marker: runs again
    assert ctx.status["a"]["status"] == "done" and ctx.results["a"] == {"ok": 1}

    def nothing(ctx, resume):
        raise NotApplicable("no eval sets")

    run_stage(ctx, Stage("n", lambda cfg: {}, nothing), set())
    assert ctx.status["n"]["status"] == "not applicable: no eval sets" and ctx.results["n"] is None


def test_resume_rule_reuses_resumes_or_runs():
    plain, resumable = Stage("a", dict, dict), Stage("t", dict, dict, resumable=True)
    done, killed = {"hash": "h", "complete": True}, {"hash": "h", "complete": False}
    assert resume_rule(plain, done, "h", forced=False) == "reuse"
    assert resume_rule(plain, done, "h", forced=True) == resume_rule(plain, done, "new", forced=False) == "run"
    assert resume_rule(plain, killed, "h", forced=False) == "run"  # nothing to continue: from scratch
    assert resume_rule(resumable, killed, "h", forced=False) == resume_rule(resumable, killed, "h", forced=True) \
        == "resume"  # forcing does not throw away the interrupted work
    assert resume_rule(resumable, killed, "new", forced=False) == resume_rule(resumable, None, "h", forced=False) \
        == "run"


def test_an_interrupted_resumable_stage_is_run_with_resume(tmp_path):
    seen: list = []

    def body(ctx, resume):
        seen.append(resume)
        if len(seen) == 1:
            raise KeyboardInterrupt
        return {"ok": 1}

    stage = Stage("t", lambda cfg: {"x": 1}, body, outputs=("t.txt", "mining.output"), resumable=True)
    ctx = Context(RunConfig(), tmp_path)
    with pytest.raises(KeyboardInterrupt):
        run_stage(ctx, stage, set())
    run_stage(ctx, stage, set())
    assert seen == [False, True] and ctx.status["t"]["status"] == "done"
    marker = json.loads((tmp_path / "stages" / "t.json").read_text())
    assert marker["outputs"] == [str(tmp_path / "t.txt")]  # mining.output is unset: nothing to list
    run_stage(ctx, stage, set(), force=True)  # a forced re-run of a COMPLETE stage starts afresh
    assert seen == [False, True, False]


def test_file_stamp_tracks_content(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("one")
    first = file_stamp(str(f))
    f.write_text("two")
    assert file_stamp(str(f)) != first
    assert file_stamp("org/model") == {"id": "org/model"} and file_stamp(None) is None


def test_allowing_test_selection_reruns_no_stage():
    plain, allowed = RunConfig(), load_recipe(None, ["eval.allow_test_selection=true"])
    for stage in STAGES:
        assert stage.inputs(plain) == stage.inputs(allowed), stage.name


def test_unknown_skip_stage_is_an_error(tmp_path):
    cfg = load_recipe(None, [f"output_dir={tmp_path}", "skip=[trian]"])
    with pytest.raises(ConfigError, match=r"skip: unknown stage\(s\) \['trian'\]; valid stages: check, eval_base"):
        run_pipeline(cfg)


# ---------------------------------------------------------------- end to end on the tiny model


def _tiny_project(root: Path, model: Path) -> Path:
    """A 24-pair training file, a BEIR held-out folder and an OOD folder, and a recipe using them."""
    words = ["cat", "dog", "car", "tree", "river", "music", "book", "coffee"]
    train = [{"query": f"what about the {w} {i}", "positive": f"the {w} is here {i}", "source": "s1" if i else "s2"}
             for i in range(3) for w in words]
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train))
    for name, n in (("heldout", 8), ("general", 4)):
        folder = root / name
        (folder / "qrels").mkdir(parents=True)
        (folder / "corpus.jsonl").write_text("".join(
            json.dumps({"_id": f"d{i}", "title": words[i], "text": f"all about {words[i]} {'x ' * i}"}) + "\n"
            for i in range(n)))
        (folder / "queries.jsonl").write_text("".join(
            json.dumps({"_id": f"q{i}", "text": f"{words[i]} {'y ' * i}"}) + "\n" for i in range(n)))
        for split in ("dev", "test"):
            (folder / "qrels" / f"{split}.tsv").write_text(
                "query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in range(n)))
    recipe = {"seed": 3, "output_dir": "./out", "model": {"name_or_path": str(model), "max_seq_length": 32,
                                                        "precision": "fp32", "batch_size": 16},
              "data": {"train": "train.jsonl"}, "mining": {"num_negatives": 1, "depth": 5},
              "train": {"batch_size": 8, "max_steps": 2, "lr": 1e-4, "precision": "fp32", "eval_every": 1},
              "eval": {"retrieval": ["heldout"], "ood_retrieval": ["general"], "k_values": [1, 10]},
              "index": {"factory": "HNSW32"}}
    path = root / "recipe.yaml"
    path.write_text("# tiny test recipe\n" + yaml.safe_dump(recipe))
    return path


def _statuses(out: Path) -> dict:
    return {k: v["status"] for k, v in json.loads((out / "summary.json").read_text())["stages"].items()}


def _first_run(root: Path, model: Path) -> tuple[Path, Path]:
    recipe = _tiny_project(root, model)
    assert main(["run", str(recipe)]) == 0
    return recipe, root / "out"


def test_run_writes_every_stage_the_report_and_no_local_path(tmp_path, tiny_model_path, capsys):
    recipe, out = _first_run(tmp_path, tiny_model_path)
    printed = capsys.readouterr().out
    assert "in-domain     heldout/ndcg@10" in printed and f"report: {out}/report.md" in printed
    assert set(_statuses(out).values()) == {"done"}
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["before"]) == set(summary["after"]) and "heldout/ndcg@10" in summary["before"]
    assert summary["ood_metrics"] and all(k.startswith("general/") for k in summary["ood_metrics"])
    assert summary["data"]["examples"] == 24 and summary["data"]["sources"] == {"s1": 16, "s2": 8}
    assert summary["train"]["steps"] == 2 and summary["index"]["count"] == 8
    assert (out / "mined.jsonl").is_file() and (out / "model" / "config.json").is_file()
    assert (out / "index" / "index.faiss").is_file() and (out / "report.html").is_file()
    for png in ("training", "heldout", "similarity", "mining", "before_after"):
        assert (out / "plots" / f"{png}.png").stat().st_size > 5000
    for shared in ("summary.json", "report.md", "report.html", "model/README.md"):  # no local path leaks
        assert str(tmp_path) not in (out / shared).read_text(), shared
    assert summary["model_dir"] == "./model" and summary["output_dir"] == "."
    for marker in (out / "stages").glob("*.json"):  # every stage wrote what the stage table says it writes
        outputs = json.loads(marker.read_text())["outputs"]
        assert outputs and all(Path(p).exists() for p in outputs), (marker.name, outputs)


def test_rerun_with_nothing_changed_reuses_every_stage(tmp_path, tiny_model_path):
    recipe, out = _first_run(tmp_path, tiny_model_path)
    markers = {p.name: p.stat().st_mtime_ns for p in (out / "stages").glob("*.json")}
    assert main(["run", str(recipe)]) == 0
    assert _statuses(out) == {**dict.fromkeys(["check", "eval_base", "mine", "train", "eval_tuned", "index"],
                                              "cached"), "report": "done"}
    assert all((out / "stages" / n).stat().st_mtime_ns == t for n, t in markers.items() if n != "report.json")


def test_rerun_after_a_training_setting_changed_reruns_training_and_what_follows(tmp_path, tiny_model_path):
    recipe, out = _first_run(tmp_path, tiny_model_path)
    assert main(["run", str(recipe), "--set", "train.lr=2e-4"]) == 0
    assert _statuses(out) == {"check": "cached", "eval_base": "cached", "mine": "cached", "train": "done",
                              "eval_tuned": "done", "index": "done", "report": "done"}


def test_rerun_after_the_training_data_changed_reruns_every_stage_that_reads_it(tmp_path, tiny_model_path):
    recipe, out = _first_run(tmp_path, tiny_model_path)
    with (tmp_path / "train.jsonl").open("a") as f:
        f.write(json.dumps({"query": "one more", "positive": "another row"}) + "\n")
    assert main(["run", str(recipe)]) == 0
    st = _statuses(out)
    assert st["check"] == st["mine"] == st["train"] == "done" and st["eval_base"] == "done"


def test_rerun_after_the_train_stage_was_killed_resumes_it(tmp_path, tiny_model_path):
    recipe, out = _first_run(tmp_path, tiny_model_path)
    marker = out / "stages" / "train.json"  # as if the run was killed during training
    data = json.loads(marker.read_text())
    marker.write_text(json.dumps({**data, "complete": False}))
    assert main(["run", str(recipe)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stages"]["train"]["status"] == "done" and summary["train"]["resumed"] is True


def test_run_skip_list(tmp_path, tiny_model_path):
    recipe = _tiny_project(tmp_path, tiny_model_path)
    cfg = load_recipe(recipe, ["skip=[check, mine, train, index]"])
    summary = run_pipeline(cfg, recipe=str(recipe))
    st = summary["stages"]
    assert st["check"]["status"] == st["mine"]["status"] == st["train"]["status"] == "skipped"
    assert st["eval_tuned"]["status"].startswith("not applicable: no fine-tuned model")
    assert st["eval_base"]["status"] == "done" and summary["after"] == {} and summary["before"]
    out = tmp_path / "out"
    assert not (out / "mined.jsonl").exists() and not (out / "model").exists() and not (out / "index").exists()
    assert "heldout/ndcg@10" in (out / "report.md").read_text()


def test_query_side_run_embeds_each_text_once_per_model_and_keeps_the_index_valid(tmp_path, tiny_model_path,
                                                                                  monkeypatch):
    computed: dict[str, list[str]] = {}
    real = Encoder._encode

    def spy(self, texts, prompt, *stages):  # keyed by the weights at the time of the call
        computed.setdefault(model_fingerprint(self.model), []).extend(texts)
        return real(self, texts, prompt, *stages)

    monkeypatch.setattr(Encoder, "_encode", spy)
    recipe = _tiny_project(tmp_path, tiny_model_path)
    cfg = load_recipe(recipe, ["train.tune=query", "mining.enabled=false", "train.max_steps=3"])
    summary = run_pipeline(cfg, recipe=str(recipe))
    assert all(v["status"] == "done" or v["status"].startswith("not applicable") for v in summary["stages"].values())
    out = tmp_path / "out"
    assert (out / "embedding-cache").is_dir()  # the default cache of a query-side run
    # check, evaluation, training and the index: every DOCUMENT is embedded once by the base model (the
    # training loop's step-0 evaluation re-encodes a few held-out queries with the not-yet-trained tower)
    docs = {(json.loads(line)["title"] + " " + json.loads(line)["text"]).strip()
            for name in ("heldout", "general") for line in (tmp_path / name / "corpus.jsonl").read_text().splitlines()}
    docs |= {json.loads(line)["positive"] for line in (tmp_path / "train.jsonl").read_text().splitlines()}
    for fingerprint, texts in computed.items():
        repeated = {t for t in texts if texts.count(t) > 1}
        assert not repeated & docs, (fingerprint[:12], sorted(repeated & docs)[:3])
    assert docs <= set(computed[model_fingerprint(load_model(tiny_model_path, device="cpu", max_seq_length=32))])
    # the index was built by the document tower: the base model's fingerprint, not a new one
    base = Encoder(load_model(tiny_model_path, device="cpu", max_seq_length=32), precision="fp32")
    tuned = make_encoder(load_model(out / "model", device="cpu", max_seq_length=32), precision="fp32")
    assert tuned.fingerprint == base.fingerprint
    SearchIndex.load(out / "index", tuned)  # accepted: no re-indexing


def test_bundled_recipes_have_a_doc_comment():
    for path in sorted((ROOT / "recipes").glob("*.yaml")):
        first = path.read_text().splitlines()[0]
        assert first.startswith("# ") and len(first) > 20, f"{path.name} must start with a doc comment"


def test_train_stage_under_a_launcher(tmp_path, tiny_model_path):
    """`launcher:` runs training in subprocesses (accelerate launch on GPUs); "python" = one process here."""
    recipe = _tiny_project(tmp_path, tiny_model_path)
    cfg = load_recipe(recipe, ["launcher=python", "skip=[check, eval_base, mine, index]"])
    summary = run_pipeline(cfg, recipe=str(recipe))
    assert summary["stages"]["train"]["status"] == "done" and summary["train"]["launcher"] == "python"
    assert summary["train"]["steps"] == 2
    # the score reported for the model the launched process wrote: that model, evaluated here
    tuned = Encoder(load_model(tmp_path / "out" / "model", device="cpu", max_seq_length=32), precision="fp32",
                    show_progress=False)
    again = evaluate(tuned, cfg.eval, include_ood=False)
    assert summary["after"]["heldout/ndcg@10"] == pytest.approx(again["heldout/ndcg@10"], abs=1e-6)
    history = json.loads((tmp_path / "out" / "history.json").read_text())
    assert [h["step"] for h in history if "loss" in h] == [2]  # log_every=10: the last step is logged


def test_quickstart_data_is_regenerated_byte_for_byte(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_quickstart", ROOT / "data" / "make_quickstart.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    counts = module.build(tmp_path)
    assert counts == {"train": 448, "corpus": 160, "dev": 48, "test": 96, "general": 30, "general_corpus": 60}
    committed = ROOT / "data" / "quickstart"
    files = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(committed) for p in committed.rglob("*") if p.is_file())
    for rel in files:
        assert (tmp_path / rel).read_bytes() == (committed / rel).read_bytes(), rel
    # Held-out articles are never trained on: the split is by query AND by article.
    train_docs = {json.loads(line)["positive_id"] for line in (committed / "train.jsonl").read_text().splitlines()}
    test_docs = {line.split("\t")[1] for line in (committed / "heldout/qrels/test.tsv").read_text().splitlines()[1:]}
    assert train_docs.isdisjoint(test_docs) and len(test_docs) == 48
    # The out-of-domain checks can move: graded pairs (3 grades) and one look-alike per general question.
    sts = [json.loads(line) for line in (committed / "general_sts.jsonl").read_text().splitlines()]
    assert sorted({r["score"] for r in sts}) == [0.0, 1.5, 4.0] and len(sts) == 90


@pytest.mark.parametrize("mode", [["train.tune=query"], ["train.tune=adapter"], ["train.negatives=corpus"]])
def test_mining_is_not_run_when_the_whole_corpus_is_the_negative_set(mode):
    from types import SimpleNamespace

    from textcl.pipeline.stages import run_mine

    cfg = load_recipe(None, ["mining.enabled=true", *mode])
    with pytest.raises(NotApplicable, match="scores every query against the whole training corpus"):
        run_mine(SimpleNamespace(config=cfg), resume=False)
