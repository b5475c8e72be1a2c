"""What a filesystem kind is: one maker, its fstab line, its identifier.

Every filesystem image is made from a directory tree without mounting, at fixed times,
with identifiers derived from the config (``disk/ids.py``), and checked with its own
fsck before it is used.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import NamedTuple

from imagesmith.disk.ids import Identity
from imagesmith.disk.layout import Partition
from imagesmith.host.run import Runner

MiB = 1024 * 1024


@dataclass(frozen=True)
class Job:
    """One filesystem image to make: ``content`` (a directory tree) into ``target``."""

    runner: Runner
    identity: Identity
    part: Partition
    content: Path
    target: Path
    epoch: int  # no time of the build reaches the filesystem

    @cached_property
    def usage(self) -> Usage:
        """What ``content`` takes (``tree_usage``): walked once, by the maker and the stage."""
        return tree_usage(self.content)


class Filesystem:
    """One kind of filesystem. Subclasses set ``name`` and override ``make`` and ``fs_id``."""

    name: str = ""
    #: it can hold symbolic links (FAT cannot: links under its mount point become copies)
    links: bool = True
    #: the kernel modules that mount it (kept when ``slim.modules`` prunes the rest)
    modules: tuple[str, ...] = ()
    #: fstab options of a partition of this kind
    options: str = "defaults,noatime"
    #: its maker clamps every time it copies from the tree itself (no time after the
    #: epoch, access time = modification time): the tree is not written to, which keeps a
    #: rootfs over a cache entry (host/overlay.py) from copying each file up to change it
    clamps_times: bool = False

    def make(self, job: Job) -> int:
        """Write the filesystem image; return its size in bytes."""
        raise NotImplementedError

    def fs_id(self, identity: Identity, partition: str) -> str:
        """The identifier blkid shows for it (the manifest's ``fs_id``)."""
        raise NotImplementedError


def fixed_time_env(epoch: int) -> dict[str, str]:
    """For mke2fs/debugfs (the filesystem's own times) and mtools (FAT times in UTC)."""
    return {"E2FSPROGS_FAKE_TIME": str(epoch), "SOURCE_DATE_EPOCH": str(epoch), "TZ": "UTC"}


class Usage(NamedTuple):
    """What a directory tree takes: ``blocks`` (bytes of the blocks its entries take here,
    for sizing a filesystem), ``inodes`` (entries) and ``files`` (bytes of its regular
    files, a file with several links once: the same for the same tree on any host)."""

    blocks: int
    inodes: int
    files: int


def tree_usage(root: Path) -> Usage:
    """The usage of the tree under ``root`` — streamed, never loaded. A directory counts
    by its entries' names (as ext4 would store them), not by the blocks it has here: those
    depend on its history (a copy is compact, a directory that shrank is not, an overlay's
    merged one reports its upper layer's), and the size of a filesystem must not."""
    used, count, files = 0, 0, 0
    seen: set[tuple[int, int]] = set()
    stack = [root]
    while stack:
        names = 0
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                info = entry.stat(follow_symlinks=False)
                count += 1
                names += (8 + len(entry.name.encode()) + 3) // 4 * 4  # an ext4 directory entry
                if info.st_nlink > 1:
                    if (info.st_dev, info.st_ino) in seen:
                        continue
                    seen.add((info.st_dev, info.st_ino))
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                else:
                    used += info.st_blocks * 512
                    if entry.is_file(follow_symlinks=False):
                        files += info.st_size
        used += max(4096, (names + 24 + 4095) // 4096 * 4096)  # with "." and ".."
    return Usage(used, count, files)
