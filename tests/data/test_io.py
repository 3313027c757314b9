"""Data layer: every format by named roles, exact counts on the shared benchmarks, round trips, and one
test per bad-input case asserting the message (file, line, field) or the skip count."""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path

import pytest

from textcl.data.io import (
    count_qrels_rows,
    load_beir,
    load_examples,
    load_scored_pairs,
    load_scored_pairs_with_report,
    load_stsb,
    load_texts,
    load_texts_with_report,
    write_examples,
)
from textcl.errors import DataError
from textcl.types import Example, ScoredPair


def w(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def jl(*rows: dict) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def beir(folder: Path, qrels: str, *, corpus: str | None = None, queries: str | None = None) -> Path:
    w(folder / "corpus.jsonl", corpus or jl({"_id": "D1", "title": "T1", "text": "one"},
                                            {"_id": "D2", "title": "", "text": "two"},
                                            {"_id": "D3", "title": "T3", "text": "three"}))
    w(folder / "queries.jsonl", queries or jl({"_id": "Q1", "text": "first?"}, {"_id": "Q2", "text": "second?"},
                                              {"_id": "Q3", "text": "third?"}))
    w(folder / "qrels" / "test.tsv", qrels)
    return folder


# ---------------------------------------------------------------- shared benchmark counts


def test_stsb_exact_counts(shared_data):
    folder = shared_data / "stsbenchmark"
    for split, n in (("train", 5749), ("dev", 1500), ("test", 1379)):
        assert len(load_stsb(folder, split)) == n
        assert len(load_scored_pairs(folder, split=split)) == n
    pairs = load_scored_pairs(folder / "sts-train.csv")  # a file: still STS-B (tab split, quoting off)
    assert len(pairs) == 5749 and all(0 <= p.score <= 5 for p in pairs)


def test_nfcorpus_exact_counts(shared_data):
    folder = shared_data / "nfcorpus"
    for split, n in (("train", 110575), ("dev", 11385), ("test", 12334)):
        rset = load_beir(folder, split)
        assert (len(rset.corpus), rset.meta["all_queries"], count_qrels_rows(rset.qrels)) == (3633, 3237, n)
    examples, report = load_examples(folder, split="test")
    rset = load_beir(folder, "test")
    with_pos = [q for q in rset.qrels if rset.positives(q)]
    assert len(examples) == report.kept == len(with_pos)
    ex = examples[0]
    assert ex.positive_ids == tuple(rset.positives(ex.query_id))
    assert ex.positives[0] == rset.corpus[ex.positive_ids[0]].full_text


# ---------------------------------------------------------------- formats and columns


def test_jsonl_autodetect_is_logged_and_values_may_be_lists(tmp_path, caplog):
    p = w(tmp_path / "a.jsonl", jl({"question": "q1", "answer": "a1", "extra": 1},
                                   {"question": "q2", "answer": ["a2", "a3"], "hard_negative": ["n1"]}))
    with caplog.at_level(logging.INFO, logger="textcl"):
        examples, report = load_examples(p)
    assert examples == [Example("q1", ("a1",)), Example("q2", ("a2", "a3"), ("n1",))]
    assert "auto-detected columns query='question', positive='answer', negative='hard_negative'" in caplog.text
    assert report.notes["ignored column 'extra'"] == 1


def test_explicit_columns_and_errors_naming_roles_and_columns(tmp_path):
    p = w(tmp_path / "a.jsonl", jl({"q": "x", "doc": "y", "bad": "z"}))
    examples, report = load_examples(p, columns={"query": "q", "positive": "doc", "negative": "bad"})
    assert examples == [Example("x", ("y",), ("z",))] and report.columns["negative"] == "bad"
    with pytest.raises(DataError, match=r"column 'dok' \(role positive\) not found; available columns: q, doc, "
                                        r"bad; did you mean 'doc'\?"):
        load_examples(p, columns={"query": "q", "positive": "dok"})
    with pytest.raises(DataError, match=r"unknown role 'postive'.*did you mean 'positive'\?"):
        load_examples(p, columns={"postive": "doc"})
    with pytest.raises(DataError, match=r"a.jsonl: no column for role\(s\) positive; available columns: q, doc, bad"):
        load_examples(p, columns={"query": "q"})  # 'doc' is not a positive name by default


def test_csv_delimiter_is_sniffed_from_the_header(tmp_path, caplog):
    """A European spreadsheet export separates with ';' (and uses ',' as the decimal mark)."""
    p = w(tmp_path / "faq.csv", 'question;answer;score\r\nwie geht\'s?;"gut; danke";0,5\r\nwo, bitte?;hier;1\r\n')
    caplog.set_level("INFO")
    examples, _ = load_examples(p, columns={"query": "question", "positive": "answer"})
    assert [(e.query, e.positives) for e in examples] == [("wie geht's?", ("gut; danke",)), ("wo, bitte?", ("hier",))]
    assert "faq.csv: the header is split by ';', not ',': reading the file with delimiter ';'" in caplog.text
    assert len(load_examples(w(tmp_path / "c.csv", "query,positive\nq;1,p;2\n"))[0]) == 1  # ';' in values only


def test_csv_quoting_and_tsv_quoting_off(tmp_path):
    csv_p = w(tmp_path / "a.csv", 'anchor,positive,negative\r\nq,"p, with comma",\r\n"multi\nline",p2,n2\r\n')
    examples, report = load_examples(csv_p)
    assert examples == [Example("q", ("p, with comma",)), Example("multi\nline", ("p2",), ("n2",))]
    assert report.notes["empty optional cell 'negative' (read as none)"] == 1
    tsv_p = w(tmp_path / "a.tsv", 'query\tpositive\n"he said "hi\tp "x"\n')
    assert load_examples(tsv_p)[0] == [Example('"he said "hi', ('p "x"',))]


def test_numbered_negative_columns_and_flag_format(tmp_path):
    p = w(tmp_path / "mined.jsonl", jl({"anchor": "a", "positive": "p", "negative_2": "n2", "negative_1": "n1"}))
    assert load_examples(p)[0] == [Example("a", ("p",), ("n1", "n2"))]
    flag = w(tmp_path / "flag.jsonl", jl({"query": "q", "pos": ["p"], "neg": ["n1", "n2"], "neg_scores": [0.5, 0.25],
                                          "prompt": "Represent this"}))
    examples, report = load_examples(flag, format="flag")
    assert examples == [Example("q", ("p",), ("n1", "n2"), scores=(0.5, 0.25))]
    assert report.columns == {"query": "query", "positive": "pos", "negative": "neg", "scores": "neg_scores"}
    assert report.notes["ignored column 'prompt'"] == 1  # never silently dropped


def test_parquet_and_hf_folders(tmp_path):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"query": ["q1", "q2"], "pos": [["a"], ["b", "c"]], "qid": [7, 8]}),
                   tmp_path / "t.parquet")
    examples, _ = load_examples(tmp_path / "t.parquet")
    assert examples == [Example("q1", ("a",), query_id="7"), Example("q2", ("b", "c"), query_id="8")]
    ds = datasets.Dataset.from_dict({"sentence1": ["s", "t"], "sentence2": ["u", "v"], "label": [1.0, 0.5]})
    ds.save_to_disk(str(tmp_path / "hf1"))
    datasets.DatasetDict({"train": ds, "validation": ds}).save_to_disk(str(tmp_path / "hf2"))
    assert load_examples(tmp_path / "hf1")[0][1] == Example("t", ("v",))
    assert load_scored_pairs(tmp_path / "hf2", split="validation")[1] == ScoredPair("t", "v", 0.5)
    with pytest.raises(DataError, match=r"hf2: split 'test' not found; available splits: train, validation"):
        load_examples(tmp_path / "hf2", split="test")


