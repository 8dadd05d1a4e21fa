"""Validation folds of the training split: grouped, never straddling a group, shaped like the
test, with a dominant group kept in training and K shrinking on small data."""

import json
from dataclasses import replace

import pytest

from sgmft.data.demo import make_demo
from sgmft.data.folds import carve_validation, make_folds, partitioning_column, validation_column
from sgmft.data.groups import post_groups
from sgmft.data.manifest import load_manifest


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return load_manifest(make_demo(tmp_path_factory.mktemp("folds"), posts_per_class=12))


def with_events(manifest, events):
    """The demo's posts with an ``event`` column (one value per post, cycling through events)."""
    posts = [replace(p, meta=(("event", events[i % len(events)]),)) for i, p in enumerate(manifest.posts)]
    return replace(manifest, posts=posts)


def test_grouped_folds_never_straddle_a_group(demo):
    manifest = with_events(demo, [f"e{i}" for i in range(9)])
    folds = make_folds(manifest.posts, 5, seed=0, column="event", why="by event")
    assert folds.k == 5 and set(folds.fold) == set(range(5))
    groups = post_groups(manifest.posts, "event")
    fold_of_group = {}
    for group, fold in zip(groups, folds.fold, strict=True):
        assert fold_of_group.setdefault(group, fold) == fold
    # an event's posts share a fold, but for a post whose image (a near duplicate of another
    # event's) went with that other event
    by_event = {}
    for post, group, fold in zip(manifest.posts, groups, folds.fold, strict=True):
        if group == f"event:{post.value('event')}":
            by_event.setdefault(post.value("event"), set()).add(fold)
    assert len(by_event) == 9 and all(len(f) == 1 for f in by_event.values())
    # every post outside a fold's part trains that fold's model
    train, val = folds.parts(2)
    assert set(train).isdisjoint(val) and len(train) + len(val) == len(manifest.posts)


def test_a_dominant_group_stays_in_training_and_does_not_empty_it(demo):
    events = ["big"] * 7 + ["a", "b", "c"]                 # "big": 70 % of the posts
    manifest = with_events(demo, events)
    folds = make_folds(manifest.posts, 5, seed=0, column="event", why="by event")
    groups = post_groups(manifest.posts, "event")
    big = [f for g, f in zip(groups, folds.fold, strict=True) if g == "event:big"]
    assert set(big) == {-1} and list(folds.kept) == ["big"] and len(big) > 0.6 * len(manifest.posts)
    assert folds.k == 3 and "3 folds, not 5" in folds.how and "big" in folds.how
    for k in range(folds.k):
        train, _ = folds.parts(k)
        assert len(train) > 0.75 * len(manifest.posts)       # never a fraction of the data
    assert folds.record()["kept_in_training"] == {"big": len(big)}


def test_single_label_groups_give_way_to_image_groups_and_say_the_folds_are_not_shift_like(demo):
    # the small events hold only one label (as me16-dev without BostonMarathon: all fake), the
    # big one both: held-out events could not tell the labels apart
    first = demo.posts[0].label
    posts = [replace(p, meta=(("event", f"e{i % 4}" if p.label == first else "big"),))
             for i, p in enumerate(demo.posts)]
    folds = make_folds(posts, 5, seed=0, column="event", why="by event")
    assert not folds.shift_like and folds.column is None and folds.kept == {}
    assert "grouped by near-duplicate images instead" in folds.how
    held = {posts[i].label for i, f in enumerate(folds.fold) if f >= 0}
    assert len(held) == len({p.label for p in posts})        # every label is validated
    assert not carve_validation(posts, 0.2, 0, "event", why="by event").shift_like
    usable = make_folds(with_events(demo, [f"e{i}" for i in range(9)]).posts, 5, seed=0, column="event")
    assert usable.shift_like


def test_a_dominant_image_group_stays_in_training_when_images_alone_must_group(demo):
    # most posts re-post one photo and have no event; the events hold one label only and no
    # event is big enough to split: the images alone group, and the photo's posts stay in
    # training, which leaves one label to hold out: no validation, said so
    first = demo.posts[0].label
    photo = demo.posts[0]
    many = [replace(p, image=photo.image, image_sha256=photo.image_sha256, image_phash=photo.image_phash,
                    meta=()) for p in demo.posts if p.label != first][:60]
    few = [replace(p, meta=(("event", f"e{i % 4}"),)) for i, p in
           enumerate(p for p in demo.posts[1:] if p.label == first)]
    folds = make_folds(many + few, 3, seed=0, column="event", why="by event")
    assert folds.k == 0 and "carry one label" in folds.how and folds.column is None
    assert set(folds.fold) == {-1} and list(folds.kept.values()) == [60]


def test_the_column_that_partitions_the_manifest_split_is_found(demo):
    manifest = with_events(demo, ["e0", "e1", "e2", "e3"])
    split = {"kind": "manifest", "train": [p.id for p in manifest.posts if p.value("event") != "e3"],
             "test": [p.id for p in manifest.posts if p.value("event") == "e3"]}
    assert partitioning_column(manifest, split) == "event"     # users straddle; ids are no grouping
    column, images, why = validation_column(manifest, split)
    assert (column, images) == ("event", True) and "partitions the manifest's train/test split" in why
    stratified = {"kind": "stratified", "train": split["train"], "test": split["test"]}
    assert validation_column(manifest, stratified)[0] == "user"     # else group_by, else user
    assert validation_column(manifest, stratified, group_by="event")[0] == "event"
    assert validation_column(manifest, split, by="stratified")[:2] == (None, False)


