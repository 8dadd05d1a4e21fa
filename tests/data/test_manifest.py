import csv
import json

import numpy as np
import pytest

from sgmft.data.manifest import ManifestError, load_manifest
from tests.conftest import write_image, write_jsonl


def test_valid_jsonl_manifest(small_manifest):
    manifest = load_manifest(small_manifest)
    assert len(manifest) == 8 and manifest.skipped == []
    post = manifest.posts[0]
    assert post.id == "p0" and post.label == "home" and post.user == "u0" and post.row == 1
    assert post.tokens and "[" not in post.clean_text and "哈哈" not in post.clean_text
    assert manifest.label_indices().tolist() == list(range(8))
    assert manifest.label_indices(np.array([3, 0])).tolist() == [3, 0]
    assert manifest.posts[0].image_sha256 == manifest.posts[7].image_sha256


def test_csv_manifest_with_image_root(tmp_path):
    write_image(tmp_path / "imgs" / "a.jpg", fmt="JPEG")
    path = tmp_path / "m.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text", "image", "label"])
        writer.writerow(["1", "在健身房, 跑步", "a.jpg", "Gym"])
    manifest = load_manifest(path, image_root=tmp_path / "imgs")
    assert manifest.posts[0].label == "gym" and manifest.posts[0].row == 2


def test_declared_label_set(tmp_path):
    write_image(tmp_path / "a.png")
    path = write_jsonl(tmp_path / "m.jsonl", [{"id": "1", "text": "great day", "image": "a.png",
                                               "label": "positive"}])
    with pytest.raises(ManifestError, match="unknown label 'positive'"):
        load_manifest(path)
    manifest = load_manifest(path, labels=["positive", "negative", "neutral"])
    assert manifest.labels == ("positive", "negative", "neutral")


