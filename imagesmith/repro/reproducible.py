"""Build time kept out of the image: SOURCE_DATE_EPOCH, clamped file times, fixed inode times.

The epoch is SOURCE_DATE_EPOCH from the environment when set, else the time of the
newest package in the image (the newest changelog.Debian.gz, whose time comes from the
package itself): the same packages give the same epoch. Every program run in the image
sees it (initramfs-tools, useradd and others honour it). Before the filesystems are
made, file times later than the epoch are clamped to it, and access times set to the
modification times; mke2fs runs with E2FSPROGS_FAKE_TIME, and the change times it copies
from the rootfs (which no program can set) are then set to the epoch with debugfs.
"""

from __future__ import annotations

import os
from pathlib import Path

from imagesmith.host.rootfs import inside


def source_date_epoch(rootfs: Path) -> int:
    """The epoch of a build given none: the newest package changelog's time."""
    doc = inside(rootfs, "/usr/share/doc")
    newest = 0
    if doc.is_dir():
        for entry in os.scandir(doc):
            changelog = Path(entry.path) / "changelog.Debian.gz"
            try:
                newest = max(newest, int(changelog.lstat().st_mtime))
            except OSError:
                continue
    return newest or 1


def clamp_times(root: Path, epoch: int) -> None:
    """No file time after ``epoch``; access time = modification time; every directory's
    time is ``epoch`` (streamed walk).

    A directory's time records when an entry last came or went: whether apt downloaded
    into archives/partial (or found the .deb in the cache), a hook's temporary file.
    That says something about the build, never about the image."""
    stack = [root]
    while stack:
        directory = stack.pop()
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                    _set(entry.path, epoch * 1_000_000_000)
                else:
                    _set(
                        entry.path, min(entry.stat(follow_symlinks=False).st_mtime_ns, epoch * 1_000_000_000)
                    )
    _set(str(root), epoch * 1_000_000_000)


def _set(path: str, mtime_ns: int) -> None:
    os.utime(path, ns=(mtime_ns, mtime_ns), follow_symlinks=False)


def clamp_shadow(rootfs: Path, epoch: int) -> None:
    """No password-change date after the epoch's day in /etc/shadow (and its backup):
    accounts made by maintainer scripts get the day of the build unless
    SOURCE_DATE_EPOCH was known then, which it is not before the packages are."""
    day = epoch // 86400
    for name in ("shadow", "shadow-"):
        path = inside(rootfs, f"/etc/{name}")
        if not path.is_file():
            continue
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        changed = False
        for i, line in enumerate(lines):
            fields = line.rstrip("\n").split(":")
            if len(fields) > 2 and fields[2].isdigit() and int(fields[2]) > day:
                fields[2] = str(day)
                lines[i] = ":".join(fields) + "\n"
                changed = True
        if changed:
            info = path.stat()
            path.write_text("".join(lines), encoding="utf-8")
            os.chmod(path, info.st_mode & 0o7777)
