"""An install's result (the rootfs, its copyright files, the .deb hashes and which
archive gave each package, and the bootstrap's tools tree) between the work directory
and a cache entry, which name their parts alike. Where the build can mount an overlay
(host/overlay.py), the rootfs and the tools tree are moved into a new entry and used
from it in place, as a restored entry is: a cold and a warm build take the same path.
Elsewhere they are copied both ways."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from imagesmith.cache.store import PARTS, Entry
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


def save_install(ctx: Context, entry: Path) -> None:
    """An install's result into the new cache entry ``entry``: the rootfs moved into it
    where the build can use the entry in place afterwards (``committed``), else copied;
    the rest copied."""
    _keep(ctx, ctx.rootfs, entry / "rootfs")
    copy_install(ctx.runner, ctx.work, entry, rootfs=False)


def save_tools(ctx: Context, entry: Path) -> None:
    """The tools tree into the new cache entry, the same way."""
    if ctx.tools_tree is not None:
        _keep(ctx, ctx.tools_tree, entry / "tools")


def _keep(ctx: Context, tree: Path, target: Path) -> None:
    """``tree`` moved to ``target`` in a new entry where the build can then mount the
    entry in place (a plain directory of the same filesystem, not an overlay already);
    else copied."""
    same_filesystem = os.stat(tree).st_dev == os.stat(target.parent).st_dev
    if ctx.store is not None and overlay.available() and same_filesystem:
        os.rename(tree, target)
    else:
        copy_tree(ctx.runner, tree, target)


def committed(ctx: Context, entry: Entry) -> None:
    """What ``save_install`` and ``save_tools`` moved into ``entry``, back under the work
    directory: the entry in place (copied only if the overlay fails after all)."""
    if not ctx.rootfs.exists():
        restore_rootfs(ctx, entry)
    if ctx.tools_tree is not None and not ctx.tools_tree.exists():
        restore_tools(ctx, entry)


def _in_place(ctx: Context, entry: Entry, lower: Path, target: Path) -> bool:
    """``target`` is ``lower`` (of ``entry``) under an overlay, held until the build ends."""
    if ctx.store is None or not overlay.available():
        return False
    ctx.held.enter_context(ctx.store.using(entry))  # no prune removes it meanwhile
    if not overlay.layer(ctx.runner, lower, target):
        return False
    ctx.held.callback(overlay.unmount_under, ctx.runner, target)
    ctx.runner.detail(f"{target.name}: {entry.path.name} in place, the build's changes on top (overlay)")
    return True


def restore_rootfs(ctx: Context, entry: Entry) -> None:
    """The entry's rootfs as the work directory's: in place where the build can mount an
    overlay (host/overlay.py), else a copy: the same tree either way."""
    if _in_place(ctx, entry, entry.path / "rootfs", ctx.rootfs):
        ctx.lower = entry.path / "rootfs"
        recorded = entry.meta.get(PARTS, {})
        ctx.lower_digest = recorded.get("rootfs") if isinstance(recorded, dict) else None
    else:
        copy_tree(ctx.runner, entry.path / "rootfs", ctx.rootfs)


def restore_install(ctx: Context, entry: Entry) -> None:
    """An install's result from its cache entry into the work directory."""
    restore_rootfs(ctx, entry)
    copy_install(ctx.runner, entry.path, ctx.work, rootfs=False)


def restore_tools(ctx: Context, entry: Entry) -> None:
    """The cache entry's tools tree: in place, or copied to the work directory only when
    a job first needs it (a rebuild whose jobs all come from the cache copies none of it)."""
    source = entry.path / "tools"
    if not source.is_dir():
        return
    ctx.tools_tree = ctx.work / "tools"
    ctx.tools_source = None if _in_place(ctx, entry, source, ctx.tools_tree) else source
