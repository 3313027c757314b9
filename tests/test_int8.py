"""int8.py + Encoder(precision="int8"): parity with fp32, export cache, quality guard, missing extra, auto."""

from __future__ import annotations

import ctypes
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from beir_fixture import write_beir

import textcl
from textcl import int8
from textcl.cli import main
from textcl.config import load_recipe
from textcl.data.io import load_beir
from textcl.errors import ConfigError
from textcl.index import SearchIndex
from textcl.models import Encoder, encoder_precision, load_model, resolve_precision, scoring_precision
from textcl.types import Document, plan_encoding

pytest.importorskip("openvino")
pytest.importorskip("nncf")
pytest.importorskip("onnx")

TEXTS = ["the cat", "a dog and a cat run in the river with the old man", "tea", "",
         "what is the risk of heart disease for a man who eats meat and fish", "the cat", "coffee or tea",
         "a small green tree by the old house"]


@pytest.fixture(scope="module")
def tiny(tiny_model_path):
    return load_model(str(tiny_model_path), device="cpu")


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1)


def test_int8_matches_fp32_on_the_tiny_model(tiny, tmp_path):
    enc = Encoder(tiny, precision="int8", batch_size=2, cache_dir=tmp_path, show_progress=False)
    out = enc(TEXTS, "document")
    ref = Encoder(tiny, precision="fp32", batch_size=2, show_progress=False)(TEXTS, "document")
    assert enc.precision == "int8" and out.dtype == np.float32 and out.shape == ref.shape
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert _cos(out, ref).min() > 0.99
    report = enc.int8_report
    # 7 non-empty texts: 4 calibrate the quantization, the other 3 are what the guard compares
    assert report["passed"] and report["export"] == "miss" and report["texts"] == 3
    assert report["mean_cosine"] > 0.99


def test_int8_output_does_not_depend_on_batching(tiny, tmp_path):
    one = Encoder(tiny, precision="int8", batch_size=1, cache_dir=tmp_path, show_progress=False)(TEXTS)
    many = Encoder(tiny, precision="int8", batch_size=64, cache_dir=tmp_path, show_progress=False)(TEXTS)
    # Dynamic quantization scales activations per tensor (per batch), so padding partners move the
    # result slightly; the rows must still agree closely and keep their order.
    assert _cos(one, many).min() > 0.999


def test_export_cache_hits_on_a_second_run_and_misses_when_weights_change(tiny_model_path, tmp_path):
    model = load_model(str(tiny_model_path), device="cpu")
    first = Encoder(model, precision="int8", cache_dir=tmp_path, show_progress=False)
    first(TEXTS)
    assert first.int8_report["export"] == "miss"
    again = Encoder(load_model(str(tiny_model_path), device="cpu"), precision="int8", cache_dir=tmp_path,
                    show_progress=False)
    again(TEXTS)
    assert again.int8_report["export"] == "hit" and again.int8_report["folder"] == first.int8_report["folder"]
    with torch.no_grad():  # e.g. an optimizer step: the same Encoder must not keep the stale export
        next(model.parameters()).add_(1e-2)
    after = first(TEXTS)
    assert first.int8_report["export"] == "miss" and first.int8_report["folder"] != again.int8_report["folder"]
    ref = Encoder(model, precision="fp32", show_progress=False)(TEXTS)
    assert _cos(after, ref).min() > 0.99
    assert len(list((tmp_path / "int8").iterdir())) == 2


def test_calibration_follows_the_plan_not_the_first_call(tiny, tmp_path):
    """Evaluation and mining encode queries first; with `plan_encoding` the export is calibrated on a sample of
    documents AND queries, the guard checks each role on its own, and the export key holds the sample."""
    queries, documents = TEXTS[:3], TEXTS[3:]
    planned = Encoder(tiny, precision="int8", cache_dir=tmp_path, show_progress=False)
    plan_encoding(planned, {"document": documents, "query": queries})
    planned(queries, "query")
    report = planned.int8_report
    assert set(report["roles"]) == {"document", "query"} and report["passed"]
    assert report["texts"] == sum(g["texts"] for g in report["roles"].values())
    unplanned = Encoder(tiny, precision="int8", cache_dir=tmp_path, show_progress=False)
    unplanned(queries, "query")  # no plan: calibrated on the call's own texts, in another export folder
    assert set(unplanned.int8_report["roles"]) == {"query"}
    assert unplanned.int8_report["folder"] != report["folder"]
    again = Encoder(tiny, precision="int8", cache_dir=tmp_path, show_progress=False)
    plan_encoding(again, {"query": queries, "document": documents})
    again(documents, "document")  # the same plan, whatever is encoded first: the same export, a cache hit
    assert again.int8_report["folder"] == report["folder"] and again.int8_report["export"] == "hit"


