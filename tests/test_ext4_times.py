"""The ext4 maker's pass over every inode's times (debugfs, names looked up per directory)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from imagesmith.disk.fs.base import fixed_time_env
from imagesmith.disk.fs.ext4 import fix_change_times
from imagesmith.errors import ImagesmithError
from imagesmith.host.run import Runner

EPOCH = 1_700_000_000


def made(tmp_path: Path, tree: Path) -> Path:
    image = tmp_path / "root.ext4"
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-d", tree, image, "8M"],
                   check=True, env={**os.environ, **fixed_time_env(EPOCH)})  # fmt: skip
    return image


def times(image: Path, path: str) -> dict[str, int]:
    out = subprocess.run(["debugfs", "-R", f'stat "{path}"', image], capture_output=True, text=True).stdout
    found = {}
    for line in out.splitlines():
        name, _, rest = line.strip().partition(":")
        if name in ("ctime", "atime", "mtime"):
            found[name] = int(rest.split(":")[0].strip(), 16)
    return found


def test_every_inode_deep_or_with_a_space_gets_the_times(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    deep = tree / "usr" / "share" / "a dir"
    deep.mkdir(parents=True)
    (deep / "new file").write_text("later\n")
    (tree / "usr" / "old").write_text("earlier\n")
    os.utime(deep / "new file", (EPOCH + 500, EPOCH + 500))  # newer than the epoch: clamped
    os.utime(tree / "usr" / "old", (EPOCH + 900, EPOCH - 100))  # older: kept, atime the same
    image = made(tmp_path, tree)
    fix_change_times(Runner(), image, tree, EPOCH)
    assert times(image, "/usr/share/a dir/new file") == {"ctime": EPOCH, "atime": EPOCH, "mtime": EPOCH}
    assert times(image, "/usr/old") == {"ctime": EPOCH, "atime": EPOCH - 100, "mtime": EPOCH - 100}
    assert times(image, "/usr/share/a dir") == {"ctime": EPOCH, "atime": EPOCH, "mtime": EPOCH}
    assert times(image, "/") == {"ctime": EPOCH, "atime": EPOCH, "mtime": EPOCH}
    assert not image.with_name("root.ext4.times").exists()


def test_a_command_debugfs_refuses_is_an_error(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    image = made(tmp_path, tree)
    (tree / "etc" / "not in the image").write_text("x\n")  # debugfs cannot find it
    with pytest.raises(ImagesmithError, match="could not set the times") as raised:
        fix_change_times(Runner(), image, tree, EPOCH)
    assert "not in the image" in (raised.value.details or "")
