"""Where two builds of the same image differ: the first partition, and the file in it.

Used by ``build --check-reproducible``. The partition tables are compared first, then
each partition's bytes. In an ext4 partition the first differing blocks are mapped to
their inodes (data blocks with debugfs ``icheck``, inode-table blocks by arithmetic) and
the inodes to paths (``ncheck``); a vfat partition's files are copied out with mtools
and compared.
"""

from __future__ import annotations

import filecmp
import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imagesmith.disk import table as tables
from imagesmith.host.run import Runner

SECTOR = 512
CHUNK = 1024 * 1024


@dataclass
class Partition:
    number: int
    start: int  # bytes
    size: int
    type: str


def table(runner: Runner, image: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(runner.run(["sfdisk", "--json", str(image)], capture=True))
    found: dict[str, Any] = data["partitiontable"]
    found.pop("device", None)  # the file's own name
    for part in found.get("partitions", []):
        part.pop("node", None)
    return found


def partitions(runner: Runner, image: Path) -> list[Partition]:
    return [
        Partition(n, p["start"] * SECTOR, p["size"] * SECTOR, str(p.get("type", "")))
        for n, p in enumerate(table(runner, image).get("partitions", []), start=1)
    ]


def first_difference(a: Path, b: Path, start: int = 0, size: int | None = None, block: int = 1) -> int | None:
    """Offset (relative to ``start``) of the first differing ``block``-sized unit, or None."""
    end = size if size is not None else max(a.stat().st_size, b.stat().st_size)
    with open(a, "rb") as fa, open(b, "rb") as fb:
        fa.seek(start)
        fb.seek(start)
        pos = 0
        while pos < end:
            x, y = fa.read(min(CHUNK, end - pos)), fb.read(min(CHUNK, end - pos))
            if x != y:
                for i in range(min(len(x), len(y))):
                    if x[i] != y[i]:
                        return (pos + i) // block * block
                return (pos + min(len(x), len(y))) // block * block
            if not x:
                return None
            pos += len(x)
    return None


def differing_blocks(a: Path, b: Path, start: int, size: int, block: int, limit: int) -> list[int]:
    """Numbers of the first ``limit`` differing blocks of a partition."""
    found = []
    with open(a, "rb") as fa, open(b, "rb") as fb:
        fa.seek(start)
        fb.seek(start)
        for number in range(size // block):
            if fa.read(block) != fb.read(block):
                found.append(number)
                if len(found) >= limit:
                    break
    return found


def _debugfs(runner: Runner, image: Path, offset: int, command: str) -> str:
    return runner.run(["debugfs", "-R", command, f"{image}?offset={offset}"], capture=True)


def _inodes_differing(a: Path, b: Path, offset: int, inode_size: int, count: int) -> list[int]:
    """Which of ``count`` inode slots from byte ``offset`` differ (0-based)."""
    with open(a, "rb") as fa, open(b, "rb") as fb:
        fa.seek(offset)
        fb.seek(offset)
        x, y = fa.read(inode_size * count), fb.read(inode_size * count)
    return [
        i
        for i in range(count)
        if x[i * inode_size : (i + 1) * inode_size] != y[i * inode_size : (i + 1) * inode_size]
    ]


def ext4_paths(runner: Runner, image: Path, other: Path, part: Partition, limit: int = 64) -> list[str]:
    """What the first ``limit`` differing blocks of an ext4 partition belong to, as paths
    where possible."""
    stats = _debugfs(runner, image, part.start, "stats")
    block_size = int(re.search(r"Block size:\s+(\d+)", stats).group(1))  # type: ignore[union-attr]
    inode_size = int(re.search(r"Inode size:\s+(\d+)", stats).group(1))  # type: ignore[union-attr]
    per_group = int(re.search(r"Inodes per group:\s+(\d+)", stats).group(1))  # type: ignore[union-attr]
    tables = [
        (int(g), int(first))
        for g, first in re.findall(r"Group\s+(\d+):.*?inode table at (\d+)", stats, re.S | re.I)
    ]
    blocks = differing_blocks(image, other, part.start, part.size, block_size, limit)
    inodes: dict[int, str] = {}  # inode → why
    data_blocks = []
    for blk in blocks:
        for group, first in tables:
            count = per_group * inode_size // block_size
            if first <= blk < first + count:
                base = group * per_group + (blk - first) * (block_size // inode_size) + 1
                slots = block_size // inode_size
                for i in _inodes_differing(image, other, part.start + blk * block_size, inode_size, slots):
                    inodes.setdefault(base + i, "owner, mode or times")
                break
        else:
            data_blocks.append(blk)
    if data_blocks:
        out = _debugfs(runner, image, part.start, "icheck " + " ".join(map(str, data_blocks)))
        for line in out.splitlines()[1:]:
            fields = line.split()
            if len(fields) == 2 and fields[1].isdigit():
                inodes.setdefault(int(fields[1]), "content")
    if not inodes:
        return [f"filesystem metadata (block {blocks[0]})"] if blocks else []
    out = _debugfs(runner, image, part.start, "ncheck -c " + " ".join(map(str, sorted(inodes))))
    named = []
    for line in out.splitlines()[1:]:
        fields = line.split(None, 1)
        if len(fields) == 2 and fields[0].isdigit():
            named.append(f"/{fields[1].lstrip('/')} ({inodes[int(fields[0])]})")
    return named or [f"filesystem metadata (block {blocks[0]})"]


def vfat_paths(runner: Runner, a: Path, b: Path, part: Partition) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        trees = []
        for n, image in enumerate((a, b)):
            tree = Path(tmp) / str(n)
            tree.mkdir()
            runner.run(["mcopy", "-s", "-n", "-i", f"{image}@@{part.start}", "::/", str(tree)])
            trees.append(tree)
        found: list[str] = []

        def walk(cmp: filecmp.dircmp[str], prefix: str) -> None:
            found.extend(f"{prefix}{n} (content)" for n in cmp.diff_files)
            found.extend(f"{prefix}{n} (only in one)" for n in cmp.left_only + cmp.right_only)
            for name, sub in sorted(cmp.subdirs.items()):
                walk(sub, f"{prefix}{name}/")

        walk(filecmp.dircmp(trees[0], trees[1], ignore=[]), "/")
    return found or ["FAT metadata (times or directory entries)"]


def explain(runner: Runner, a: Path, b: Path) -> str:
    """A sentence naming the first partition and the files where ``a`` and ``b`` differ."""
    if table(runner, a) != table(runner, b):
        return "the partition tables differ"
    for part in partitions(runner, a):
        at = first_difference(a, b, part.start, part.size)
        if at is None:
            continue
        where = f"partition {part.number} (first at byte {at} of it)"
        if tables.holds_fat(part.type):
            files = vfat_paths(runner, a, b, part)
        else:
            files = ext4_paths(runner, a, b, part)
        return f"{where}: {', '.join(files[:10])}"
    at = first_difference(a, b)
    return "no partition differs" if at is None else f"bytes outside the partitions differ, first at {at}"