def test_beir_examples_keep_ids_and_count_queries_without_positive(tmp_path):
    folder = beir(tmp_path / "b", "query-id\tcorpus-id\tscore\r\nQ1\tD2\t1\r\nQ1\tD1\t2\r\nQ1\tD3\t0\r\n"
                                  "Q2\tD3\t0\r\n")
    examples, report = load_examples(folder, split="test")
    assert examples == [Example("first?", ("two", "T1 one"), query_id="Q1", positive_ids=("D2", "D1"))]
    assert report.notes["queries without a positive judgement (grade > 0)"] == 1


def test_text_format_and_load_texts(tmp_path):
    p = w(tmp_path / "t.txt", "alpha\n\n  \nbeta\r\n")
    texts, report = load_texts_with_report(p)
    assert texts == ["alpha", "beta"] and report.notes["empty line"] == 2
    assert load_texts(w(tmp_path / "t.jsonl", jl({"text": "x"}, {"text": "y"}))) == ["x", "y"]
    assert load_examples(p, format="text")[0] == [Example("alpha", ("alpha",)), Example("beta", ("beta",))]
    with pytest.raises(DataError, match=r"t.jsonl:2 field 'text': missing field"):
        load_texts(w(tmp_path / "t.jsonl", jl({"text": "x"}, {"txt": "y"})))


