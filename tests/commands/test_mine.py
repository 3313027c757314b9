"""`textcl mine` end to end on the tiny model: BEIR folder, pairs file + extra corpus, recipe section, errors."""

from __future__ import annotations

import json

from beir_fixture import write_beir

from textcl.cli import main


def _rows(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_mine_beir_folder_writes_rows_with_ids_and_provenance(tmp_path, tiny_model_path, capsys):
    beir = write_beir(tmp_path / "beir")
    out = tmp_path / "mined.jsonl"
    rc = main(["mine", "--model", str(tiny_model_path), "--retrieval", str(beir), "--split", "train", "--seed", "3",
               "--output", str(out), "--relative-margin", "none", "--num-negatives", "2", "--no-progress"])
    assert rc == 0
    rows = _rows(out)
    assert len(rows) == 24 and all(r["query_id"] and r["positive_ids"] for r in rows)
    assert all(len(r["negatives"]) == len(r["negative_ids"]) == 2 for r in rows)
    prov = json.loads(out.with_name("mined.jsonl.provenance.json").read_text())
    assert prov["seed"] == 3 and prov["config"]["num_negatives"] == 2 and prov["config"]["relative_margin"] is None
    assert json.loads(capsys.readouterr().out)["rows"] == 24


def test_mine_pairs_with_extra_corpus_and_recipe(tmp_path, tiny_model_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"query": q, "positive": p}) + "\n" for q, p in
                             [("cat dog", "the cat and the dog"), ("red car", "a big red car"),
                              ("cat dog", "a dog with a cat")]))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("a green tree\nmusic and book\nTHE CAT AND THE DOG\nold house by the river\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"model: {{name_or_path: {tiny_model_path}}}\nmining: {{num_negatives: 2, "
                      f"relative_margin: null, output: {tmp_path / 'out.parquet'}}}\n")
    rc = main(["mine", "--recipe", str(recipe), "--pairs", str(pairs), "--corpus", str(corpus), "--no-progress"])
    assert rc == 0
    from textcl.data.io import load_examples
    examples, _ = load_examples(tmp_path / "out.parquet")
    assert [e.query for e in examples] == ["cat dog", "red car", "cat dog"]
    for e in examples:
        assert len(e.negatives) == 2
        if e.query == "cat dog":  # the other row's positive and its upper-case copy are never negatives
            assert not {"the cat and the dog", "a dog with a cat", "THE CAT AND THE DOG"} & set(e.negatives)


def test_mine_without_input_or_output_is_a_clear_error(tmp_path, tiny_model_path, caplog):
    assert main(["mine", "--model", str(tiny_model_path), "--output", str(tmp_path / "o.jsonl")]) == 2
    assert "nothing to mine: give --retrieval BEIR_DIR" in caplog.text
    assert main(["mine", "--model", str(tiny_model_path), "--retrieval", str(tmp_path)]) == 2
    assert "give --output FILE" in caplog.text
