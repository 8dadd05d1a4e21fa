"""Posts: one valid manifest row (`Post`), and many of them held as columns (`PostTable`).

A stage that needs every post of a large manifest (training, its split and folds) holds them
as a `PostTable`: thirteen Arrow arrays, not one Python object a post (measured on 200,000
synthetic posts: 1.43 KB a post as `Post` objects with their strings, path and tokens, 0.30 KB
in the table's arrays). A table is a `Sequence[Post]`: iterating or indexing it makes `Post`
objects as they are asked for, ``ROWS_AT_A_TIME`` at a time, so code written for a list of
posts runs on it unchanged; `PostTable.column` and `PostTable.rows` give fields without making posts at all.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

#: posts made at a time while a table is iterated
ROWS_AT_A_TIME = 4096
#: the columns `Post.value` reads from the post itself (any other name is a metadata column)
OWN_COLUMNS = ("user", "group", "label", "split")


@dataclass(frozen=True, slots=True)
class Post:
    """One valid row. ``tokens`` is the cleaned, segmented text; ``image_sha256`` its image's
    hash."""

    id: str
    text: str
    image: Path | None          # None: a text-only post
    label: str | None
    user: str | None
    split: str | None
    row: int
    tokens: tuple[str, ...]
    image_sha256: str
    group: str | None = None    # an event, topic or any unit that should not straddle a split
    image_phash: str | None = None     # perceptual hash of the image (hex): near duplicates
    image_layout: str | None = None    # its colour layout (hex, `sgmft.data.images.colour_layout`)
    meta: tuple[tuple[str, str], ...] = ()   # every other column of the row, (name, value) sorted

    @property
    def clean_text(self) -> str:
        """Tokens joined by spaces: the text the encoders see."""
        return " ".join(self.tokens)

    def digest(self) -> int:
        """64 bits of the SHA-256 of what the encoders see of this post (its id, cleaned text and
        image bytes): what tells a feature cache's row is this post's."""
        data = f"{self.id}\x1f{self.clean_text}\x1f{self.image_sha256}".encode()
        return int.from_bytes(hashlib.sha256(data).digest()[:8], "little")

    def value(self, column: str) -> str | None:
        """The post's value in ``column``: ``user``, ``group``, ``label``, ``split`` or any
        metadata column (``event``, say); None when the row has none."""
        if column in OWN_COLUMNS:
            return getattr(self, column)
        return dict(self.meta).get(column)


SCHEMA = pa.schema([
    ("id", pa.string()), ("text", pa.string()), ("image", pa.string()), ("label", pa.string()),
    ("user", pa.string()), ("split", pa.string()), ("row", pa.int64()), ("tokens", pa.list_(pa.string())),
    ("image_sha256", pa.string()), ("group", pa.string()), ("image_phash", pa.string()),
    ("image_layout", pa.string()), ("meta", pa.map_(pa.string(), pa.string())),
])


class PostTable(Sequence[Post]):
    """Posts as Arrow columns (see the module docstring); ``table`` follows `SCHEMA`."""

    def __init__(self, table: pa.Table | None = None):
        self.table = SCHEMA.empty_table() if table is None else table

    @classmethod
    def from_posts(cls, posts: Iterable[Post]) -> PostTable:
        """A table of ``posts``, in their order."""
        posts = list(posts)
        columns: dict[str, list[Any]] = {name: [getattr(p, name) for p in posts] for name in SCHEMA.names}
        columns["image"] = [None if path is None else str(path) for path in columns["image"]]
        columns["meta"] = [list(pairs) for pairs in columns["meta"]]
        return cls(pa.table(columns, schema=SCHEMA))

    @classmethod
    def concat(cls, parts: Sequence[PostTable]) -> PostTable:
        """The posts of ``parts``, one after the other (no copy: the table keeps their chunks)."""
        return cls(pa.concat_tables([part.table for part in parts])) if parts else cls()

    def __len__(self) -> int:
        return self.table.num_rows

    @overload
    def __getitem__(self, index: int) -> Post: ...

    @overload
    def __getitem__(self, index: slice) -> PostTable: ...

    def __getitem__(self, index: int | slice) -> Post | PostTable:
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                return self.take(np.arange(start, stop, step))
            return PostTable(self.table.slice(start, max(0, stop - start)))
        position = index + len(self) if index < 0 else index
        if not 0 <= position < len(self):
            raise IndexError(f"post {index} of a table of {len(self)}")
        return next(_posts(self.table.slice(position, 1)))

    def __iter__(self) -> Iterator[Post]:
        for batch in self.table.to_batches(ROWS_AT_A_TIME):
            yield from _posts(batch)

    def __repr__(self) -> str:
        return f"PostTable({len(self)} posts)"

    def column(self, name: str) -> list[Any]:
        """Every post's value of ``name``: a field of `Post` (tokens as lists) or, as
        `Post.value` reads it, a metadata column (None where a post has none)."""
        if name in SCHEMA.names:
            return self.table.column(name).to_pylist()
        return pc.map_lookup(self.table.column("meta"), pa.scalar(name), "first").to_pylist()

    def rows(self, *names: str) -> Iterator[tuple[Any, ...]]:
        """The fields ``names`` of every post, a tuple a post, read a batch of columns at a time."""
        for batch in self.table.select(list(names)).to_batches(ROWS_AT_A_TIME):
            yield from zip(*(column.to_pylist() for column in batch.columns), strict=True)

    def take(self, indices: Sequence[int] | np.ndarray) -> PostTable:
        """The posts at ``indices``, in that order."""
        return PostTable(self.table.take(pa.array(np.asarray(indices, dtype=np.int64))))

    def having(self, ids: Collection[str]) -> PostTable:
        """The posts whose id is in ``ids``, in table order."""
        return PostTable(self.table.filter(pc.is_in(self.table.column("id"),
                                                    value_set=pa.array(list(ids), pa.string()))))

    def positions(self, ids: Sequence[str]) -> np.ndarray:
        """(len(ids),) int64 the position of each id in this table (KeyError naming the first
        missing one)."""
        found = pc.index_in(pa.array(ids, pa.string()), value_set=self.table.column("id"))
        if found.null_count:
            missing = ids[int(pc.index(pc.is_null(found), True).as_py())]
            raise KeyError(f"post {missing!r} is not in the manifest")
        return found.to_numpy(zero_copy_only=False).astype(np.int64)

    def in_order(self, ids: Sequence[str]) -> PostTable:
        """The posts of ``ids``, in that order."""
        return self.take(self.positions(ids))


def _posts(batch: pa.RecordBatch | pa.Table) -> Iterator[Post]:
    columns = [column.to_pylist() for column in batch.columns]
    for (id_, text, image, label, user, split, row, tokens, sha, group, phash, layout, meta) in zip(
            *columns, strict=True):
        path = None if image is None else Path(image)
        yield Post(id_, text, path, label, user, split, row, tuple(tokens), sha, group, phash, layout,
                   tuple(meta))


def values_of(posts: Sequence[Post], name: str) -> list[Any]:
    """Every post's value of ``name`` (as `PostTable.column`), from a table's column when
    ``posts`` is one, else post by post."""
    if isinstance(posts, PostTable):
        return posts.column(name)
    if name in SCHEMA.names:
        return [getattr(post, name) for post in posts]
    return [post.value(name) for post in posts]


def first_seen(values: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(N,) which distinct value each item holds (numbered in order of first appearance), and
    (U,) the index of each distinct value's first item: Arrow's hash table, no Python object an
    item."""
    code = pc.index_in(values, value_set=pc.unique(values)).to_numpy(zero_copy_only=False)
    _, first = np.unique(code, return_index=True)
    return code, first


def arrow_of(posts: Sequence[Post], name: str) -> pa.Array | pa.ChunkedArray:
    """Every post's value of the field ``name`` as an Arrow array (a table's own column)."""
    if isinstance(posts, PostTable):
        return posts.table.column(name)
    return pa.array(values_of(posts, name), SCHEMA.field(name).type)


def subset(posts: Sequence[Post], indices: Sequence[int]) -> Sequence[Post]:
    """The posts at ``indices`` (a table of a table, a list of a list)."""
    if isinstance(posts, PostTable):
        return posts.take(indices)
    return [posts[i] for i in indices]