def test_scored_pairs_sick_and_generic(tmp_path):
    sick = w(tmp_path / "SICK.txt", "pair_ID\tsentence_A\tsentence_B\trelatedness_score\tSemEval_set\n"
                                    "1\ta\tb\t4.5\tTRAIN\n2\tc\td\t1.0\tTEST\n3\te\tf\t2\tTRIAL\n")
    pairs, report = load_scored_pairs_with_report(sick, split="test")
    assert pairs == [ScoredPair("c", "d", 1.0)] and report.format == "sick"
    assert report.notes["rows of another SemEval_set split"] == 2
    gen = w(tmp_path / "p.csv", "a,b,sim\nx,y,0.25\n")
    assert load_scored_pairs(gen, columns={"sentence1": "a", "sentence2": "b", "score": "sim"}) == [
        ScoredPair("x", "y", 0.25)]
    with pytest.raises(DataError, match=r"p.csv:2 field 'sim': score is not a number: 'high'"):
        load_scored_pairs(w(gen, "a,b,sim\nx,y,high\n"), columns={"sentence1": "a", "sentence2": "b", "score": "sim"})


# ---------------------------------------------------------------- writing


@pytest.mark.parametrize("name", ["out.jsonl", "out.jsonl.gz", "out.parquet"])
def test_write_read_round_trip_with_provenance_and_deterministic_bytes(tmp_path, name):
    examples = [Example("q", ("p1", "p2"), ("n",), "1", ("d1", "d2"), ("d3",), (0.75,)),
                Example("é ü 中", ("p",))]
    prov = {"source": "unit", "seed": 3}
    path = write_examples(examples, tmp_path / name, prov)
    first = path.read_bytes()
    write_examples(examples, tmp_path / name, prov)
    assert path.read_bytes() == first  # same input, same bytes
    back, report = load_examples(path)
    assert back == examples and report.provenance == prov
    if not name.endswith(".parquet"):
        write_examples(examples, path)  # no provenance now: a stale sidecar must not survive
        assert load_examples(path)[1].provenance is None


def test_write_rejects_bad_suffix_and_non_examples(tmp_path):
    with pytest.raises(DataError, match=r"out.csv: unsupported output suffix"):
        write_examples([Example("q", ("p",))], tmp_path / "out.csv")
    with pytest.raises(DataError, match=r"item 0 is a dict, not an Example"):
        write_examples([{"query": "q"}], tmp_path / "out.jsonl")


# ---------------------------------------------------------------- bad input: message names file, line, field


GOOD = {"query": "q", "positive": "p"}