def bad_rows_manifest(tmp_path):
    """One row of every problem; returns the path and the expected problem of each row."""
    write_image(tmp_path / "ok.png")
    (tmp_path / "text.jpg").write_text("not an image")
    write_image(tmp_path / "full.jpg", size=(200, 200), fmt="JPEG")
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "trunc.jpg").write_bytes(data[: len(data) // 2])
    good = {"text": "今天在公司加班", "image": "ok.png", "label": "work"}
    lines = [
        json.dumps({"id": "a", **good}),
        json.dumps({"id": "a", **good}),                                  # 2 duplicate id
        json.dumps({"id": "b", **good, "image": "missing.png"}),          # 3 missing image
        json.dumps({"id": "c", **good, "image": "text.jpg"}),             # 4 not an image
        json.dumps({"id": "d", **good, "text": "[哈哈] http://t.cn/x"}),   # 5 empty after cleaning
        json.dumps({"id": "e", **good, "label": "airport"}),              # 6 unknown label
        '{"id": "f", "text": broken json',                                 # 7 malformed
        json.dumps({"id": "g", **good, "image": "trunc.jpg"}),            # 8 truncated
        json.dumps({"id": "h", "image": "ok.png", "label": "work"}),      # 9 missing text
        json.dumps(["not", "an", "object"]),                              # 10 malformed
        json.dumps({"id": "i", **good, "split": "dev"}),                  # 11 unknown split
    ]
    raw = "\n".join(lines).encode() + b'\n{"id": "j", "text": "\xff\xfe bad", "image": "ok.png"}\n'
    path = tmp_path / "bad.jsonl"
    path.write_bytes(raw)
    expected = {2: "duplicate id, first seen in row 1", 3: "missing image", 4: "not an image",
                5: "empty text after cleaning", 6: "unknown label 'airport'", 7: "malformed row",
                8: "truncated", 9: "missing field 'text'", 10: "malformed row",
                11: "unknown split 'dev'", 12: "bad encoding"}
    return path, expected


def test_every_bad_row_reported_by_row(tmp_path):
    path, expected = bad_rows_manifest(tmp_path)
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    problems = {p.row: p.problem for p in info.value.problems}
    assert sorted(problems) == sorted(expected)
    for row, fragment in expected.items():
        assert fragment in problems[row], (row, problems[row])
    assert "row 3 (id 'b'): missing image" in str(info.value)
    assert "--skip-invalid" in str(info.value)


def test_skip_invalid_counts_and_keeps_good_rows(tmp_path):
    path, expected = bad_rows_manifest(tmp_path)
    manifest = load_manifest(path, skip_invalid=True)
    assert [p.id for p in manifest.posts] == ["a"]
    assert len(manifest.skipped) == len(expected)


def test_csv_wrong_field_count_and_bad_encoding(tmp_path):
    write_image(tmp_path / "ok.png")
    path = tmp_path / "m.csv"
    path.write_bytes("id,text,image,label\n1,你好 公司,ok.png,work\n2,only,two\n".encode()
                     + b"3,\xc3\x28 text,ok.png,work\n")
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    problems = {p.row: p.problem for p in info.value.problems}
    assert "3 fields, the header has 4" in problems[3]
    assert "bad encoding" in problems[4]


def test_unlabelled_rows_allowed_for_prediction(tmp_path):
    write_image(tmp_path / "ok.png")
    path = write_jsonl(tmp_path / "m.jsonl", [{"id": "1", "text": "看电影", "image": "ok.png"}])
    with pytest.raises(ManifestError, match="missing field 'label'"):
        load_manifest(path)
    assert load_manifest(path, require_labels=False).posts[0].label is None


def test_hashes_change_with_content_not_with_path(tmp_path, small_manifest):
    manifest = load_manifest(small_manifest)
    again = load_manifest(small_manifest)
    assert manifest.content_hash() == again.content_hash()
    write_image(small_manifest.parent / "images" / "home.png", (1, 2, 3))
    changed = load_manifest(small_manifest)
    assert changed.content_hash() != manifest.content_hash()


def test_missing_manifest_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_manifest(tmp_path / "none.jsonl")


def test_rows_that_once_aborted_or_hung_a_command_are_row_errors(tmp_path):
    import os
    import threading

    write_image(tmp_path / "ok.png")
    os.mkfifo(tmp_path / "pipe.png")
    (tmp_path / "zero.png").symlink_to("/dev/zero")
    good = {"text": "今天在公司加班", "image": "ok.png", "label": "work"}
    lines = [
        json.dumps({"id": "a", **good}),
        "[" * 100_000 + "]" * 100_000,                                       # 2 deep nesting
        json.dumps({"id": "b", **good, "image": "a\x00b.png"}),              # 3 null byte
        json.dumps({"id": "c", **good, "image": "pipe.png"}),                # 4 a FIFO
        json.dumps({"id": "d", **good, "image": "zero.png"}),                # 5 /dev/zero
        json.dumps({"id": "e", **good, "text": "上班\u2028加班\u0085到很晚"}, ensure_ascii=False),  # 6 fine
        json.dumps({"id": ["x"], **good}),                                    # 7 id as a list
        json.dumps({"id": {"k": 1}, **good}),                                 # 8 id as an object
        json.dumps({"id": "f", **good, "text": "字" * 30_000}),               # 9 over the text limit
        json.dumps({"id": "g", **good}),                                      # 10 fine
    ]
    path = tmp_path / "m.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = {}
    worker = threading.Thread(target=lambda: result.update(
        m=load_manifest(path, skip_invalid=True), outside=load_manifest(path, skip_invalid=True,
                                                                        outside_root=True)), daemon=True)
    worker.start()
    worker.join(30)
    manifest = result["m"]
    assert [p.row for p in manifest.posts] == [1, 6, 10]     # U+2028 and U+0085 split nothing
    problems = {p.row: p.problem for p in manifest.skipped}
    assert "nested deeper than" in problems[2]
    assert "null byte" in problems[3]
    assert "FIFO" in problems[4] and "outside the image root" in problems[5]     # a link to /dev/zero
    assert "device" in {p.row: p.problem for p in result["outside"].skipped}[5]   # opened when allowed
    assert "'id' must be a string" in problems[7] and "'id' must be a string" in problems[8]
    assert "exceeds the limit of 25000" in problems[9]


def test_an_overlong_csv_field_is_one_row_error(tmp_path):
    write_image(tmp_path / "ok.png")
    path = tmp_path / "m.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text", "image", "label"])
        writer.writerow(["1", "上班", "ok.png", "work"])
        writer.writerow(["2", "x" * (2 * 1024 * 1024), "ok.png", "work"])
        writer.writerow(["3", "回家", "ok.png", "home"])
    manifest = load_manifest(path, skip_invalid=True)
    assert [p.id for p in manifest.posts] == ["1", "3"]
    assert manifest.skipped[0].row == 3 and "field larger than field limit" in manifest.skipped[0].problem


