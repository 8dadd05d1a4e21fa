"""Property-based tests of text cleaning: any string gives a list of whitespace-free tokens."""

from hypothesis import given, settings
from hypothesis import strategies as st

from sgmft.text.cleaning import clean_text, preprocess_text
from tests.data.test_manifest_fuzz import AWKWARD

SAMPLES = st.sampled_from(["tempête", "São Paulo", "//@小王:", "回复@Lily:", "\\n", "www.", "😀👍🏽",
                           "ﾃｽﾄ", "Ⅻ"])
TEXTS = st.lists(st.one_of(st.text(max_size=30), AWKWARD, SAMPLES), max_size=10).map("".join)


@settings(max_examples=200, deadline=None)
@given(text=TEXTS)
def test_cleaning_never_fails_and_gives_clean_tokens(text):
    cleaned = clean_text(text)
    assert cleaned == cleaned.strip() and "  " not in cleaned
    tokens = preprocess_text(text)
    assert all(token and not any(ch.isspace() for ch in token) for token in tokens)
    assert preprocess_text(text) == tokens