@pytest.mark.parametrize("line2, message", [
    ('{"query": "q", "positive": ', r"a.jsonl:2: malformed JSON \(Expecting value at column 28\)"),
    ('{"query": "q"}', r"a.jsonl:2 field 'positive': missing field"),
    ('{"query": "q", "positive": 5}', r"a.jsonl:2 field 'positive': expected a string or a list of strings, got int"),
    ('{"query": "q", "positive": ["p", 1]}', r"a.jsonl:2 field 'positive\[1\]': expected a string, got number"),
    ('{"query": "  ", "positive": "p"}', r"a.jsonl:2 field 'query': empty text"),
    ('{"query": "q", "positive": []}', r"a.jsonl:2 field 'positive': no positive \(empty list\)"),
    ('["q", "p"]', r"a.jsonl:2: expected a JSON object, got array"),
    ('{"query": "\\ud800", "positive": "p"}', r"a.jsonl:2 field 'query': invalid Unicode \(lone surrogate\)"),
    ('{"query": "q", "positive": "p", "negative": ["n"], "scores": [0.1, 0.2]}',
     r"a.jsonl:2 field 'scores': has 2 values but there are 1 negatives"),
    ('{"query": "q", "positive": "p", "negative": "n", "scores": NaN}',
     r"a.jsonl:2 field 'scores\[0\]': score is not finite"),
])
def test_bad_jsonl_rows_name_file_line_field(tmp_path, line2, message):
    p = w(tmp_path / "a.jsonl", json.dumps(GOOD) + "\n" + line2 + "\n")
    with pytest.raises(DataError, match=message):
        load_examples(p)
    examples, report = load_examples(p, on_error="skip")  # skipped, counted, and the reason kept
    assert len(examples) == 1 and report.n_skipped == 1 and report.examples[0].startswith(str(p) + ":2")


def test_non_utf8_bytes_name_line_and_byte(tmp_path):
    p = w(tmp_path / "a.jsonl", b'{"query": "q", "positive": "p"}\n{"query": "caf\xe9", "positive": "p"}\n')
    with pytest.raises(DataError, match=r"a.jsonl:2: invalid UTF-8 \(byte 0xe9 at column 15\)"):
        load_examples(p)
    assert load_examples(p, on_error="skip")[1].skipped == {"invalid UTF-8": 1}


