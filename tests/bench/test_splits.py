"""bench/splits.py on a tiny hand-made BEIR folder (gzipped corpus and train qrels, header and CRLF as in
the real files): the new-documents split's invariants and the label budget's seeded sample."""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import splits  # noqa: E402

# sha256(id) mod 100 < 20 among d0..d29, pinned so a change of the hash rule shows up here
NEW = {"d0", "d9", "d11", "d12", "d13", "d22", "d29"}


def _qrels(rows: list[tuple[str, str, int]]) -> str:
    return "query-id\tcorpus-id\tscore\r\n" + "".join(f"{q}\t{d}\t{s}\r\n" for q, d, s in rows)


@pytest.fixture()
def beir(tmp_path: Path) -> Path:
    folder = tmp_path / "src"
    (folder / "qrels").mkdir(parents=True)
    with gzip.open(folder / "corpus.jsonl.gz", "wt", encoding="utf-8") as fh:
        for i in range(30):
            fh.write(json.dumps({"_id": f"d{i}", "title": "", "text": f"document {i}"}) + "\n")
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": f"q{i}", "text": f"query {i}"}) + "\n"
                                                  for i in range(12)))
    train = [(f"q{q}", f"d{d}", 1) for q in range(8) for d in range(q, 30, 4)]  # every query hits seen and new docs
    with gzip.open(folder / "qrels" / "train.tsv.gz", "wt", encoding="utf-8") as fh:
        fh.write(_qrels(train))
    (folder / "qrels" / "dev.tsv").write_text(_qrels([("q8", "d0", 2), ("q8", "d1", 1), ("q9", "d9", 1)]))
    # q10 judges only seen documents: it must drop out of the new-documents test set
    test = [("q10", "d1", 2), ("q10", "d2", 1), ("q11", "d12", 2), ("q11", "d3", 1), ("q11", "d22", 0)]
    (folder / "qrels" / "test.tsv").write_text(_qrels(test))
    return folder


def test_new_docs_split_keeps_new_documents_out_of_training_and_in_test(beir, tmp_path):
    facts = splits.new_docs_split(beir, tmp_path / "a")
    leaf = tmp_path / "a" / "nfcorpus"
    assert {d for d in splits.read_doc_ids(beir) if splits.is_new(d)} == NEW
    train, dev, test = (splits.read_qrels(leaf, s) for s in ("train", "dev", "test"))
    source_train = splits.read_qrels(beir, "train")
    assert train == {q: {d: g for d, g in docs.items() if d not in NEW} for q, docs in source_train.items()}
    assert {d for docs in [*train.values(), *dev.values()] for d in docs} & NEW == set()
    assert dev == {"q8": {"d1": 1}}  # q9's only judgement names a new document: q9 leaves dev
    assert test == {"q11": {"d12": 2, "d22": 0}}  # only new documents (any grade); q10 dropped
    assert facts["new_docs"] == len(NEW) and facts["docs"] == 30
    assert facts["test"] == {"qrels": 5, "kept": 2, "queries": 2, "queries_kept": 1}
    assert facts["dev"] == {"qrels": 3, "kept": 1, "queries": 2, "queries_kept": 1}
    # corpus and queries whole: the same bytes as the source (linked, not rewritten)
    assert (leaf / "corpus.jsonl.gz").read_bytes() == (beir / "corpus.jsonl.gz").read_bytes()
    assert (leaf / "queries.jsonl").read_bytes() == (beir / "queries.jsonl").read_bytes()


HELD = {"d5", "d6", "d15", "d17", "d19"}  # the next 16 buckets: 20 <= sha256(id) mod 100 < 36


