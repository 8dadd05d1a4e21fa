import numpy as np
from PIL import Image

from sgmft import PLACES
from sgmft.data.demo import make_demo
from sgmft.data.manifest import load_manifest


def test_demo_set_is_valid_balanced_and_deterministic(tmp_path):
    path = make_demo(tmp_path / "a", posts_per_class=4, seed=1)
    manifest = load_manifest(path)
    assert len(manifest) == 32 and manifest.skipped == []
    assert sorted({p.label for p in manifest.posts}) == sorted(PLACES)
    again = load_manifest(make_demo(tmp_path / "b", posts_per_class=4, seed=1))
    assert [p.text for p in again.posts] == [p.text for p in manifest.posts]
    first = np.asarray(Image.open(manifest.posts[0].image))
    assert np.array_equal(first, np.asarray(Image.open(again.posts[0].image)))
