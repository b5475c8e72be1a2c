"""ext4: ``mke2fs -d`` from the tree with a derived UUID and hash seed, change times fixed
with debugfs (no program can set them), the early device nodes made, e2fsck."""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from pathlib import Path

from imagesmith.disk.fs.base import Filesystem, Job, MiB, fixed_time_env
from imagesmith.disk.ids import Identity, derived
from imagesmith.disk.table import align
from imagesmith.errors import ImagesmithError
from imagesmith.host.run import Runner

#: what the kernel and init open before devtmpfs is mounted over /dev: name, type,
#: major, minor, mode (owned by root)
DEVICE_NODES = [("console", "c", 5, 1, 0o600), ("null", "c", 1, 3, 0o666)]


class Ext4(Filesystem):
    name = "ext4"
    modules = ("ext4",)
    clamps_times = True  # fix_change_times

    def fs_id(self, identity: Identity, partition: str) -> str:
        return str(uuid.UUID(bytes=derived(identity, f"fs:{partition}")[:16], version=4))

    def make(self, job: Job) -> int:
        part, content, target, r = job.part, job.content, job.target, job.runner
        used, count, _files = job.usage
        # auto: the files, ext4 metadata (inode tables, journal) and the requested free space
        size = part.size if isinstance(part.size, int) else align(int(used * 1.10) + 64 * MiB + part.free)
        inodes = max(count + count // 4 + 1024, size // 16384)
        seed = hash_seed(job.identity, part.name)
        r.run(
            [
                "mke2fs", "-F", "-q", "-t", "ext4", "-L", part.label,
                "-U", self.fs_id(job.identity, part.name),
                "-E", f"root_owner=0:0,hash_seed={seed}", "-N", str(inodes),
                "-d", str(content), str(target),
                f"{size // 1024}k",
            ],
            env=fixed_time_env(job.epoch),
            hint=f"partition {part.name!r} may be too small for its files ({used // MiB} MiB)",
        )  # fmt: skip
        nodes = device_nodes(content) if part.role in ("root", "root-a") else []
        fix_change_times(r, target, content, job.epoch, first=nodes)
        r.run(["e2fsck", "-fn", str(target)], hint=f"the {part.name} filesystem failed its check")
        return size


def hash_seed(identity: Identity, partition: str) -> str:
    """The seed of the directory index hashes (random unless given)."""
    return str(uuid.UUID(bytes=derived(identity, f"hash:{partition}")[:16], version=4))


def device_nodes(content: Path) -> list[str]:
    """debugfs commands that make the device nodes in the filesystem image: no mknod, so
    no privilege (mmdebstrap's unshare mode leaves /dev empty, as root or not)."""
    if not (content / "dev").is_dir():
        return []
    script = ["cd /dev"]
    for name, kind, major, minor, mode in DEVICE_NODES:
        if not (content / "dev" / name).exists():
            script += [f"mknod {name} {kind} {major} {minor}", f"sif {name} mode 0{0o20000 | mode:o}"]
    return script


def fix_change_times(
    runner: Runner, image: Path, content: Path, epoch: int, first: Sequence[str] = ()
) -> None:
    """The times of every inode made from ``content``, with debugfs (mke2fs copied the
    tree's, in whole seconds): change times ``epoch``; a directory's times ``epoch`` (mke2fs
    reading one sets its access time; when its entries came or went says nothing about the
    image); a file's modification time no later than ``epoch`` and its access time the
    same. ``first``: more debugfs commands for the same pass over the image."""
    script = image.with_name(image.name + ".times")
    with open(script, "w", encoding="utf-8") as out:
        out.writelines(f"{command}\n" for command in first)
        out.write(f"sif / ctime @{epoch}\nsif / atime @{epoch}\nsif / mtime @{epoch}\n")
        stack = [content]
        while stack:
            directory = stack.pop()
            with os.scandir(directory) as listed:
                # by name, as mke2fs made them: the order of the writes (how many blocks
                # debugfs writes, which the superblock counts) is not the directory's order,
                # which differs between a plain tree and an overlay's merged one
                entries = sorted(listed, key=lambda entry: entry.name)
            # names relative to the directory: debugfs looks up one name, not every
            # directory of a full path again (three times faster on a full rootfs)
            out.write(f'cd "/{os.path.relpath(directory, content)}"\n' if directory != content else "cd /\n")
            for entry in entries:
                name = entry.name
                if '"' in name or "\n" in name:
                    continue
                out.write(f'sif "{name}" ctime @{epoch}\n')
                if entry.is_dir(follow_symlinks=False):
                    out.write(f'sif "{name}" atime @{epoch}\nsif "{name}" mtime @{epoch}\n')
                    stack.append(Path(entry.path))
                    continue
                # on every file, changed or not: what debugfs writes (which the superblock
                # counts) depends on the names alone
                clamped = min(entry.stat(follow_symlinks=False).st_mtime_ns // 1_000_000_000, epoch)
                out.write(f'sif "{name}" mtime @{clamped}\nsif "{name}" atime @{clamped}\n')
        out.write(f"sif /lost+found ctime @{epoch}\n")
    said: list[str] = []
    try:
        # its echo of each command is not logged (one line per command); what it says on
        # standard error is, and is checked: it goes on after a command that fails
        runner.run(["debugfs", "-w", "-f", str(script), str(image)], env=fixed_time_env(epoch),
                   capture=True, errors=said)  # fmt: skip
    finally:
        script.unlink()
    failed = [line for line in said if not line.startswith("debugfs ")]
    if failed:
        raise ImagesmithError(
            f"debugfs could not set the times of every inode in {image.name}",
            hint="this is a bug in imagesmith: please report it with build.log",
            details="\n".join(failed[:20]),
        )


FILESYSTEM = Ext4()