def test_image_checks_are_recorded_and_not_repeated(small_manifest, monkeypatch):
    from sgmft.data import image_checks as checks_module

    load_manifest(small_manifest)
    calls = []
    original = checks_module.decode_image
    monkeypatch.setattr(checks_module, "decode_image", lambda data: calls.append(1) or original(data))
    load_manifest(small_manifest)
    assert calls == []                                # unchanged files: no second decode
    write_image(small_manifest.parent / "images" / "home.png", (9, 9, 9))
    load_manifest(small_manifest)
    assert len(calls) == 1                            # a changed file is checked again


def test_a_damaged_image_check_record_is_replaced(small_manifest, monkeypatch):
    from sgmft.data import image_checks as checks_module
    from sgmft.data.image_checks import RECORD
    from sgmft.data.workdir import work_dir

    first = load_manifest(small_manifest)
    record = work_dir(small_manifest) / RECORD
    record.write_bytes(b"not a database" * 100)
    again = load_manifest(small_manifest)
    assert [p.image_phash for p in again.posts] == [p.image_phash for p in first.posts]
    calls = []
    original = checks_module.decode_image
    monkeypatch.setattr(checks_module, "decode_image", lambda data: calls.append(1) or original(data))
    load_manifest(small_manifest)
    assert calls == []                                # the record was rebuilt and is used again


def test_other_columns_are_kept_as_metadata(tmp_path):
    write_image(tmp_path / "a.png")
    rows = [{"id": "1", "text": "周末在家", "image": "a.png", "label": "home", "event": "Sandy",
             "image_id": 7, "tags": ["x", "y"], "blank": ""},
            {"id": "2", "text": "上班了", "image": "a.png", "label": "work"}]
    manifest = load_manifest(write_jsonl(tmp_path / "m.jsonl", rows))
    first, second = manifest.posts
    assert first.value("event") == "Sandy" and first.value("image_id") == "7"
    assert first.value("tags") == '["x", "y"]' and first.value("blank") is None
    assert second.value("event") is None and first.value("label") == "home"
    assert manifest.columns == ["label", "event", "image_id", "tags"]
    # the metadata is part of the data a result depends on
    rows[0]["event"] = "Boston"
    changed = load_manifest(write_jsonl(tmp_path / "n.jsonl", rows))
    assert changed.data_hash() != manifest.data_hash()
    assert changed.post_digests()["1"] != manifest.post_digests()["1"]
    assert changed.content_hash() == manifest.content_hash()        # the features are the same


def test_a_repeated_csv_column_is_refused_not_overwritten(tmp_path):
    write_image(tmp_path / "a.png")
    path = tmp_path / "m.csv"
    path.write_text("id,text,image,label,label\n1,hi there,a.png,home,work\n", encoding="utf-8")
    with pytest.raises(ManifestError, match=r"row 1: malformed header: column.*'label'"):
        load_manifest(path)


@pytest.mark.parametrize("content", ["", "\n\n  \n", "id,text,image,label\n"])
def test_a_manifest_without_rows_is_an_error(tmp_path, content):
    path = tmp_path / ("m.csv" if "," in content else "m.jsonl")
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match="holds no posts"):
        load_manifest(path, skip_invalid=True)


