"""A deferred job's result kept in the stage cache, keyed by exactly what the job reads.

The kernel's postinst hooks (the initramfs; on a Raspberry Pi the boot firmware files)
are the slowest part of customize under emulation, and their inputs rarely change when a
config does: an overlay file, a user or a service. Before the hooks run, a fingerprint is
taken of what they read (``hook_inputs``); when the cache holds an entry for it, the
files the hooks wrote last time are put back instead of running them, else the hooks run
and what they changed under the watched directories is saved under the fingerprint.
depmod (with slim's module pruning between its two runs) is kept the same way, by
``module_inputs``: the kernel's modules, depmod's configuration and what slim keeps; so
are the udev hwdb, the certificate store and the locale archive (``data_inputs``: their
sources, their configuration and the directory they write, as it was before). These are
keyed by the versions of the packages whose programs they run (``PROGRAMS``), not by every
installed package: adding a package that brings no file they read runs none of them.

The hooks' fingerprint is explicit (``imagesmith plan`` style): the installed packages (dpkg's
status: every program, hook and library the initramfs copies comes from a package), the
directories whose files the hooks and mkinitramfs read, the kernel's own files, the
epoch, and whether an initramfs is made at all. A change to any of them runs the hooks.
The kernel's modules directory enters the hooks' fingerprint as depmod's (what that job
leaves there is a function of what it read), so it is not read twice; and a tree the
build left as the cache entry's rootfs holds it is read once per entry, not once per
build (``JobCache.tree``).

An entry is committed like a stage's (atomic rename, a lock per key, a content digest
checked before use), so a killed build leaves nothing a later build trusts.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from imagesmith.cache.store import Cache
from imagesmith.host import overlay
from imagesmith.host.rootfs import inside, package_version
from imagesmith.host.run import Runner
from imagesmith.stages.base import digest, tree_digest

#: the code that makes a tree's digest: a memo of one (``JobCache.tree``) is this code's
TREE_CODE = hashlib.sha256(b"".join(
    (Path(__file__).parent.parent / rel).read_bytes() for rel in ("cache/hashing.py", "config/overlay.py")
)).hexdigest()  # fmt: skip
#: the cache's name for these entries (``imagesmith cache list`` shows it)
STAGE = "hooks"
#: what the kernel's hooks write: the initramfs and boot files, initramfs-tools' state
OUTPUTS = ("/boot", "/var/lib/initramfs-tools")
#: what they read besides the packages' own files (a directory, or one file)
READ = (
    "/etc/initramfs-tools", "/usr/share/initramfs-tools", "/etc/modprobe.d", "/usr/lib/modprobe.d",
    "/etc/modules", "/etc/modules-load.d", "/etc/udev", "/usr/lib/udev", "/usr/lib/firmware",
    "/etc/kernel", "/etc/default", "/etc/fstab", "/etc/crypttab", "/etc/ld.so.conf", "/etc/ld.so.conf.d",
    "/boot",
)  # fmt: skip
CODE = (Path(__file__), Path(__file__).with_name("deferred.py"), Path(__file__).with_name("native.py"))
#: what depmod reads besides the kernel's modules and System.map: its configuration and
#: the lists of modules loaded at boot (slim keeps those)
MODULES_READ = ("/etc/depmod.d", "/usr/lib/depmod.d", "/etc/modules", "/etc/modules-load.d",
                "/usr/lib/modules-load.d")  # fmt: skip
MODULES_CODE = (*CODE, Path(__file__).with_name("tools.py"), Path(__file__).with_name("prune.py"))
#: the packages whose programs a job runs (natively from the tools tree, which has the
#: image's versions, or emulated): depmod and the data jobs are keyed by their versions,
#: not by every installed package, whose files they do not read (the kernel's hooks are:
#: mkinitramfs copies programs from any package). The certificate store is not listed:
#: its update.d hooks may be any package's programs.
PROGRAMS = {
    "depmod": ("kmod", "libkmod2"),
    "udev hwdb": ("udev", "libsystemd-shared"),
    "locale-gen": ("locales", "libc-bin"),
}
#: the data jobs that tools.py runs natively where it can (the same bytes either way):
#: name → (what each reads, where it writes); the output directory's state before the
#: job is an input too
DATA_JOBS = {
    "udev hwdb": (("/usr/lib/udev/hwdb.d", "/etc/udev/hwdb.d", "/usr/lib/udev"), ("/usr/lib/udev",)),
    "certificate store": (
        ("/etc/ca-certificates.conf", "/usr/share/ca-certificates", "/usr/local/share/ca-certificates",
         "/etc/ca-certificates/update.d", "/etc/ssl/certs"),
        ("/etc/ssl/certs",),
    ),
    "locale-gen": (
        ("/etc/locale.gen", "/usr/share/i18n", "/usr/share/locale/locale.alias", "/usr/lib/locale"),
        ("/usr/lib/locale",),
    ),
}  # fmt: skip
FILES = "files"
REMOVED = "removed.json"


#: how a job's fingerprint digests a tree of the image: (rootfs, the tree there) → digest
Tree = Callable[[Path, Path], str]


def plain_tree(rootfs: Path, host: Path) -> str:
    return tree_digest(host)


def _read(
    rootfs: Path, paths: list[str], tree: Tree = plain_tree, packages: Sequence[str] | None = None
) -> dict[str, str]:
    """The installed packages (dpkg's status; ``packages``: only these, by version) and
    each of ``paths`` in the image, by digest ("-": not there, or a link, which is never
    followed)."""
    status = inside(rootfs, "/var/lib/dpkg/status")
    if packages is None:
        found = {"installed packages": tree_digest(status) if status.is_file() else "-"}
    else:
        found = {f"package {name}": package_version(rootfs, name) or "-" for name in packages}
    for path in paths:
        host = inside(rootfs, path, follow_last=False)
        found[path] = tree(rootfs, host) if host.exists() and not host.is_symlink() else "-"
    return found


def hook_inputs(
    rootfs: Path,
    version: str,
    epoch: int,
    initramfs: bool,
    modules: str | None = None,
    tree: Tree = plain_tree,
) -> dict[str, str]:
    """What the kernel hooks of ``version`` read, each by its digest. ``modules``: the
    fingerprint of the depmod job that just ran or was put back (``module_inputs``): the
    modules directory is what that job leaves, so it stands for the directory's digest."""
    found = {"kernel": version, "epoch": str(epoch), "initramfs": str(initramfs)}
    # how the hooks are run and their results kept (this module, deferred.py's caller)
    found["code"] = digest([tree_digest(p) for p in CODE])
    kernel = [f"/usr/lib/linux-image-{version}"]
    if modules is None:
        kernel.append(f"/usr/lib/modules/{version}")
    else:
        found[f"/usr/lib/modules/{version} after depmod"] = modules
    return found | _read(rootfs, [*READ, *kernel], tree)


def module_inputs(rootfs: Path, version: str, pruning: str, tree: Tree = plain_tree) -> dict[str, str]:
    """What depmod of ``version`` reads, and slim's pruning between its runs (``pruning``:
    the digest of what the config and device keep, "-" for no pruning), by digest."""
    found = {"kernel": version, "pruning": pruning, "code": digest([tree_digest(p) for p in MODULES_CODE])}
    kernel = [f"/usr/lib/modules/{version}", f"/boot/System.map-{version}"]
    return found | _read(rootfs, [*MODULES_READ, *kernel], tree, PROGRAMS["depmod"])


def data_inputs(rootfs: Path, job: str, tree: Tree = plain_tree) -> dict[str, str]:
    """What the data job ``job`` (a key of DATA_JOBS) reads, by digest."""
    read, outputs = DATA_JOBS[job]
    found = {"job": job, "code": digest([tree_digest(p) for p in MODULES_CODE])}
    return found | _read(rootfs, [*read, *outputs], tree, PROGRAMS.get(job))


def _state(rootfs: Path, outputs: Sequence[str]) -> dict[str, tuple[int, int, int, str]]:
    """Each entry under the ``outputs`` directories: its type and mode, size, change time
    and link target (what tells a file the job wrote from one it left)."""
    found: dict[str, tuple[int, int, int, str]] = {}
    for top in outputs:
        host = inside(rootfs, top, follow_last=False)
        if not host.is_dir() or host.is_symlink():
            continue
        for root, dirs, names in os.walk(host):
            for name in [*dirs, *names]:
                path = Path(root) / name
                info = path.lstat()
                link = os.readlink(path) if stat.S_ISLNK(info.st_mode) else ""
                size = 0 if stat.S_ISDIR(info.st_mode) else info.st_size
                found["/" + path.relative_to(rootfs).as_posix()] = (
                    info.st_mode,
                    size,
                    info.st_mtime_ns,
                    link,
                )
    return found


def _copy(source: Path, target: Path) -> None:
    """One file, link or directory, with its mode and times (a link as a link)."""
    if source.is_symlink():
        target.symlink_to(os.readlink(source))
    elif source.is_dir():
        target.mkdir(exist_ok=True)
        shutil.copystat(source, target)
    else:
        shutil.copy2(source, target)


def _save(entry: Path, rootfs: Path, changed: list[str], removed: list[str]) -> None:
    for path in sorted(changed):  # parents before what is in them
        target = entry / FILES / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        _copy(inside(rootfs, path, follow_last=False), target)
    (entry / REMOVED).write_text(json.dumps(sorted(removed)), encoding="utf-8")


def _restore(entry: Path, rootfs: Path) -> int:
    """Put the saved result in place; nothing is written through a link of the image."""
    for path in json.loads((entry / REMOVED).read_text(encoding="utf-8")):
        host = inside(rootfs, path, follow_last=False)
        if host.is_dir() and not host.is_symlink():
            shutil.rmtree(host)
        elif host.exists() or host.is_symlink():
            host.unlink()
    files = entry / FILES
    count = 0
    for root, dirs, names in os.walk(files):
        for name in sorted([*dirs, *names]):
            source = Path(root) / name
            host = inside(rootfs, "/" + source.relative_to(files).as_posix(), follow_last=False)
            both_dirs = host.is_dir() and source.is_dir() and not source.is_symlink()
            if host.is_symlink():  # a link of the image is replaced, never written through
                host.unlink()
            elif host.exists() and not both_dirs:
                shutil.rmtree(host) if host.is_dir() else host.unlink()
            _copy(source, host)
            count += 1
    # directory times last: putting files in them changed them
    for root, dirs, _names in os.walk(files):
        for name in dirs:
            source = Path(root) / name
            if not source.is_symlink():
                host = inside(rootfs, "/" + source.relative_to(files).as_posix(), follow_last=False)
                shutil.copystat(source, host)
    return count


@dataclass
class JobCache:
    """Runs a job, or puts back what it wrote when its inputs are those of a cached run."""

    runner: Runner
    store: Cache | None
    config: str = ""  # the config that used an entry (cache list, pruning by last use)
    #: the rootfs is an overlay over a cache entry: (its upper layer, the digest recorded
    #: for the entry's rootfs); see ``tree``
    layers: tuple[Path, str] | None = None

    def tree(self, rootfs: Path, host: Path) -> str:
        """``tree_digest(host)``; for a tree the build left as the cache entry's rootfs has
        it (``overlay.untouched``), remembered in the cache by that entry's digest: the
        kernel's modules, its device trees and firmware are read once per entry, not per
        build. The entry's digest is checked before it is used, so the same digest means
        the same tree."""
        if self.layers is None or self.store is None:
            return tree_digest(host)
        upper, lower = self.layers
        rel = host.relative_to(rootfs)
        if not overlay.untouched(upper, rel):
            return tree_digest(host)
        memo = self.store.memo / "trees" / digest([lower, str(rel), TREE_CODE])
        with suppress(OSError, UnicodeDecodeError):
            known = memo.read_text(encoding="ascii")
            if len(known) == 64:
                return known
        found = tree_digest(host)
        memo.parent.mkdir(exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=memo.parent, delete=False, encoding="ascii") as out:
            out.write(found)
        os.replace(out.name, memo)  # whole or not at all
        return found

    def run(
        self,
        what: str,
        rootfs: Path,
        inputs: dict[str, str],
        job: Callable[[], None],
        outputs: Sequence[str] = OUTPUTS,
    ) -> bool:
        """Run ``job`` unless the cache has its result for ``inputs``; True when it ran.
        What it changes under the ``outputs`` directories is its result."""
        if self.store is None:
            job()
            return True
        key = digest([inputs, list(outputs)])
        with self.store.lock(STAGE, key):
            entry = self.store.checked(STAGE, key, self.runner.info)
            if entry is not None:
                count = _restore(entry.path, rootfs)
                self.store.touch(entry, self.config)
                self.runner.info(f"{what}: from the cache ({count} files, inputs {key[:12]})")
                return False
            before = _state(rootfs, outputs)
            job()
            after = _state(rootfs, outputs)
            changed = [path for path, state in after.items() if before.get(path) != state]
            removed = [path for path in before if path not in after]
            self.store.commit(STAGE, key, lambda entry: _save(entry, rootfs, changed, removed))
            self.runner.detail(f"{what}: ran; {len(changed)} files kept in the cache (inputs {key[:12]})")
            return True

    def data(self, job: str, rootfs: Path, run: Callable[[], None]) -> None:
        """The data job ``job`` (a key of DATA_JOBS), or its result from the cache."""
        self.run(job, rootfs, data_inputs(rootfs, job, self.tree), run, DATA_JOBS[job][1])
