"""vfat (FAT32): mkfs.vfat with a derived volume id, files copied in with mcopy, fsck.vfat."""

from __future__ import annotations

from imagesmith.disk.fs.base import Filesystem, Job, MiB, fixed_time_env
from imagesmith.disk.ids import Identity, derived
from imagesmith.disk.table import align
from imagesmith.errors import ImagesmithError

FAT32_MIN = 64 * MiB


class Vfat(Filesystem):
    name = "vfat"
    links = False
    # Debian's kernels mount FAT with code page 437 and the ASCII character set by default
    modules = ("vfat", "nls_cp437", "nls_ascii", "nls_utf8")
    options = "defaults,noatime,umask=0077"

    def fs_id(self, identity: Identity, partition: str) -> str:
        return derived(identity, f"vfat:{partition}")[:4].hex()

    def make(self, job: Job) -> int:
        part, target = job.part, job.target
        used = job.usage.blocks
        size = part.size if isinstance(part.size, int) else max(FAT32_MIN, align(int(used * 1.1) + part.free))
        if used > size * 0.95:
            raise ImagesmithError(
                f"partition {part.name!r} is too small: "
                f"its files take {used // MiB} MiB of {size // MiB} MiB",
                hint=f"raise the size of partition {part.name!r} in the layout",
            )
        with open(target, "wb") as handle:
            handle.truncate(size)
        volume_id = self.fs_id(job.identity, part.name)
        job.runner.run(
            ["mkfs.vfat", "-F", "32", "-n", part.label.upper(), "-i", volume_id, "--invariant", str(target)]
        )
        entries = sorted(str(p) for p in job.content.iterdir())
        if entries:
            argv = ["mcopy", "-s", "-p", "-m", "-i", str(target), *entries, "::/"]
            job.runner.run(argv, env=fixed_time_env(job.epoch))
        job.runner.run(["fsck.vfat", "-n", str(target)], hint=f"the {part.name} filesystem failed its check")
        return size


FILESYSTEM = Vfat()