def test_a_manifest_that_is_a_folder_or_a_fifo_is_named_as_such(tmp_path):
    import os

    (tmp_path / "folder.jsonl").mkdir()
    with pytest.raises(ValueError, match="not a regular file \\(a folder\\)"):
        load_manifest(tmp_path / "folder.jsonl")
    os.mkfifo(tmp_path / "fifo.jsonl")
    with pytest.raises(ValueError, match="not a regular file \\(a FIFO"):
        load_manifest(tmp_path / "fifo.jsonl")
    with pytest.raises(FileNotFoundError, match="manifest not found"):
        load_manifest(tmp_path / "nothing.jsonl")


def test_a_huge_integer_id_and_a_huge_image_path_are_row_errors(tmp_path):
    write_image(tmp_path / "a.png")
    good = json.dumps({"id": "ok", "text": "在家", "image": "a.png", "label": "home", "user": "u1"})
    lines = [good, '{"id": ' + "9" * 5000 + ', "text": "x", "image": "a.png", "label": "home"}',
             json.dumps({"id": "long", "text": "在家", "image": "d/" * 2500 + "a.png", "label": "work",
                         "user": "u2"})]
    path = tmp_path / "m.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    manifest = load_manifest(path, skip_invalid=True)
    assert [p.id for p in manifest.posts] == ["ok"]
    problems = {p.row: p for p in manifest.skipped}
    assert "malformed row: a number of 5000 digits" in problems[2].problem
    assert "set_int_max_str_digits" not in problems[2].problem           # words for a user, not Python's
    assert "unreadable image" in problems[3].problem or "missing image" in problems[3].problem
    assert (problems[3].user, problems[3].label) == ("u2", "work")     # kept for the error record


def test_many_image_checks_and_texts_run_in_processes_with_the_same_outcomes(small_manifest, monkeypatch):
    from sgmft.data import manifest as manifest_module
    from sgmft.data.image_checks import RECORD
    from sgmft.data.workdir import work_dir
    from sgmft.text import cleaning

    threaded = load_manifest(small_manifest)
    (work_dir(small_manifest) / RECORD).unlink()         # nothing recorded: every image is checked
    monkeypatch.setattr(manifest_module, "PROCESS_CHECKS", 2)
    pieces = []
    spread = cleaning.preprocess_texts
    monkeypatch.setattr(manifest_module, "preprocess_texts",
                        lambda texts, config, pool: pieces.append(pool) or spread(texts, config, pool))
    blocks = list(manifest_module.iter_manifest(small_manifest, block_rows=3))
    assert [len(b.posts) for b in blocks] == [3, 3, 2]
    posts = [p for b in blocks for p in b.posts]
    assert [(p.id, p.image_sha256, p.image_phash, p.image_layout, p.tokens) for p in posts] == \
        [(p.id, p.image_sha256, p.image_phash, p.image_layout, p.tokens) for p in threaded.posts]
    assert all(pool is not None for pool in pieces)      # the texts were cleaned in the processes


def _posts(tmp_path, n=3, **extra):
    rows = []
    for i in range(n):
        write_image(tmp_path / f"i{i}.png", (40 * i, 10, 10))
        rows.append({"id": f"p{i}", "text": f"第{i}条 今天去了公司", "image": f"i{i}.png", "label": "work",
                     **extra})
    return rows


