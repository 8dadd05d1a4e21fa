"""Progress output off a terminal: one line per tenth of the work, never a flood."""

from __future__ import annotations

from sgmft.progress import LINES, progress_bar


def test_lines_per_tenth_off_terminal(capsys):
    bar = progress_bar(1000, "extract", unit="posts")
    for _ in range(1000):
        bar.update(1)
    bar.set_postfix(loss=0.5)
    bar.close()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == LINES
    assert lines[0] == "extract:  10 % (100/1000 posts)"
    assert lines[-1] == "extract: 100 % (1000/1000 posts)"


def test_unfinished_bar_ends_with_a_line_and_resumes_from_initial(capsys):
    bar = progress_bar(10, "train", unit="epochs", initial=3)
    bar.set_postfix(train_loss=0.25)
    bar.update(2)
    bar.update(0)
    bar.close()  # nothing new since the last line: no repeat
    assert capsys.readouterr().err.splitlines() == ["train:  50 % (5/10 epochs) train_loss=0.25"]
    bar = progress_bar(1000, "extract", unit="posts")
    bar.update(5)
    bar.close()  # short of a tenth: the end still says where it stopped
    assert capsys.readouterr().err.splitlines() == ["extract:   0 % (5/1000 posts)"]


def test_disabled_bar_and_empty_total_are_silent(capsys):
    bar = progress_bar(100, "x", disable=True)
    bar.update(100)
    bar.close()
    empty = progress_bar(0, "y")
    empty.close()
    assert capsys.readouterr().err == ""


def test_a_count_of_one_is_singular_and_others_plural(capsys):
    from sgmft.words import noun, plural

    assert [plural(n, "post") for n in (0, 1, 2, 1200)] == ["0 posts", "1 post", "2 posts", "1,200 posts"]
    assert noun(3, "posts") == "posts" and noun(2, "entry", "entries") == "entries"
    for total in (1, 44):
        bar = progress_bar(total, "extract", unit="post")
        bar.update(total)
        bar.close()
    assert capsys.readouterr().err.splitlines() == ["extract: 100 % (1/1 post)",
                                                    "extract: 100 % (44/44 posts)"]
