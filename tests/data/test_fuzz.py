"""Fuzzed readers: random bytes, malformed lines, truncated gzip, wrong JSON types, missing/extra
columns, huge lines and empty files. The only allowed outcomes are a correct load or a TextclError
naming the file; in skip mode every line is accounted for (kept + skipped + blank = lines).

TEXTCL_FUZZ_EXAMPLES sets examples per reader (default 30, derandomised; `make fuzz` runs 2000).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from textcl.data.io import load_beir, load_examples, load_scored_pairs_with_report, load_texts_with_report
from textcl.errors import TextclError
from textcl.types import Example, ScoredPair

N = int(os.environ.get("TEXTCL_FUZZ_EXAMPLES", "30"))
FUZZ = settings(max_examples=N, deadline=None, database=None, derandomize="TEXTCL_FUZZ_EXAMPLES" not in os.environ,
                suppress_health_check=list(HealthCheck))

KEYS = ["query", "pos", "neg", "positive", "negative", "negative_1", "anchor", "question", "answer", "query_id",
        "positive_ids", "negative_ids", "scores", "neg_scores", "text", "_id", "title", "sentence1", "sentence2",
        "score", "label", "extra"]
TEXTS = st.one_of(st.sampled_from(["a", "b c", "", "  ", "\ud800", "x\ty", 'q"uote', "l1\nl2", "é", "1.5", "nan"]),
                  st.text(max_size=12), st.sampled_from([200_000]).map(lambda n: "x" * n))
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), TEXTS)
JSON = st.recursive(SCALARS, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=4), c, max_size=3),
                    max_leaves=6)
VALUES = st.one_of(TEXTS, st.lists(TEXTS, max_size=3), JSON)
RANDOM_ROWS = st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=6)), VALUES, max_size=6)
SCORE = st.one_of(st.floats(0, 5).map(str), st.sampled_from(["2", "x", "", "nan", "1e400"]))
GOOD = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=10).filter(str.strip)
IDS = st.one_of(st.sampled_from(["1", "2", "3", "D1", "D2", "Q1"]), st.integers(0, 3))


@st.composite
def near_valid(draw, template: dict) -> dict:
    """A valid row from `template` (key -> strategy; "!key" always present, others 3 times in 4), then
    0-2 mutations: drop a key, give it a random value, or add an extra key."""
    row = {k.lstrip("!"): draw(v) for k, v in template.items() if k.startswith("!") or draw(st.integers(0, 3))}
    for _ in range(draw(st.sampled_from([0, 0, 0, 0, 0, 1, 2]))):
        key = draw(st.sampled_from([*row, *KEYS]))
        action = draw(st.sampled_from(["drop", "retype", "extra"]))
        if action == "drop":
            row.pop(key, None)
        else:
            row[key if action == "retype" else key + "_x"] = draw(VALUES)
    return row


def example_rows() -> st.SearchStrategy[dict]:
    texts = st.one_of(GOOD, st.lists(GOOD, min_size=1, max_size=3))
    names = st.sampled_from([("query", "pos", "neg"), ("anchor", "positive", "negative"),
                             ("question", "answer", "hard_negative")])
    valid = names.flatmap(lambda k: near_valid({"!" + k[0]: GOOD, "!" + k[1]: texts, k[2]: st.lists(GOOD, max_size=2),
                                                "query_id": IDS, "extra": VALUES}))
    return st.one_of(valid, valid, valid, RANDOM_ROWS)


@st.composite
def mangle(draw, lines: list[str]) -> bytes:
    """Join lines and maybe break some: truncate a line, replace it, add blank lines, CRLF, bad bytes."""
    out = []
    for line in lines:
        kind = draw(st.sampled_from(["ok"] * 12 + ["truncate", "blank", "garbage"]))
        if kind == "truncate":
            line = line[: draw(st.integers(0, max(len(line) - 1, 0)))]
        elif kind == "blank":
            out.append("")
        elif kind == "garbage":
            line = draw(st.text(max_size=20))
        out.append(line)
    data = ("\r\n" if draw(st.booleans()) else "\n").join(out).encode("utf-8", "surrogatepass")
    if draw(st.booleans()):
        data += b"\n"
    if draw(st.integers(0, 9)) == 0:
        i = draw(st.integers(0, len(data)))
        data = data[:i] + draw(st.sampled_from([b"\xff", b"\xc3", b"\x00", b"\xed\xa0\x80"])) + data[i:]
    return data


def jsonl_bytes(rows: st.SearchStrategy[dict] | None = None) -> st.SearchStrategy[bytes]:
    lines = st.lists(rows if rows is not None else example_rows(), max_size=6).map(lambda rs: [json.dumps(r) for r in rs])
    return st.one_of(st.binary(max_size=300), lines.flatmap(mangle), lines.flatmap(mangle))


def table_bytes(delimiter: str, names: tuple[str, ...] = ("query", "positive", "negative")) -> st.SearchStrategy[bytes]:
    cell = GOOD.filter(lambda t: delimiter not in t and not set(t) & set('\n\r"'))

    @st.composite
    def build(draw) -> bytes:
        if draw(st.integers(0, 3)):
            header = list(names[: draw(st.integers(2, len(names)))])
        else:  # random, possibly duplicate or missing columns
            header = draw(st.lists(st.sampled_from(KEYS), max_size=5))
        good = st.tuples(*[SCORE if h == "score" else cell for h in header]).map(list)
        rows = draw(st.lists(st.one_of(good, good, good, st.lists(TEXTS, max_size=6)), max_size=6))
        if draw(st.booleans()):  # properly quoted
            buf = io.StringIO()
            csv.writer(buf, delimiter=delimiter, lineterminator="\n").writerows([header, *rows])
            return buf.getvalue().encode("utf-8", "surrogatepass")
        return draw(mangle([delimiter.join(r) for r in [header, *rows]]))
    return st.one_of(st.binary(max_size=300), build(), build())


def maybe_gzip(data: st.SearchStrategy[bytes]) -> st.SearchStrategy[tuple[bytes, str]]:
    @st.composite
    def build(draw) -> tuple[bytes, str]:
        raw = draw(data)
        if draw(st.integers(0, 2)):
            return raw, ""
        packed = gzip.compress(raw, mtime=0)
        if draw(st.booleans()):  # truncated or corrupted stream
            packed = packed[: draw(st.integers(0, len(packed)))]
        return packed, ".gz"
    return build()


def outcome(call: Callable, path: Path):
    """A result, or None after a TextclError that names the file. Any other exception fails the test."""
    try:
        result = call()
    except TextclError as exc:
        assert path.name in str(exc), f"error does not name the file: {exc}"
        event(f"error: {getattr(exc, 'reason', str(exc))[:30]}")  # --hypothesis-show-statistics
        return None
    event("loaded")
    return result


def valid_example(ex: Example) -> None:
    assert isinstance(ex.query, str) and ex.query.strip()
    assert ex.positives and all(isinstance(p, str) and p.strip() for p in ex.positives)
    assert all(isinstance(n, str) and n.strip() for n in ex.negatives)
    assert not ex.scores or len(ex.scores) == len(ex.negatives)
    assert not ex.positive_ids or len(ex.positive_ids) == len(ex.positives)


def n_lines(data: bytes) -> int:
    return data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)


@FUZZ
@given(data=maybe_gzip(jsonl_bytes()), fmt=st.sampled_from(["auto", "flag"]), on_error=st.sampled_from(["raise", "skip"]))
def test_fuzz_jsonl_examples(data, fmt, on_error):
    raw, gz = data
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"train.jsonl{gz}"
        path.write_bytes(raw)
        result = outcome(lambda: load_examples(path, format=fmt, on_error=on_error), path)
        if result is not None:
            examples, report = result
            for ex in examples:
                valid_example(ex)
            if on_error == "skip" and not gz:  # nothing silently lost
                assert report.kept + report.n_skipped + report.notes["blank line"] == n_lines(raw)


@FUZZ
@given(data=st.one_of(table_bytes(","), table_bytes("\t")), delimiter=st.sampled_from([",", "\t"]),
       on_error=st.sampled_from(["raise", "skip"]))
def test_fuzz_csv_tsv_examples(data, delimiter, on_error):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / ("train.csv" if delimiter == "," else "train.tsv")
        path.write_bytes(data)
        result = outcome(lambda: load_examples(path, on_error=on_error), path)
        if result is not None:
            examples, report = result
            for ex in examples:
                valid_example(ex)
            if on_error == "skip" and delimiter == "\t":
                assert 1 + report.kept + report.n_skipped + report.notes["blank line"] == n_lines(data)


COLUMN = st.one_of(st.lists(TEXTS.filter(lambda t: "\ud800" not in t), min_size=2, max_size=2),
                   st.lists(st.one_of(st.none(), st.text(max_size=5)), min_size=2, max_size=2),
                   st.lists(st.integers(-5, 5), min_size=2, max_size=2),
                   st.lists(st.floats(allow_nan=True), min_size=2, max_size=2),
                   st.lists(st.lists(st.text(max_size=4), max_size=2), min_size=2, max_size=2))
GOOD_COLUMN = st.lists(GOOD, min_size=2, max_size=2)
LIST_COLUMN = st.lists(st.lists(GOOD, min_size=1, max_size=2), min_size=2, max_size=2)
TABLES = st.one_of(
    st.dictionaries(st.sampled_from(KEYS), COLUMN, max_size=5),
    st.fixed_dictionaries({"query": GOOD_COLUMN, "pos": st.one_of(GOOD_COLUMN, LIST_COLUMN)},
                          optional={"neg": st.one_of(LIST_COLUMN, COLUMN), "extra": COLUMN,
                                    "query_id": st.lists(st.integers(0, 2), min_size=2, max_size=2)}))


@FUZZ
@given(columns=TABLES, junk=st.binary(max_size=100),
       use_junk=st.booleans(), on_error=st.sampled_from(["raise", "skip"]))
def test_fuzz_parquet_examples(columns, junk, use_junk, on_error):
    import pyarrow as pa
    import pyarrow.parquet as pq

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "train.parquet"
        if use_junk:
            path.write_bytes(junk)
        else:
            pq.write_table(pa.table(columns) if columns else pa.table({"x": [1]}), path)
        result = outcome(lambda: load_examples(path, on_error=on_error), path)
        for ex in (result or ([], None))[0]:
            valid_example(ex)


def qrels_bytes() -> st.SearchStrategy[bytes]:
    ids = st.sampled_from(["Q1", "Q1", "Q2", "D1", "D2", "D1", "D2", "D9", "", " "])
    grade = st.sampled_from(["0", "1", "1", "2", "2", "1.5", "x", "-1", "1e9", "nan"])
    line = st.one_of(st.tuples(ids, ids, grade).map("\t".join), st.text(max_size=10))
    return st.lists(line, max_size=6).map(lambda ls: ["query-id\tcorpus-id\tscore", *ls]).flatmap(mangle)


@FUZZ
@given(corpus=maybe_gzip(jsonl_bytes(near_valid({"!_id": IDS, "title": GOOD, "!text": GOOD}))),
       queries=jsonl_bytes(near_valid({"!_id": IDS, "!text": GOOD})), qrels=qrels_bytes(),
       on_error=st.sampled_from(["raise", "skip"]), valid_docs=st.booleans())
def test_fuzz_beir(corpus, queries, qrels, on_error, valid_docs):
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d) / "beirset"
        (folder / "qrels").mkdir(parents=True)
        raw, gz = corpus
        if valid_docs:  # give the qrels something real to point at
            raw, gz = b'{"_id": "D1", "text": "one"}\n{"_id": "D2", "title": "t", "text": ""}\n', ""
            queries = b'{"_id": "Q1", "text": "q?"}\n{"_id": "Q2", "text": "q2?"}\n'
        (folder / f"corpus.jsonl{gz}").write_bytes(raw)
        (folder / "queries.jsonl").write_bytes(queries)
        (folder / "qrels" / "test.tsv").write_bytes(qrels)
        rset = outcome(lambda: load_beir(folder, "test", on_unknown=on_error), folder)
        if rset is not None:
            assert all(q in rset.queries and all(doc in rset.corpus for doc in judged)
                       for q, judged in rset.qrels.items())
        result = outcome(lambda: load_examples(folder, split="test", on_error=on_error), folder)
        for ex in (result or ([], None))[0]:
            valid_example(ex)


def sts_bytes() -> st.SearchStrategy[bytes]:
    cell = st.one_of(GOOD.filter(lambda t: not set(t) & set("\t\n\r")), TEXTS)
    fields = st.tuples(st.lists(cell, min_size=4, max_size=4), SCORE, st.lists(cell, min_size=2, max_size=4))
    line = fields.map(lambda f: "\t".join([*f[0], f[1], *f[2]]))
    return st.one_of(st.binary(max_size=200), st.lists(line, max_size=6).flatmap(mangle))


def sick_bytes() -> st.SearchStrategy[bytes]:
    header = "pair_ID\tsentence_A\tsentence_B\trelatedness_score\tSemEval_set"
    cell = GOOD.filter(lambda t: not set(t) & set("\t\n\r"))
    good = st.tuples(cell, cell, cell, SCORE, st.sampled_from(["TEST", "TRAIN", "TRIAL", ""])).map("\t".join)
    row = st.one_of(good, good, good, st.lists(TEXTS, min_size=3, max_size=6).map("\t".join))
    return st.lists(row, max_size=6).map(lambda rs: [header, *rs]).flatmap(mangle)


PAIR_ROWS = near_valid({"!sentence1": GOOD, "!sentence2": GOOD, "!score": st.one_of(st.floats(0, 5), SCORE)})
PAIR_NAMES = ("sentence1", "sentence2", "score")


@FUZZ
@given(kind=st.sampled_from(["sts-test.csv", "SICK.txt", "pairs.jsonl", "pairs.csv", "pairs.tsv"]),
       data=st.data(), on_error=st.sampled_from(["raise", "skip"]))
def test_fuzz_scored_pairs(kind, data, on_error):
    strategy = {"sts-test.csv": sts_bytes(), "SICK.txt": sick_bytes(), "pairs.jsonl": jsonl_bytes(PAIR_ROWS),
                "pairs.csv": table_bytes(",", PAIR_NAMES), "pairs.tsv": table_bytes("\t", PAIR_NAMES)}[kind]
    raw = data.draw(strategy)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / kind
        path.write_bytes(raw)
        result = outcome(lambda: load_scored_pairs_with_report(path, on_error=on_error), path)
        for pair in (result or ([], None))[0]:
            assert isinstance(pair, ScoredPair) and pair.sentence1.strip() and pair.sentence2.strip()
            assert isinstance(pair.score, float) and pair.score == pair.score


@FUZZ
@given(data=maybe_gzip(st.one_of(jsonl_bytes(), st.lists(TEXTS, max_size=6).map(
    lambda ts: "\n".join(ts).encode("utf-8", "surrogatepass")))), name=st.sampled_from(["texts.txt", "texts.jsonl"]),
    on_error=st.sampled_from(["raise", "skip"]))
def test_fuzz_texts(data, name, on_error):
    raw, gz = data
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / (name + gz)
        path.write_bytes(raw)
        result = outcome(lambda: load_texts_with_report(path, on_error=on_error), path)
        if result is not None:
            texts, report = result
            assert all(isinstance(t, str) and t.strip() for t in texts)
            if on_error == "skip" and not gz and name.endswith(".txt"):
                assert report.kept + report.n_skipped + report.notes["empty line"] == n_lines(raw)


@settings(FUZZ, max_examples=max(3, N // 6))
@given(columns=TABLES.filter(bool),
       split=st.sampled_from(["train", "test"]))
def test_fuzz_hf_folder(columns, split):
    import datasets

    datasets.disable_progress_bars()
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "hfdata"
        datasets.DatasetDict({"train": datasets.Dataset.from_dict(columns)}).save_to_disk(str(path))
        result = outcome(lambda: load_examples(path, split=split), path)
        for ex in (result or ([], None))[0]:
            valid_example(ex)
