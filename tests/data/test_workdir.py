"""The work folder of a manifest: beside the data, in the user cache, or under $SGMFT_CACHE."""

import pytest

from sgmft.data.demo import make_demo
from sgmft.data.manifest import load_manifest


@pytest.fixture
def demo_manifest(tmp_path):
    return load_manifest(make_demo(tmp_path / "demo", posts_per_class=2))


def test_work_dir_beside_data_or_in_user_cache(demo_manifest, monkeypatch, tmp_path):
    from sgmft.data import workdir

    monkeypatch.delenv("SGMFT_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert workdir.work_dir(demo_manifest.path) == demo_manifest.path.parent / ".sgmft"
    monkeypatch.setattr(workdir.os, "access", lambda *_: False)   # a read-only data folder
    monkeypatch.setattr(workdir.Path, "home", lambda: tmp_path)
    assert workdir.work_dir(demo_manifest.path).parent == tmp_path / ".cache" / "sgmft"
    monkeypatch.setenv("SGMFT_CACHE", str(tmp_path / "elsewhere"))
    assert workdir.work_dir(demo_manifest.path).parent == tmp_path / "elsewhere"



def test_a_folder_marked_read_only_is_not_written_even_by_root(tmp_path, monkeypatch):
    from sgmft.data import workdir

    monkeypatch.delenv("SGMFT_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setattr(workdir.Path, "home", lambda: tmp_path / "home")
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o555)
    try:
        assert workdir.folder_work_dir(data).parent == tmp_path / "home" / ".cache" / "sgmft"
    finally:
        data.chmod(0o755)


def test_the_suite_writes_its_caches_in_temporary_folders_only():
    import os
    from pathlib import Path

    from sgmft.data.workdir import user_cache_dir

    assert "SGMFT_CACHE" not in os.environ       # conftest's hermetic_caches, whatever the user set
    assert not user_cache_dir().is_relative_to(Path.home() / ".cache")


def test_xdg_cache_home_moves_the_user_cache(monkeypatch, tmp_path):
    from sgmft.data.workdir import user_cache_dir

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert user_cache_dir() == tmp_path / "sgmft"
    monkeypatch.setenv("SGMFT_CACHE", str(tmp_path / "mine"))
    assert user_cache_dir() == tmp_path / "mine"
