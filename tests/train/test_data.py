"""Training messages that must not mislead: the small-batch warning is about repeated rows, never
about the epoch's last, partial batch."""

from __future__ import annotations

from train_helpers import make_examples

from textcl.config import load_recipe
from textcl.train.data import epoch_batch_maker
from textcl.types import Example


def test_last_partial_batch_is_no_duplicate_warning(caplog):
    config = load_recipe(None, ["train.batch_size=8"])
    batches = epoch_batch_maker(config, make_examples(42))(0)  # 42 unique rows: 5 batches of 8 and one of 2
    assert sorted(len(b) for b in batches)[0] == 2
    assert "less than half of batch_size" not in caplog.text


def test_repeated_rows_still_warn(caplog):
    config = load_recipe(None, ["train.batch_size=8"])
    rows = [Example(f"same question {i % 3}", (f"answer {i}",)) for i in range(48)]  # 3 distinct queries
    epoch_batch_maker(config, rows)(0)
    assert "(besides the last, partial one) hold less than half of batch_size=8" in caplog.text
