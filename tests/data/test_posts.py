"""Posts held as columns: a `PostTable` gives back exactly the posts it was made of."""

from dataclasses import fields
from pathlib import Path

import pytest

from sgmft.data.groups import image_groups, post_groups
from sgmft.data.manifest import Manifest
from sgmft.data.posts import SCHEMA, Post, PostTable, subset, values_of


def make_posts() -> list[Post]:
    return [
        Post("a", "Gym today!", Path("img/a.jpg"), "gym", "u1", "train", 2, ("gym", "today"), "11" * 32,
             group="g1", image_phash="ffff000000000000", image_layout="00" * 32,
             meta=(("city", "Shanghai"), ("event", "e1"))),
        Post("b", "在家", Path("/abs/b.png"), None, None, None, 3, ("在家",), "22" * 32),
        Post("c", "work work", Path("c.jpg"), "work", "u2", "test", 5, ("work", "work"), "11" * 32,
             image_phash="ffff000000000001", image_layout="00" * 32, meta=(("event", "e2"),)),
        Post("d", "a cinema", Path("d.jpg"), "cinema", "u1", "train", 7, ("cinema",), "33" * 32,
             image_phash="0000ffff00000000", image_layout="ff" * 32),
    ]


def test_the_columns_are_the_fields_of_a_post_in_order():
    assert SCHEMA.names == [f.name for f in fields(Post)]


def test_a_table_gives_back_its_posts():
    posts = make_posts()
    table = PostTable.from_posts(posts)
    assert len(table) == 4 and list(table) == posts
    assert table[0] == posts[0] and table[-1] == posts[3] and table[1].meta == () and table[1].label is None
    assert isinstance(table[0].image, Path) and table[0].tokens == ("gym", "today")
    with pytest.raises(IndexError):
        table[4]
    assert list(table[1:3]) == posts[1:3] and list(table[::2]) == posts[::2] and len(table[9:]) == 0
    assert list(table.take([3, 0])) == [posts[3], posts[0]]


def test_iterating_goes_through_every_batch(monkeypatch):
    monkeypatch.setattr("sgmft.data.posts.ROWS_AT_A_TIME", 3)
    posts = make_posts() * 2
    table = PostTable.concat([PostTable.from_posts(posts[:5]), PostTable.from_posts(posts[5:])])
    assert list(table) == posts and [r for r in table.rows("id")] == [(p.id,) for p in posts]


def test_columns_rows_and_lookups_by_id():
    posts = make_posts()
    table = PostTable.from_posts(posts)
    assert table.column("label") == ["gym", None, "work", "cinema"]
    assert table.column("event") == ["e1", None, "e2", None]          # a metadata column
    assert values_of(table, "event") == values_of(posts, "event") == [p.value("event") for p in posts]
    assert list(table.rows("id", "row")) == [("a", 2), ("b", 3), ("c", 5), ("d", 7)]
    assert [p.id for p in table.having({"d", "a"})] == ["a", "d"]      # table order
    assert [p.id for p in table.in_order(["d", "a", "c"])] == ["d", "a", "c"]
    with pytest.raises(KeyError, match="'zz' is not in the manifest"):
        table.positions(["a", "zz"])
    assert list(subset(table, [2, 1])) == subset(posts, [2, 1]) == [posts[2], posts[1]]


def test_a_manifest_holds_its_posts_as_a_table():
    posts = make_posts()
    manifest = Manifest(Path("m.jsonl"), posts, ("gym", "work", "cinema"))
    assert isinstance(manifest.posts, PostTable) and list(manifest.posts) == posts
    assert manifest.ids == ["a", "b", "c", "d"]
    assert manifest.columns == ["label", "user", "group", "split", "city", "event"]
    assert manifest.by_id("event") == {"a": "e1", "b": None, "c": "e2", "d": None}
    empty = Manifest(Path("m.jsonl"), [], ("gym", "work"))
    assert len(empty) == 0 and empty.columns == []


def test_groups_are_the_same_from_a_table_and_from_a_list():
    posts = make_posts()
    table = PostTable.from_posts(posts)
    # a and c: the same image bytes; d: a different image; b: its own image, no hash
    assert image_groups(table) == image_groups(posts) == [0, 1, 0, 3]
    assert post_groups(table, "user") == post_groups(posts, "user")
