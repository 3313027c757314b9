"""normalize_text, the one definition of "same text" (false-negative masking, mining filters, the
corpus targets): NFKC, case folding and collapsed white space, each case checked against a literal."""

from __future__ import annotations

import pytest

from textcl.types import normalize_text


@pytest.mark.parametrize("text, expected", [
    ("  Stra\u00dfe\tim  ＴＥＸＴ \n", "strasse im text"),  # ß case-folds to ss; full-width letters (NFKC); tabs
    ("ﬁne", "fine"),  # a ligature (NFKC)
    ("  ＣＡＴ\u00a0Dog\n\triver ", "cat dog river"),  # no-break space and newlines are white space
    ("Straße", "strasse"), ("STRASSE", "strasse"),  # the two spellings meet
])
def test_normalize_text_folds_width_case_and_white_space(text, expected):
    assert normalize_text(text) == expected