def test_heldout_split_holds_seen_documents_out_of_training_for_selection_to_watch(beir, tmp_path):
    with open(beir / "qrels" / "dev.tsv", "a") as fh:
        fh.write("q9\td5\t1\r\nq8\td19\t2\r\n")
    with open(beir / "qrels" / "test.tsv", "a") as fh:
        fh.write("q10\td6\t1\r\n")
    facts = splits.heldout_split(beir, tmp_path / "h")
    assert {d for d in splits.read_doc_ids(beir) if splits.is_heldout(d)} == HELD
    leaf, watch = tmp_path / "h" / "nfcorpus", tmp_path / "h" / "heldout"
    source_train = splits.read_qrels(beir, "train")
    assert splits.read_qrels(leaf, "train") == {
        q: {d: g for d, g in docs.items() if d not in NEW | HELD} for q, docs in source_train.items()}
    assert splits.read_qrels(leaf, "dev") == {"q8": {"d1": 1}}
    assert splits.read_qrels(leaf, "test") == {"q11": {"d12": 2, "d22": 0}}  # the new documents, as new-docs
    assert splits.read_qrels(watch, "dev") == {"q9": {"d5": 1}, "q8": {"d19": 2}}
    assert splits.read_qrels(watch, "test") == {"q10": {"d6": 1}}
    assert facts["heldout_docs"] == len(HELD) and facts["heldout_dev"] == {"kept": 2, "queries_kept": 2}
    assert (watch / "corpus.jsonl.gz").read_bytes() == (beir / "corpus.jsonl.gz").read_bytes()


def test_new_docs_split_is_deterministic_and_its_check_catches_a_leak(beir, tmp_path):
    splits.new_docs_split(beir, tmp_path / "a")
    splits.new_docs_split(beir, tmp_path / "b")
    for split in ("train", "dev", "test"):
        a = (tmp_path / "a" / "nfcorpus" / "qrels" / f"{split}.tsv").read_bytes()
        assert a == (tmp_path / "b" / "nfcorpus" / "qrels" / f"{split}.tsv").read_bytes()
    leaf = tmp_path / "a" / "nfcorpus"
    with open(leaf / "qrels" / "dev.tsv", "a") as fh:
        fh.write("q8\td29\t1\n")
    with pytest.raises(AssertionError, match=r"1 dev qrels name new documents \(e.g. \('q8', 'd29'\)\)"):
        splits.check_new_docs(leaf, NEW)


def test_budget_sample_is_seeded_of_size_n_and_leaves_dev_and_test_alone(beir, tmp_path):
    facts = splits.budget_split(beir, tmp_path / "a", 3, seed=1)
    again = splits.budget_split(beir, tmp_path / "b", 3, seed=1)
    other = splits.budget_split(beir, tmp_path / "c", 3, seed=2)
    assert len(facts["queries"]) == 3 and facts["queries"] == again["queries"]
    assert facts["queries"] != other["queries"]
    leaf = tmp_path / "a" / "nfcorpus"
    train = splits.read_qrels(leaf, "train")
    assert train == {q: docs for q, docs in splits.read_qrels(beir, "train").items() if q in set(facts["queries"])}
    assert set(train) == set(facts["queries"])
    assert facts["train_qrels_kept"] == sum(len(docs) for docs in train.values())
    for split in ("dev", "test"):
        assert splits.read_qrels(leaf, split) == splits.read_qrels(beir, split)
    whole = splits.budget_split(beir, tmp_path / "d", 100, seed=1)
    assert whole["n"] == 8 and splits.read_qrels(tmp_path / "d" / "nfcorpus", "train") == splits.read_qrels(beir, "train")
    assert splits.budget_name(100, 1, 8) == "budget-all" and splits.budget_name(3, 2, 8) == "budget-3-s2"


def test_new_docs_pool_holds_the_new_documents_and_the_same_test_qrels(beir, tmp_path):
    splits.new_docs_split(beir, tmp_path / "a")
    facts = splits.new_docs_pool(beir, tmp_path / "pool")
    leaf = tmp_path / "pool" / "nfcorpus"
    assert set(splits.read_doc_ids(leaf)) == NEW and facts["docs"] == len(NEW)
    assert splits.read_qrels(leaf, "test") == splits.read_qrels(tmp_path / "a" / "nfcorpus", "test")
    assert json.loads((leaf / "corpus.jsonl").read_text().splitlines()[0]) == {"_id": "d0", "title": "",
                                                                               "text": "document 0"}


def test_seen_corpus_holds_every_document_but_the_new_ones(beir, tmp_path):
    folder = splits.seen_corpus(beir, tmp_path / "seen")
    ids = [json.loads(line)["_id"] for line in (folder / "corpus.jsonl").read_text().splitlines()]
    assert ids == [f"d{i}" for i in range(30) if f"d{i}" not in NEW]