def test_cli_eval_int8_calibrates_on_documents_and_queries(tmp_path, tiny_model_path, monkeypatch):
    beir = write_beir(tmp_path / "beir")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    out = tmp_path / "report.json"
    assert main(["eval", "--model", str(tiny_model_path), "--retrieval", str(beir), "--split", "train",
                 "--precision", "int8", "--output", str(out), "--no-progress"]) == 0
    guards = list((tmp_path / "xdg" / "textcl" / "int8").glob("*/guard.json"))
    assert len(guards) == 1 and set(json.loads(guards[0].read_text())["roles"]) == {"document", "query"}


def test_int8_and_fp32_embeddings_are_cached_apart(tiny, tmp_path):
    e8 = Encoder(tiny, precision="int8", cache_dir=tmp_path, show_progress=False)
    e32 = Encoder(tiny, precision="fp32", cache_dir=tmp_path, show_progress=False)
    assert e8._store("document").folder != e32._store("document").folder


def _break(int8_path) -> None:
    """Noise for the int8 weights and 30x their scales: a deliberately broken quantization.

    Noise alone is not enough on the tiny random model (its small random weights barely move the
    residual stream); a wrong scale, the classic quantization bug, is.
    """
    import openvino as ov

    model = ov.Core().read_model(str(int8_path))
    rng = np.random.default_rng(0)
    for node in model.get_ordered_ops():
        if node.get_type_name() == "Constant" and node.get_element_type() == ov.Type.i8:
            noise = rng.integers(-127, 128, size=tuple(node.get_output_shape(0)), dtype=np.int8)
            node.output(0).replace(ov.op.Constant(noise).output(0))
        elif node.get_type_name() == "Multiply":  # dequantization: Convert(int8 weight) * scale
            source = node.input_value(0).get_node()
            if source.get_type_name() == "Convert" and source.input_value(0).get_element_type() == ov.Type.i8:
                scale = node.input_value(1).get_node()
                scale.output(0).replace(ov.op.Constant((scale.get_data() * 30).astype(np.float32)).output(0))
    broken = int8_path.with_name("broken.xml")
    ov.save_model(model, str(broken))
    broken.replace(int8_path)
    broken.with_suffix(".bin").replace(int8_path.with_suffix(".bin"))


@pytest.fixture
def broken_quantization(monkeypatch):
    real = int8.quantize_weights

    def broken(fp32_path, int8_path, calibration):
        real(fp32_path, int8_path, calibration)
        _break(int8_path)

    monkeypatch.setattr(int8, "quantize_weights", broken)


def test_guard_refuses_a_broken_quantization(tiny, tmp_path, broken_quantization):
    enc = Encoder(tiny, precision="int8", cache_dir=tmp_path, show_progress=False)
    with pytest.raises(ConfigError, match=r"int8 quality guard failed .* mean cosine .* use precision fp32"):
        enc(TEXTS)
    # The failure is remembered with the export: a second encoder refuses without re-measuring.
    with pytest.raises(ConfigError, match="int8 quality guard failed"):
        Encoder(tiny, precision="int8", cache_dir=tmp_path, show_progress=False)(TEXTS)


def test_auto_falls_back_to_fp32_when_the_guard_fails(tiny, tmp_path, broken_quantization, caplog):
    enc = Encoder(tiny, precision="auto", allow_int8=True, cache_dir=tmp_path, show_progress=False)
    assert enc.precision == "int8"
    with caplog.at_level(logging.WARNING, logger="textcl.models"):
        out = enc(TEXTS)
    assert enc.precision == resolve_precision("auto", "cpu") and not enc.int8_report["passed"]
    assert "int8 failed its quality guard" in caplog.text
    ref = Encoder(tiny, precision=enc.precision, show_progress=False)(TEXTS)
    np.testing.assert_allclose(out, ref, atol=1e-5)


def test_auto_picks_int8_only_where_allowed(tiny):
    assert Encoder(tiny, precision="auto", show_progress=False).precision == resolve_precision("auto", "cpu")
    assert encoder_precision("auto", "cpu", allow_int8=True) == "int8"
    assert encoder_precision("auto", "cuda", allow_int8=True) != "int8"
    with pytest.raises(ConfigError, match="int8 runs on the CPU"):
        encoder_precision("int8", "cuda")
    with pytest.raises(ConfigError, match="auto, fp32, bf16 or int8"):
        encoder_precision("int4", "cpu")


