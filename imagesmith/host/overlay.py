"""A cached tree used in place: the cache entry is the read-only lower layer of an
overlay mount, and whatever the build changes lands in an upper directory of its work
directory. Restoring a rootfs then costs one mount instead of a copy of every file
(on ext4 without reflinks, each new file is a cost of its own).

The mounts live in a mount namespace of the build's own (``private_namespace``, entered
by the command line before anything else runs): nobody else sees them, and they vanish
with the build's process however it ends. Where the namespace or the mount is not to be
had (a kernel without overlayfs in user namespaces, a path overlayfs cannot name), the
tree is copied as before: the image is the same bytes either way. Programs see the same
tree; a directory of the lower layer cannot be renamed in place (``EXDEV``), which
``mv``, ``cp`` and ``stages/filesystems.take_mountpoint`` handle by copying.
"""

from __future__ import annotations

import ctypes
import filecmp
import os
import shutil
import stat
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

from imagesmith.errors import ImagesmithError
from imagesmith.host.rootfs import mounts_under
from imagesmith.host.run import Runner

CLONE_NEWNS = 0x00020000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
#: the mount namespace this build made for itself (its inode): children of the build
#: share it; a process elsewhere does not
NAMESPACE = "IMAGESMITH_MOUNT_NS"
#: characters overlayfs's options cannot carry in a directory's path
UNNAMEABLE = frozenset(",:\\\n")
#: suffixes of the directories next to a mount point that hold its upper layer
UPPER, WORK = ".upper", ".overlay-work"


def _namespace() -> str:
    return str(os.stat("/proc/self/ns/mnt").st_ino)


def private_namespace() -> bool:
    """Give this process a mount namespace of its own, whose mounts do not propagate to
    the one it came from. Needs root (of a user namespace too) and a single thread:
    call it first thing. False when the kernel refuses it (then nothing changed)."""
    if os.geteuid() != 0:
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNS) != 0:
        return False
    if libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        return False  # a namespace whose mounts might still reach the host's: never mounted in
    os.environ[NAMESPACE] = _namespace()
    return True


def available() -> bool:
    """This process is in the mount namespace a build made for itself."""
    return os.environ.get(NAMESPACE) == _namespace()


def in_user_namespace() -> bool:
    """Root of a user namespace (overlayfs then keeps its own attributes as user.overlay.*)."""
    try:
        text = Path("/proc/self/uid_map").read_text(encoding="ascii")
    except OSError:
        return False
    return text.split() != ["0", "0", "4294967295"]


def options(lower: Path, upper: Path, work: Path, *, userxattr: bool) -> str | None:
    """The mount options, or None when a path has a character they cannot carry."""
    paths = [str(p) for p in (lower, upper, work)]
    if any(UNNAMEABLE & set(p) for p in paths):
        return None
    text = f"lowerdir={paths[0]},upperdir={paths[1]},workdir={paths[2]}"
    # index=on: a file changed by one of its names keeps its other names (root only;
    # in a user namespace ``rejoin_links`` does it)
    return text + (",userxattr" if userxattr else ",index=on")


def layer(runner: Runner, lower: Path, target: Path) -> bool:
    """``target`` becomes ``lower`` (left untouched) with the build's changes on top;
    False when that cannot be had here, and the caller copies instead."""
    if not available():
        return False
    upper, work = target.with_name(target.name + UPPER), target.with_name(target.name + WORK)
    given = options(lower.resolve(), upper, work, userxattr=in_user_namespace())
    if given is None:
        runner.detail(f"{lower} is copied: overlayfs cannot name a path with ',', ':' or '\\'")
        return False
    for path in (target, upper, work):
        path.mkdir()
    try:
        runner.run(["mount", "-t", "overlay", "overlay", "-o", given, str(target)], capture=True)
    except ImagesmithError as exc:
        runner.detail(f"{lower} is copied: the overlay mount failed ({exc.message})")
        for path in (target, upper, work):
            shutil.rmtree(path)  # the copy makes ``target`` itself
        return False
    return True


def unmount_under(runner: Runner, path: Path) -> None:
    """Every mount at or below ``path`` in this namespace taken down, deepest first."""
    for point in sorted(mounts_under(path), key=len, reverse=True):
        runner.run(["umount", point], capture=True, hint=f"something in the build still uses {point}")


