"""The first difference between two images, named as a partition and a path (real tools)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from imagesmith.disk.fs.ext4 import fix_change_times as fix_ext4_change_times
from imagesmith.host.run import Runner
from imagesmith.repro import reprodiff

MiB = 1024 * 1024


def image(tmp: Path, name: str, text: str, mtime: int = 1_700_000_000) -> Path:
    """A two-partition image: vfat (boot/config.txt) and ext4 (/etc/motd, /a/b)."""
    tree = tmp / f"{name}-root"
    (tree / "etc").mkdir(parents=True)
    (tree / "a").mkdir()
    (tree / "etc" / "motd").write_text(text)
    (tree / "a" / "b").write_text("same\n")
    for path in [*tree.rglob("*"), tree]:
        os.utime(path, (mtime, mtime))
    boot = tmp / f"{name}-boot.vfat"
    root = tmp / f"{name}-root.ext4"
    env = {**os.environ, "E2FSPROGS_FAKE_TIME": "1700000000", "TZ": "UTC"}
    subprocess.run(["truncate", "-s", "33M", boot], check=True)
    subprocess.run(
        ["mkfs.vfat", "-F", "32", "-i", "12345678", "--invariant", boot], check=True, capture_output=True
    )
    (tmp / "config.txt").write_text("arm_64bit=1\n")
    os.utime(tmp / "config.txt", (mtime, mtime))
    subprocess.run(["mcopy", "-m", "-i", boot, tmp / "config.txt", "::/"], check=True, env=env)
    subprocess.run(
        ["mke2fs", "-q", "-F", "-t", "ext4", "-U", "0b5d2a6e-2f0e-4f55-9f61-7c1a1d1b5c11",
         "-E", "hash_seed=0b5d2a6e-2f0e-4f55-9f61-7c1a1d1b5c11", "-d", tree, root, "16M"],
        check=True, env=env,
    )  # fmt: skip
    fix_ext4_change_times(Runner(), root, tree, 1_700_000_000)
    disk = tmp / f"{name}.img"
    subprocess.run(["truncate", "-s", "56M", disk], check=True)
    script = (
        "label: dos\nlabel-id: 0x1234abcd\nstart=2048, size=67584, type=c\nstart=71680, size=32768, type=83\n"
    )
    subprocess.run(["sfdisk", "-q", disk], input=script, text=True, check=True)
    with open(disk, "r+b") as out:
        for part, offset in ((boot, 2048 * 512), (root, 71680 * 512)):
            out.seek(offset)
            out.write(part.read_bytes())
    return disk


def test_identical_images_have_no_difference(tmp_path: Path, runner: Runner) -> None:
    a = image(tmp_path, "a", "hello\n")
    b = image(tmp_path, "b", "hello\n")
    assert reprodiff.first_difference(a, b) is None
    assert reprodiff.explain(runner, a, b) == "no partition differs"


def test_a_changed_file_is_named_with_its_partition(tmp_path: Path, runner: Runner) -> None:
    a = image(tmp_path, "a", "hello\n")
    b = image(tmp_path, "b", "HELLO\n")
    said = reprodiff.explain(runner, a, b)
    assert said.startswith("partition 2 ")
    assert "/etc/motd (content)" in said and "/a/b" not in said


def test_a_changed_time_is_named_as_the_file_metadata(tmp_path: Path, runner: Runner) -> None:
    a = image(tmp_path, "a", "hello\n")
    shutil.copy(a, tmp_path / "b.img")
    b = tmp_path / "b.img"
    subprocess.run(
        ["debugfs", "-w", "-R", "sif /a/b mtime 20200101", f"{b}?offset={71680 * 512}"],
        check=True, capture_output=True,
    )  # fmt: skip
    said = reprodiff.explain(runner, a, b)
    assert said.startswith("partition 2 ") and "/a/b (owner, mode or times)" in said
    assert "/etc/motd" not in said


def test_a_changed_boot_file_is_named(tmp_path: Path, runner: Runner) -> None:
    a = image(tmp_path, "a", "hello\n")
    shutil.copy(a, tmp_path / "b.img")
    b = tmp_path / "b.img"
    (tmp_path / "config.txt").write_text("arm_64bit=0\n")
    env = {**os.environ, "TZ": "UTC"}
    subprocess.run(
        ["mcopy", "-o", "-m", "-i", f"{b}@@{2048 * 512}", tmp_path / "config.txt", "::/"], check=True, env=env
    )
    said = reprodiff.explain(runner, a, b)
    assert said.startswith("partition 1 ") and "/config.txt (content)" in said


def test_a_different_table_is_said_first(tmp_path: Path, runner: Runner) -> None:
    a = image(tmp_path, "a", "hello\n")
    shutil.copy(a, tmp_path / "b.img")
    b = tmp_path / "b.img"
    subprocess.run(["sfdisk", "-q", "--disk-id", str(b), "0x99999999"], check=True)
    assert reprodiff.explain(runner, a, b) == "the partition tables differ"