def test_header_spaces_and_case_of_known_columns_are_forgiven(tmp_path):
    rows = _posts(tmp_path)
    with open(tmp_path / "m.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["ID", "text", " Image", "Label ", "Event"])
        writer.writerows([[r["id"], r["text"], r["image"], r["label"], "e1"] for r in rows])
    manifest = load_manifest(tmp_path / "m.csv")
    assert len(manifest) == 3 and manifest.posts[0].label == "work"
    assert manifest.columns == ["label", "Event"]            # an unknown column keeps its own name
    write_jsonl(tmp_path / "m.jsonl", [{" id ": r["id"], "Text": r["text"], "image": r["image"],
                                        "LABEL": r["label"]} for r in rows])
    assert [p.id for p in load_manifest(tmp_path / "m.jsonl").posts] == ["p0", "p1", "p2"]


@pytest.mark.parametrize("column, meant", [("img", "image"), ("content", "text"), ("txt", "text")])
def test_a_misnamed_column_is_one_error_naming_the_close_match(tmp_path, column, meant):
    rows = [{(column if k == meant else k): v for k, v in r.items()} for r in _posts(tmp_path)]
    write_jsonl(tmp_path / "m.jsonl", rows)
    for skip in (False, True):
        with pytest.raises(ValueError, match=f"no column '{meant}'; did you mean '{column}'") as caught:
            load_manifest(tmp_path / "m.jsonl", skip_invalid=skip)
        assert not isinstance(caught.value, ManifestError)      # one error, not one per row


def test_a_post_without_an_image_is_text_only_and_left_out_of_training_with_a_count(tmp_path, caplog):
    from sgmft.data.manifest import iter_manifest

    rows = _posts(tmp_path, 4)
    rows[1]["image"] = ""
    del rows[2]["image"]
    write_jsonl(tmp_path / "m.jsonl", rows)
    posts = [p for block in iter_manifest(tmp_path / "m.jsonl") for p in block.posts]
    assert [p.image is None for p in posts] == [False, True, True, False]
    assert posts[1].image_sha256 == "" and posts[1].tokens
    manifest = load_manifest(tmp_path / "m.jsonl")
    assert [p.id for p in manifest.posts] == ["p0", "p3"] and manifest.text_only == [2, 3]
    assert "2 text-only posts (no image) left out" in caplog.text
    assert len(load_manifest(tmp_path / "m.jsonl", text_only=True)) == 4


def test_image_paths_are_confined_to_the_image_root(tmp_path):
    from sgmft.data.manifest import resolve_image

    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (tmp_path / "outside.png").write_bytes(b"x")
    (root / "link.png").symlink_to(tmp_path / "outside.png")
    manifest = root / "m.jsonl"
    assert resolve_image("sub/a.png", manifest, None) == root / "sub" / "a.png"
    assert resolve_image(str(root / "sub" / "a.png"), manifest, None) == root / "sub" / "a.png"
    for escape in ("../outside.png", str(tmp_path / "outside.png"), "link.png", "sub/../../outside.png"):
        with pytest.raises(ValueError, match="outside the image root"):
            resolve_image(escape, manifest, None)
        assert resolve_image(escape, manifest, None, outside_root=True).name.endswith(".png")
    rows = _posts(root, 2)
    rows[1]["image"] = "../outside.png"
    write_jsonl(manifest, rows)
    loaded = load_manifest(manifest, skip_invalid=True)
    assert len(loaded) == 1 and "outside the image root" in loaded.skipped[0].problem


def test_a_resumed_read_equals_an_uninterrupted_one_after_a_kill_at_any_row(tmp_path):
    from sgmft.data.manifest import iter_manifest

    rows = _posts(tmp_path, 5)
    lines = [json.dumps(rows[0]), "{not json", json.dumps({**rows[1], "text": ""}),   # bad: p1 not registered
             json.dumps({**rows[1], "id": "p0"}),                                      # duplicate of row 1
             json.dumps(rows[1]),                                                      # p1, valid after all
             json.dumps({**rows[2], "image": "missing.png"}),                          # p2: image error
             json.dumps(rows[2]), json.dumps(rows[3]), json.dumps({**rows[4], "label": "nowhere"}),
             json.dumps(rows[4])]
    path = tmp_path / "m.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def read(skip: int) -> list[tuple]:
        found = []
        for block in iter_manifest(path, block_rows=2, skip_through=skip):
            found += [(p.row, p.id, "ok") for p in block.posts]
            found += [(p.row, p.id, p.problem) for p in block.problems]
        return sorted(found)

    whole = read(0)
    assert [r for r in whole if r[2] == "ok"] == [(1, "p0", "ok"), (5, "p1", "ok"), (8, "p3", "ok"),
                                                  (10, "p4", "ok")]
    assert (7, "p2", "duplicate id, first seen in row 6") in whole
    for kill in range(1, len(lines) + 1):
        assert read(kill) == [r for r in whole if r[0] > kill], kill