def test_truncated_gzip_names_file(tmp_path):
    data = gzip.compress(jl(*[GOOD] * 2000).encode())
    p = w(tmp_path / "a.jsonl.gz", data[: len(data) // 2])
    with pytest.raises(DataError, match=r"a.jsonl.gz:\d+: truncated gzip file"):
        load_examples(p)
    with pytest.raises(DataError, match=r"a.jsonl.gz:\d+: truncated gzip file"):  # file-level: never skipped
        load_examples(p, on_error="skip")


def test_qrels_unknown_ids_raise_with_line_or_are_counted(tmp_path):
    folder = beir(tmp_path / "b", "query-id\tcorpus-id\tscore\nQ1\tD1\t1\nQ1\tD9\t1\nQX\tD1\t1\n")
    with pytest.raises(DataError, match=r"qrels/test.tsv:3 field 'corpus-id': unknown doc id 'D9'"):
        load_beir(folder, "test", on_unknown="raise")
    assert load_beir(folder, "test").qrels == {"Q1": {"D1": 1, "D9": 1}}  # default: kept, as pytrec_eval
    rset = load_beir(folder, "test", on_unknown="skip")
    assert rset.meta["skipped_qrels"] == {"unknown doc id": 1, "unknown query id": 1}
    examples, report = load_examples(folder, split="test", on_error="skip")
    assert len(examples) == 1 and report.skipped == {"corpus-id: unknown doc id '…'": 1,
                                                     "query-id: unknown query id '…'": 1}


def test_duplicate_ids(tmp_path):
    folder = beir(tmp_path / "b", "Q1\tD1\t1\n", corpus=jl({"_id": "D1", "text": "a"}, {"_id": "D1", "text": "b"}))
    with pytest.raises(DataError, match=r"corpus.jsonl:2 field '_id': duplicate id 'D1'"):
        load_beir(folder, "test", on_unknown="raise")
    assert load_beir(folder, "test").corpus["D1"].text == "b"  # default: the last one wins, as in BEIR's loader
    p = w(tmp_path / "a.jsonl", jl({"query_id": "1", **GOOD}, {"query_id": "1", **GOOD},
                                   {"query_id": "1", "query": "other", "positive": "p"}))
    with pytest.raises(DataError, match=r"a.jsonl:3 field 'query_id': duplicate id '1' with a different query "
                                        r"\(first on line 1\)"):
        load_examples(p)
    ok = w(tmp_path / "b.jsonl", jl({"query_id": "1", **GOOD}, {"query_id": "1", **GOOD}))
    assert load_examples(ok)[1].notes["rows repeating a query_id (kept: one example per row)"] == 1
    ids = w(tmp_path / "c.jsonl", jl({**GOOD, "positive": ["a", "b"], "positive_ids": ["d", "d"]}))
    with pytest.raises(DataError, match=r"c.jsonl:1 field 'positive_ids': duplicate id 'd'"):
        load_examples(ids)


def test_wrong_column_count(tmp_path):
    p = w(tmp_path / "a.csv", "query,positive\nq,p\nq,p,extra\n")
    with pytest.raises(DataError, match=r"a.csv:3: wrong column count: expected 2 fields \(query, positive\), got 3"):
        load_examples(p)
    folder = beir(tmp_path / "b", "Q1\tD1\n")
    with pytest.raises(DataError, match=r"qrels/test.tsv:1: wrong column count: expected 3 tab-separated fields"):
        load_beir(folder, "test")
    sts = w(tmp_path / "sts-test.csv", "g\tf\t2012\t1\t3.0\tonly one\n")
    with pytest.raises(DataError, match=r"sts-test.csv:1: wrong column count: expected at least 7"):
        load_scored_pairs(sts)


def test_skip_mode_counts_every_planted_case(tmp_path):
    lines = [json.dumps(GOOD), "{broken", json.dumps({"query": "q"}), json.dumps({"query": "", "positive": "p"}),
             "", json.dumps({"query": "q", "positive": 3}), json.dumps(GOOD)]
    p = w(tmp_path / "a.jsonl", "\n".join(lines) + "\n")
    examples, report = load_examples(p, on_error="skip")
    assert len(examples) == report.kept == 2
    assert report.skipped == {"malformed JSON": 1, "positive: missing field": 1, "query: empty text": 1,
                              "positive: expected a string or a list of strings, got int": 1}
    assert report.notes == {"blank line": 1}
    assert "skipped: 4" in report.summary()


@pytest.mark.parametrize("name, text, on_error, message", [
    ("a.jsonl", "{bad\n", "skip", r"a.jsonl: no rows found \(1 skipped"),
    ("e.jsonl", "", "raise", r"e.jsonl: no rows found \(empty file\)"),
    ("e.csv", "", "raise", r"e.csv:1: empty file \(no header line\)"),
    ("missing.jsonl", None, "raise", r"missing.jsonl: file not found"),
    ("x.bin", "abc", "raise", r"x.bin: cannot detect the format from suffix '.bin'"),
    ("e.jsonl", "", "ignore", r"on_error must be 'raise' or 'skip', got 'ignore'"),
], ids=["all-rows-skipped", "empty-jsonl", "empty-csv", "missing", "unknown-suffix", "bad-on-error"])
def test_nothing_loaded_is_an_error_naming_the_file(tmp_path, name, text, on_error, message):
    path = tmp_path / name if text is None else w(tmp_path / name, text)
    with pytest.raises(DataError, match=message):
        load_examples(path, on_error=on_error)


def test_bad_parquet_and_stsb_as_examples(tmp_path, shared_data):
    with pytest.raises(DataError, match=r"x.parquet: not a readable Parquet file"):
        load_examples(w(tmp_path / "x.parquet", b"PAR1 not really"))
    with pytest.raises(DataError, match=r"stsbenchmark: stsb holds scored pairs, not training examples"):
        load_examples(shared_data / "stsbenchmark")


def test_hub_ids_and_missing_local_files(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match=r"^someorg/somedata: cannot load Hugging Face dataset"):
        load_examples("someorg/somedata")  # a hub id: tried with load_dataset, offline here
    with pytest.raises(DataError, match=r"data/missing.jsonl: file not found"):
        load_examples("data/missing.jsonl")  # a data suffix: a local file, never a hub id


def test_huge_fields_load(tmp_path):
    big = "word " * 60_000  # 300k characters: beyond csv's default 128 KiB field limit
    examples, _ = load_examples(w(tmp_path / "a.csv", f'query,positive\nq,"{big}"\n'))
    assert examples[0].positives[0] == big
    assert load_examples(w(tmp_path / "a.jsonl", jl({"query": big, "positive": "p"})))[0][0].query == big
