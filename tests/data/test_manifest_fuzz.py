"""Property-based tests of the manifest reader: whatever bytes or rows it is given, no exception
escapes, every row is either accepted or reported with its own row number, and memory stays
bounded."""

import json
import tracemalloc

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sgmft.data.manifest import iter_manifest, load_manifest
from sgmft.text.cleaning import preprocess_text
from tests.conftest import write_image

SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
#: characters that break naive readers: line separators JSON allows raw, NUL, surrogates, RTL marks
AWKWARD = st.sampled_from(["\u2028", "\u2029", "\u0085", "\x00", "\ud800", "\udfff", "\u200f",
                           "\u202e", "\ufeff", "\r", "[哈哈]", "@张三", "http://t.cn/x", "#话题#"])
TEXT = st.lists(st.one_of(st.text(max_size=12), AWKWARD), max_size=8).map("".join)
VALUE = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), TEXT),
                     lambda inner: st.one_of(st.lists(inner, max_size=3),
                                             st.dictionaries(st.text(max_size=4), inner, max_size=3)),
                     max_leaves=40)
ROW = st.fixed_dictionaries({"id": st.one_of(TEXT, st.integers(), VALUE), "text": st.one_of(TEXT, VALUE),
                             "image": st.sampled_from(["ok.png", "missing.png", "", "a\x00b.png"]),
                             "label": st.one_of(st.sampled_from(["home", "gym", "Work"]), VALUE)},
                            optional={"user": VALUE, "group": VALUE, "split": VALUE})


def check_every_row_accounted_for(path, lines: int):
    """The rows of the manifest, each accepted or reported once; a file with no row at all
    (empty, a header alone, blank lines) is refused as such."""
    preprocess_text("预热 warm-up")      # one-off costs (jieba's dictionary, imports) are paid
    try:
        load_manifest(path, skip_invalid=True)   # outside the measurement
    except ValueError as exc:
        assert "holds no posts" in str(exc)
        if "text-only" in str(exc):       # every row a text-only post: each is one
            return None, {p.row for block in iter_manifest(path) for p in block.posts}
        return None, set()
    tracemalloc.start()
    try:
        manifest = load_manifest(path, skip_invalid=True)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    rows = [p.row for p in manifest.posts] + [p.row for p in manifest.skipped] + manifest.text_only
    assert len(rows) == len(set(rows)), "a row is accepted or reported once"
    assert all(1 <= r <= lines + 1 for r in rows)
    assert peak < 64 * 1024 * 1024
    return manifest, set(rows)


@SETTINGS
@given(rows=st.lists(ROW, max_size=6), deep=st.integers(0, 5000))
def test_jsonl_rows_of_anything(tmp_path, rows, deep):
    write_image(tmp_path / "ok.png")
    lines = [json.dumps(r, ensure_ascii=False) for r in rows] + ["[" * deep + "]" * deep]
    raw = "\n".join(lines).encode("utf-8", errors="surrogatepass")
    path = tmp_path / "m.jsonl"
    path.write_bytes(raw)
    _, seen = check_every_row_accounted_for(path, len(lines))
    non_blank = {i + 1 for i, line in enumerate(lines) if line.strip()}
    assert seen == non_blank            # raw U+2028 / U+0085 inside a row never split it


@SETTINGS
@given(raw=st.binary(max_size=4096))
def test_random_bytes_as_jsonl_and_csv(tmp_path, raw):
    for suffix in (".jsonl", ".csv"):
        path = tmp_path / f"m{suffix}"
        path.write_bytes(raw)
        check_every_row_accounted_for(path, raw.count(b"\n") + raw.count(b"\r"))


@SETTINGS
@given(fields=st.lists(st.lists(TEXT, min_size=4, max_size=5), max_size=5), huge=st.booleans())
def test_csv_rows_of_anything(tmp_path, fields, huge):
    import csv
    import io

    write_image(tmp_path / "ok.png")
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["id", "text", "image", "label"])
    for row in fields:
        writer.writerow(row)
    if huge:
        writer.writerow(["big", "x" * (2 * 1024 * 1024), "ok.png", "home"])   # over the field limit
    path = tmp_path / "m.csv"
    path.write_bytes(buffer.getvalue().encode("utf-8", errors="surrogatepass"))
    text = buffer.getvalue()
    manifest, _ = check_every_row_accounted_for(path, text.count("\n") + text.count("\r") + 1)
    if huge and manifest is not None:
        assert any("field" in p.problem for p in manifest.skipped)
