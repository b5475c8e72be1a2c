"""An install's result (the rootfs, its copyright files, the .deb hashes and which
archive gave each package) between the work directory and a cache entry, which name
their parts alike: saved by copying, restored with the rootfs used in place where the
build can (host/overlay.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

from imagesmith.cache.store import Entry
from imagesmith.host import overlay
from imagesmith.host.rootfs import copy_tree
from imagesmith.host.run import Runner
from imagesmith.repro import lock, sources
from imagesmith.stages.context import COPYRIGHTS, Context


def copy_install(runner: Runner, source: Path, target: Path, *, rootfs: bool = True) -> None:
    """An install's result from one directory to another (the work directory and a cache
    entry, which name their parts alike): the rootfs, its copyright files, the .deb hashes
    and, with extra sources, which archive gave each package."""
    if rootfs:
        copy_tree(runner, source / "rootfs", target / "rootfs")
    copy_tree(runner, source / COPYRIGHTS, target / COPYRIGHTS)
    for name in (lock.DEB_HASHES, sources.ARCHIVES):
        if (source / name).is_file():
            shutil.copyfile(source / name, target / name)


def restore_install(ctx: Context, entry: Entry) -> None:
    """An install's result from its cache entry into the work directory; the rootfs is
    the entry itself under an overlay (host/overlay.py) where this build can mount one,
    else a copy: the same tree either way."""
    in_place = ctx.store is not None and overlay.available()
    if in_place:
        assert ctx.store is not None
        ctx.held.enter_context(ctx.store.using(entry))  # no prune removes it meanwhile
        in_place = overlay.layer(ctx.runner, entry.path / "rootfs", ctx.rootfs)
    if in_place:
        ctx.held.callback(overlay.unmount_under, ctx.runner, ctx.rootfs)
        ctx.lower = entry.path / "rootfs"
        ctx.runner.detail(f"rootfs: {entry.path.name} in place, the build's changes on top (overlay)")
    copy_install(ctx.runner, entry.path, ctx.work, rootfs=not in_place)


def restore_tools(ctx: Context, entry: Path) -> None:
    """The cache entry's tools tree, copied to the work directory only when a job first
    needs it (a rebuild whose jobs all come from the cache copies none of it)."""
    if (entry / "tools").is_dir():
        ctx.tools_tree = ctx.work / "tools"
        ctx.tools_source = entry / "tools"