def untouched(upper: Path, rel: Path) -> bool:
    """Nothing at or under ``rel`` (relative to the merged view) in the ``upper`` layer,
    and no directory on the way that hides or redirects the lower one: the merged view
    shows the lower layer's tree there, as it is in the cache entry."""
    here = upper
    for part in rel.parts:
        here = here / part
        try:
            info = os.lstat(here)
        except FileNotFoundError:
            return True  # nothing of the build's below here
        if here == upper / rel or not stat.S_ISDIR(info.st_mode):
            return False  # the build changed it (or a file, link or whiteout stands over it)
        present = os.listxattr(here, follow_symlinks=False)
        if any(f"{space}.overlay.{what}" in present
               for space in ("trusted", "user") for what in ("opaque", "redirect")):  # fmt: skip
            return False
    return False  # the whole tree: the upper layer is its top


def _files(top: Path) -> Iterator[os.DirEntry[str]]:
    """Everything under ``top`` but directories (links not followed)."""
    stack = [top]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                else:
                    yield entry


def _links(lower: Path) -> dict[int, list[str]]:
    """The lower layer's files with several names: inode → their paths (relative)."""
    groups: dict[int, list[str]] = {}
    for entry in _files(lower):
        if entry.stat(follow_symlinks=False).st_nlink > 1:
            groups.setdefault(entry.inode(), []).append(os.path.relpath(entry.path, lower))
    return {inode: sorted(names) for inode, names in groups.items() if len(names) > 1}


def _linked_copy_up(upper: Path, lower: Path) -> bool:
    """Some file of the upper layer is a copy of a lower file with several names (the
    upper layer holds only what the build changed: far fewer files than the lower)."""
    for entry in _files(upper):
        name = os.path.relpath(entry.path, upper)
        with suppress(OSError):
            if os.lstat(lower / name).st_nlink > 1 and _copied_up(upper, name):
                return True
    return False


def _copied_up(upper: Path, name: str) -> bool:
    """``name`` is in the upper layer as a copy of its lower file (not a new file)."""
    try:
        present = os.listxattr(upper / name, follow_symlinks=False)
    except OSError:
        return False
    return any(attr in present for attr in ("trusted.overlay.origin", "user.overlay.origin"))


def _same(a: Path, b: Path) -> bool:
    """Two copies of one file changed alike (mode, owner, times, bytes)."""
    x, y = os.lstat(a), os.lstat(b)
    facts = ("st_mode", "st_uid", "st_gid", "st_size", "st_mtime_ns")
    return all(getattr(x, f) == getattr(y, f) for f in facts) and filecmp.cmp(a, b, shallow=False)


def rejoin_links(runner: Runner, target: Path, lower: Path) -> None:
    """Hard links as a plain directory would have them. A change to a file of the lower
    layer copies it up under the one name it was changed by (in a user namespace overlayfs
    cannot keep the link), where in a plain tree every name of the file sees the change:
    the other names are made links to the changed copy again. A name given a new file
    (a rename over it) is left alone, as in a plain tree."""
    upper = target.with_name(target.name + UPPER)
    if not _linked_copy_up(upper, lower):
        return
    for names in _links(lower).values():
        changed = [name for name in names if _copied_up(upper, name)]
        if not changed:
            continue
        kept = target / changed[0]
        if any(not _same(kept, target / name) for name in changed[1:]):
            raise ImagesmithError(
                f"/{changed[0]} and /{changed[1]} are one file with two names in the cache's rootfs, "
                "changed separately by this build",
                hint="change such a file by one of its names only, or build with --no-cache",
            )
        for name in names:
            path = target / name
            if name == changed[0] or not os.path.lexists(path):
                continue  # (a name deleted stays deleted)
            if os.lstat(path).st_ino == os.lstat(kept).st_ino:
                continue  # overlayfs kept the link (index=on, as root)
            if os.path.lexists(upper / name) and not _copied_up(upper, name):
                continue  # a new file under this name: no longer the same file
            os.unlink(path)
            os.link(kept, path)
        runner.detail(f"hard links of /{changed[0]} kept: {', '.join('/' + n for n in names)}")