def test_ten_posts_shrink_k_and_say_so(demo):
    posts = [p for p in demo.posts if p.label in ("home", "work", "gym")][:10]
    folds = make_folds(posts, 5, seed=0, column=None)
    assert 2 <= folds.k < 5 and "not 5" in folds.how
    assert make_folds(posts[:3], 5, seed=0).k == 0                 # too few to hold any out
    carved = carve_validation(posts, 0.3, seed=0)
    assert carved.k == 1 and 0 < len(carved.validated) < 10 and set(carved.fold) == {-1, 0}


def test_folds_are_seeded(demo):
    # by images: 96 groups, so the seed decides (12 users of unequal mixes leave
    # StratifiedGroupKFold no ties for the seed to break)
    a = make_folds(demo.posts, 5, seed=3, column=None)
    b = make_folds(demo.posts, 5, seed=3, column=None)
    c = make_folds(demo.posts, 5, seed=4, column=None)
    assert a.fold == b.fold and a.fold != c.fold
    assert json.loads(json.dumps(a.record()))["k"] == 5


def test_a_fold_left_empty_by_large_groups_is_dropped():
    # three events: 22 posts of a, 6 of b, 16 mixed (9 a, 7 b): StratifiedGroupKFold(3) fills
    # folds of 16, 0 and 28 posts (an empty fold crashed training)
    from sgmft.data.manifest import Post

    labels = ["a"] * 22 + ["b"] * 6 + ["a"] * 9 + ["b"] * 7
    events = ["A"] * 22 + ["B"] * 6 + ["M"] * 16
    posts = [Post(f"p{i}", "t", f"i{i}.png", label, None, None, i + 1, ("t",), f"sha{i}",
                  meta=(("event", event),))
             for i, (label, event) in enumerate(zip(labels, events, strict=True))]
    folds = make_folds(posts, 5, seed=0, column="event", images=False, why="by event")
    sizes = folds.record()["fold_sizes"]
    assert folds.k == 2 and sorted(sizes) == [16, 28] and set(folds.fold) == {0, 1}
    assert "2 fold(s), not 3" in folds.how


def _event_posts(sizes_and_labels: list[tuple[str, int, float]]) -> list:
    """Posts of events: (event, posts, share labelled b)."""
    from sgmft.data.manifest import Post

    posts = []
    for event, n, share in sizes_and_labels:
        for j in range(n):
            i = len(posts)
            label = "b" if j < round(share * n) else "a"
            posts.append(Post(f"p{i}", "t", f"i{i}.png", label, None, None, i + 1, ("t",), f"sha{i}",
                              meta=(("event", event),)))
    return posts


def test_the_calibration_part_is_whole_groups_near_its_share_and_moves_with_the_seed():
    # the review's case: one 300-post event (80/20) among 25 of 20-50 posts; the first fold of a
    # stratified splitter was that event, 25 % of the posts, for every seed
    from sgmft.data.folds import carve_groups

    sizes = [20 + (7 * k) % 31 for k in range(25)]
    posts = _event_posts([("big", 300, 0.2)] + [(f"e{k}", n, 0.5) for k, n in enumerate(sizes)])
    target = 0.1 * len(posts)
    parts = []
    for seed in range(5):
        carved = carve_groups(posts, 0.1, seed, column="event", images=False, why="by event")
        held = [p for p, f in zip(posts, carved.fold, strict=True) if f == 0]
        events = {dict(p.meta)["event"] for p in held}
        assert "big" not in events and carved.k == 1 and carved.shift_like
        assert abs(len(held) - target) <= 25                 # nearest the share, whole events
        assert all(sum(dict(p.meta)["event"] == e for p in posts) == sum(dict(p.meta)["event"] == e
                                                                             for p in held) for e in events)
        parts.append(frozenset(events))
    assert len(set(parts)) >= 4                              # the seed draws the part


def test_folds_record_the_events_as_bootstrap_units_even_when_images_stand_in():
    # the event of both labels is most of the posts and stays in training, the others hold one
    # label: the folds cannot group by event, posts stand alone; the units stay the events
    posts = _event_posts([("mixed", 60, 0.5), ("x", 14, 0.0), ("y", 13, 0.0), ("z", 13, 0.0)])
    folds = make_folds(posts, 3, seed=0, column="event", images=False, why="by event")
    assert not folds.shift_like and folds.units_by_column
    assert set(folds.units) == {"mixed", "x", "y", "z"}


def test_the_calibration_part_records_each_held_post_s_event_as_its_unit():
    from sgmft.data.folds import carve_groups

    posts = _event_posts([(f"e{k}", 10, 0.5) for k in range(10)])
    carved = carve_groups(posts, 0.3, 0, column="event", images=False, why="by event")
    held = [dict(p.meta)["event"] for p, f in zip(posts, carved.fold, strict=True) if f == 0]
    assert carved.units_by_column and carved.validated_units() == held and len(set(held)) == 3
