from __future__ import annotations

import os
from pathlib import Path

import pytest

from imagesmith.errors import ImagesmithError
from imagesmith.host.rootfs import inside, read_ids


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    (r / "usr" / "lib").mkdir(parents=True)
    (r / "etc").mkdir()
    os.symlink("usr/lib", r / "lib")  # merged /usr, relative link
    os.symlink("/usr/lib", r / "etc" / "abs")  # absolute link: must stay inside the image
    os.symlink("/etc/../../../../outside", r / "etc" / "escape")
    return r


def test_relative_and_absolute_links_resolve_inside(root: Path) -> None:
    assert inside(root, "/lib/systemd/system/x.service") == root / "usr/lib/systemd/system/x.service"
    assert inside(root, "/etc/abs/file") == root / "usr/lib/file"
    assert inside(root, "/etc/escape") == root / "outside"


def test_last_component_kept_when_asked(root: Path) -> None:
    assert inside(root, "/lib", follow_last=False) == root / "lib"
    assert inside(root, "/lib") == root / "usr/lib"


def test_link_loop_is_an_error(root: Path) -> None:
    os.symlink("b", root / "a")
    os.symlink("a", root / "b")
    with pytest.raises(ImagesmithError, match="too many levels"):
        inside(root, "/a/x")


def test_read_ids(root: Path) -> None:
    (root / "etc" / "passwd").write_text(
        "root:x:0:0::/root:/bin/sh\nadmin:x:1000:1000::/home/admin:/bin/bash\n"
    )
    assert read_ids(root, "passwd") == {"root": 0, "admin": 1000}
    assert read_ids(root, "group") == {}


def test_remove_tree_never_deletes_through_a_mount(tmp_path: Path) -> None:
    from imagesmith.host.rootfs import mounts_under, remove_tree

    assert "/proc" in mounts_under(Path("/proc"))
    with pytest.raises(ImagesmithError, match="still mounted"):
        remove_tree(Path("/proc"))
    (tmp_path / "w" / "a").mkdir(parents=True)
    assert mounts_under(tmp_path / "w") == []
    remove_tree(tmp_path / "w")
    assert not (tmp_path / "w").exists()
