"""Work on a target root filesystem directory: run commands in it, place files in it."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from imagesmith.errors import ImagesmithError
from imagesmith.host.progress import Progress
from imagesmith.host.run import Runner

CHROOT_ENV = {
    "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
    "LC_ALL": "C.UTF-8",
    "LANG": "C.UTF-8",
    "HOME": "/root",
    "DEBIAN_FRONTEND": "noninteractive",
    "DEBCONF_NONINTERACTIVE_SEEN": "true",
}

#: Run a command in private mount and PID namespaces: whatever it mounts, and every
#: process it starts, ends with it, even when it is killed.
ISOLATE = [
    "unshare",
    "--mount",
    "--propagation",
    "private",
    "--pid",
    "--fork",
    "--kill-child",
    "--mount-proc",
]

_ENTER = r"""
set -e
root=$1; shift
# a user namespace may not mount a new proc where the host's has mounts over parts of it
mount -t proc proc "$root/proc" 2>/dev/null || mount --rbind /proc "$root/proc"
mount --rbind /dev "$root/dev"
mount -t tmpfs tmpfs "$root/run"
# the build's own files: a directory made under the new /run, or one over a file of the image
while [ "$1" = --bind ]; do
  case $3 in /run/*) mkdir -p "$root$3" ;; esac
  mount --bind "$2" "$root$3"
  if [ "$4" = ro ]; then mount -o remount,bind,ro "$root$3"; fi
  shift 4
done
exec chroot "$root" /usr/bin/env -i "$@"
"""


@dataclass(frozen=True)
class Bind:
    """A path of the build host seen inside the image while one command runs: a directory
    under /run (the command's own tmpfs), or over a file of the image that the caller has
    checked has no link on the way (a bind mount resolves links on the host's side)."""

    source: Path
    target: str
    read_only: bool = False

    def argv(self) -> list[str]:
        return ["--bind", str(self.source), self.target, "ro" if self.read_only else "rw"]


def chroot(
    runner: Runner,
    rootfs: Path,
    argv: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    capture: bool = False,
    hint: str | None = None,
    progress: Progress | None = None,
    binds: Sequence[Bind] = (),
) -> str:
    """Run ``argv`` inside ``rootfs`` (foreign binaries run through qemu-user binfmt), with
    ``binds`` in place while it runs."""
    epoch = {"SOURCE_DATE_EPOCH": str(runner.epoch)} if runner.epoch is not None else {}
    assignments = [f"{k}={v}" for k, v in {**CHROOT_ENV, **epoch, **(env or {})}.items()]
    return runner.run(
        [
            *ISOLATE,
            "sh",
            "-c",
            _ENTER,
            "imagesmith-chroot",
            str(rootfs),
            *[arg for bind in binds for arg in bind.argv()],
            *assignments,
            *argv,
        ],
        capture=capture,
        hint=hint,
        name=Path(argv[0]).name,
        progress=progress,
    )


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below ``path`` in this process's mount namespace."""
    prefix = str(path.resolve())
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8") as handle:
        for line in handle:
            point = line.split()[4].replace("\\040", " ")
            if point == prefix or point.startswith(prefix + "/"):
                found.append(point)
    return found


def remove_tree(path: Path) -> None:
    """Delete a work tree, but never through a mount point (a bind-mounted /dev, say)."""
    if not path.exists():
        return
    mounted = mounts_under(path)
    if mounted:
        raise ImagesmithError(
            f"refusing to delete {path}: {', '.join(mounted)} is still mounted there",
            hint=f"unmount it (umount -R {mounted[0]}) and delete {path} by hand",
        )
    for attempt in range(3):  # processes of a killed command may still be writing for a moment
        try:
            shutil.rmtree(path)
            return
        except OSError:
            if attempt == 2:
                raise
            time.sleep(1)


def inside(rootfs: Path, path: str | PurePosixPath, *, follow_last: bool = True) -> Path:
    """Host path of ``path`` as the target sees it: symlinks resolve inside ``rootfs``.

    Merged-/usr systems make /lib, /bin and /sbin symlinks; an absolute link must point
    into the image, never at the build host.
    """
    parts = [p for p in PurePosixPath("/", path).parts[1:] if p not in ("", ".")]
    current = PurePosixPath("/")
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            current = current.parent
            continue
        candidate = current / part
        host = rootfs / candidate.relative_to("/")
        if host.is_symlink() and (parts or follow_last):
            hops += 1
            if hops > 40:
                raise ImagesmithError(f"too many levels of symbolic links at {candidate} in the image")
            target = PurePosixPath(os.readlink(host))
            base = PurePosixPath("/") if target.is_absolute() else current
            parts = [p for p in (base / target).parts[1:] if p not in ("", ".")] + parts
            current = PurePosixPath("/")
            continue
        current = candidate
    return rootfs / current.relative_to("/")


def read_ids(rootfs: Path, database: str) -> dict[str, int]:
    """name → id from the image's /etc/passwd or /etc/group."""
    ids: dict[str, int] = {}
    path = inside(rootfs, f"/etc/{database}")
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            fields = line.split(":")
            if len(fields) > 2 and fields[2].isdigit():
                ids[fields[0]] = int(fields[2])
    return ids


def package_version(rootfs: Path, package: str) -> str | None:
    """The installed version of ``package`` in the image, from dpkg's status database."""
    status = inside(rootfs, "/var/lib/dpkg/status")
    if not status.exists():
        return None
    for stanza in status.read_text(encoding="utf-8", errors="replace").split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in stanza.splitlines() if ": " in line and not line.startswith(" ")
        )
        if fields.get("Package") == package and fields.get("Status", "").endswith(" installed"):
            return fields.get("Version")
    return None


def copy_tree(runner: Runner, source: Path, target: Path) -> None:
    """A rootfs copied with owners, modes, links, device nodes and extended attributes."""
    runner.run(["cp", "-a", "--reflink=auto", str(source), str(target)])