def test_evaluation_stays_fp32_for_an_int8_recipe():
    assert scoring_precision("int8") == "fp32"
    assert scoring_precision("auto") == "auto" and scoring_precision("bf16") == "bf16"


def test_missing_extra_names_textcl_int8(tiny, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` now raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 'textcl\[int8\]'"):
        Encoder(tiny, precision="int8", show_progress=False)
    # auto with int8 allowed quietly stays on fp32/bf16 instead of failing
    assert Encoder(tiny, precision="auto", allow_int8=True, show_progress=False).precision == resolve_precision(
        "auto", "cpu")


def test_cli_missing_extra_message(tmp_path, tiny_model_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "nncf", None)
    (tmp_path / "docs.txt").write_text("cat\nthe dog ran\n")
    with caplog.at_level(logging.ERROR):
        rc = main(["index", "build", "--model", str(tiny_model_path), "--corpus", str(tmp_path / "docs.txt"),
                   "--out", str(tmp_path / "idx"), "--precision", "int8"])
    assert rc == 2
    assert "precision int8 needs OpenVINO and NNCF" in caplog.text and "pip install 'textcl[int8]'" in caplog.text


def test_guard_sample_is_spread_and_skips_empty_texts():
    texts = [f"t{i}" for i in range(1000)]
    sample = int8.guard_sample(texts, 5)
    assert sample == ["t0", "t250", "t500", "t749", "t999"]
    assert int8.guard_sample(["", "a", " "], 5) == ["a"]


def test_guard_result_thresholds():
    a = np.eye(4, dtype=np.float32)
    assert int8.guard_result(a, a)["passed"]
    b = a.copy()
    b[0] = [0, 1, 0, 0]  # one row orthogonal: min cosine 0
    res = int8.guard_result(a, b)
    assert not res["passed"] and res["min_cosine"] == 0.0 and res["mean_cosine"] == 0.75


@pytest.mark.slow
def test_int8_matches_fp32_on_the_bundled_model(shared_data, tmp_path):
    rset = load_beir(shared_data / "nfcorpus", "test")
    docs = [d.full_text for d in list(rset.corpus.values())[:300]]
    queries = list(rset.queries.values())[:100]
    model = load_model("all-MiniLM-L6-v2", device="cpu")
    e8 = Encoder(model, precision="int8", cache_dir=tmp_path, show_progress=False)
    e32 = Encoder(model, precision="fp32", show_progress=False)
    for texts, role in ((docs, "document"), (queries, "query")):
        cos = _cos(e8(texts, role), e32(texts, role))
        assert cos.mean() > 0.99 and cos.min() > 0.95, (role, cos.mean(), cos.min())
    assert e8.int8_report["passed"] and e8.int8_report["mean_cosine"] > 0.99


def test_index_remembers_its_precision_and_notes_another(tiny, tmp_path, caplog):
    corpus = {str(i): Document(title="", text=t) for i, t in enumerate(TEXTS) if t}
    e8 = Encoder(tiny, precision="int8", cache_dir=tmp_path / "cache", show_progress=False)
    built = SearchIndex.build(e8, corpus, tmp_path / "idx", factory="exact", model="tiny")
    assert built.config["precision"] == "int8" and built.config["int8_guard"]["passed"]
    assert "folder" not in built.config["int8_guard"]  # no machine-local paths in the index
    with caplog.at_level(logging.INFO, logger="textcl.index"):
        loaded = SearchIndex.load(tmp_path / "idx", Encoder(tiny, precision="fp32", show_progress=False))
    assert "built at precision int8; queries are encoded at fp32" in caplog.text
    hits = loaded.search(TEXTS[1], k=1)[0]
    assert hits[0].id == "1" and hits[0].score > 0.99


def test_cli_index_build_int8_and_search_with_its_precision(tmp_path, tiny_model_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))  # where exports go without an embedding cache
    (tmp_path / "docs.txt").write_text("cat\nthe dog ran\na red car is fast\nthe green tree by the river\n")
    out = tmp_path / "idx"
    assert main(["index", "build", "--model", str(tiny_model_path), "--corpus", str(tmp_path / "docs.txt"),
                 "--factory", "exact", "--out", str(out), "--precision", "int8"]) == 0
    assert "int8 cosine to fp32 mean" in capsys.readouterr().out
    assert json.loads((out / "config.json").read_text())["precision"] == "int8"
    assert list((tmp_path / "xdg" / "textcl" / "int8").iterdir())
    assert main(["index", "search", str(out), "the dog ran", "-k", "1"]) == 0  # default: the index's int8
    first = capsys.readouterr().out.splitlines()[-1].split("\t")
    assert first[2] == "2" and float(first[1]) == pytest.approx(1.0, abs=1e-3)


def test_recipe_takes_int8_for_encoding_but_not_for_training():
    cfg = load_recipe(None, ["model.precision=int8", "model.allow_int8=true"])
    assert cfg.model.precision == "int8" and cfg.model.allow_int8 is True
    with pytest.raises(ConfigError, match="precision"):
        load_recipe(None, ["train.precision=int8"])


def test_cli_mine_int8_records_precision_and_guard(tmp_path, tiny_model_path):
    beir = write_beir(tmp_path / "beir")
    out = tmp_path / "mined.jsonl"
    rc = main(["mine", "--model", str(tiny_model_path), "--retrieval", str(beir), "--split", "train",
               "--output", str(out), "--precision", "int8", "--cache-dir", str(tmp_path / "cache"), "--no-progress"])
    assert rc == 0
    prov = json.loads(out.with_name("mined.jsonl.provenance.json").read_text())
    assert prov["precision"] == "int8" and prov["int8_guard"]["passed"] and prov["int8_guard"]["texts"] > 0


def test_keep_signal_stack_puts_the_threads_alternate_stack_back():
    if not sys.platform.startswith("linux"):
        pytest.skip("sigaltstack via glibc")
    libc = ctypes.CDLL(None, use_errno=True)
    before, after = int8._SignalStack(), int8._SignalStack()
    libc.sigaltstack(None, ctypes.byref(before))
    buffer = ctypes.create_string_buffer(1 << 16)
    with int8.keep_signal_stack():  # what the CPU plugin does: its own stack on this thread
        other = int8._SignalStack(ctypes.cast(buffer, ctypes.c_void_p), 0, len(buffer))
        assert libc.sigaltstack(ctypes.byref(other), None) == 0
    libc.sigaltstack(None, ctypes.byref(after))
    assert (after.ss_sp, after.ss_flags, after.ss_size) == (before.ss_sp, before.ss_flags, before.ss_size)


CTRL_C_AFTER_INT8 = """
import gc, os, signal, sys
import torch
from textcl.cli import main
from textcl.models import Encoder, load_model
from textcl.train import loop

model_path, recipe, cache, texts = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
model = load_model(model_path, device="cpu")
enc = Encoder(model, precision="int8", cache_dir=cache, show_progress=False)
enc(texts)
with torch.no_grad():
    next(model.parameters()).add_(1e-2)
enc(texts)  # changed weights: a re-export, whose OpenVINO CPU plugin replaces the first one ...
del enc, model  # ... and is released after it (creation order), as an Encoder's re-export does
gc.collect()
real, calls = loop.forward_backward, [0]

def press_ctrl_c_at_step_3(*args, **kwargs):
    calls[0] += 1
    if calls[0] == 3:
        os.kill(os.getpid(), signal.SIGINT)
    return real(*args, **kwargs)

loop.forward_backward = press_ctrl_c_at_step_3
sys.exit(main(["train", recipe]))
"""


def test_ctrl_c_after_int8_encoding_saves_and_exits_cleanly(tiny_model_path, tmp_path):
    """OpenVINO's CPU plugins swap the thread's sigaltstack and, released in creation order, left it on
    freed memory: the next SIGINT (handled on that stack) was a silent SIGSEGV, not checkpoint-and-stop.
    Run in a subprocess so that a crash fails this test instead of killing pytest."""
    words = "the cat dog tea coffee milk heart risk diet sleep brain blood fish meat fruit green".split()
    rows = [{"query": f"{words[i % 16]} and {words[(i * 5) % 16]}", "positive": f"{words[i % 16]} {words[(i * 5) % 16]} {i}"}
            for i in range(24)]
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"output_dir: runs/a\nmodel: {{name_or_path: {tiny_model_path}, max_seq_length: 32}}\n"
                      "data: {train: pairs.jsonl}\nmining: {enabled: false}\n"
                      "train: {batch_size: 4, lr: 1e-3, precision: fp32, max_steps: 4, log_every: 1}\n")
    (tmp_path / "ctrl_c.py").write_text(CTRL_C_AFTER_INT8)
    root = str(Path(textcl.__file__).resolve().parents[1])  # the textcl under test, not another install
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, str(tmp_path / "ctrl_c.py"), str(tiny_model_path), str(recipe),
                           str(tmp_path / "cache"), *TEXTS], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 130, (proc.returncode, proc.stderr[-3000:])  # -11 was the segfault
    assert proc.stdout == f"interrupted at step 3; resume with: textcl train {recipe} --resume\n"
    assert (tmp_path / "runs" / "a" / "model" / "checkpoints" / "step-00000003").is_dir()
