"""packages: the config's own packages, installed over the bootstrap of the device's and
the layers' (``facts.own_packages``).

mmdebstrap runs again on the bootstrapped rootfs (``--skip=check/empty``), with the same
options, sources, pins and .deb store: apt finds the essential packages installed, so
nothing is extracted again, and installs only the config's packages, with their
maintainer scripts and mmdebstrap's hooks and cleanup as in the bootstrap. A cold build
and a warm one both take this second step, so the rootfs is the same whichever ran; a
config that adds or drops one of its packages runs this stage, not the bootstrap.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from imagesmith.cache.store import Entry
from imagesmith.config.facts import own_packages
from imagesmith.host import progress
from imagesmith.repro import lock
from imagesmith.stages import bootstrap, installs
from imagesmith.stages.base import KeyInputs, Stage, digest
from imagesmith.stages.context import Context

#: the .deb files of the second install, added to the bootstrap's list after it
MORE_HASHES = "debs-more.sha256"


def run(ctx: Context, include: list[str]) -> None:
    """mmdebstrap over ``ctx.rootfs``; the .deb files it used join ``debs.sha256``."""
    ctx.runner.detail(f"packages: {shlex.join(include)}")
    more = ctx.work / MORE_HASHES
    with bootstrap.access(ctx) as apt, bootstrap.setup_files(ctx.rootfs):
        ctx.runner.run(
            bootstrap.command(ctx.spec, ctx.rootfs, include, ctx.debs, more, apt.preferences, apt.auth,
                              apt.options, onto=True),
            name="mmdebstrap (the config's packages)",
            explain=apt.explain,
            progress=progress.Apt(),
        )  # fmt: skip
    listed = ctx.work / lock.DEB_HASHES
    with listed.open("a", encoding="utf-8") as out:
        out.write(more.read_text(encoding="utf-8"))
    more.unlink()


class Packages(Stage):
    """The config's own packages over the bootstrap; with none, the bootstrap as it is."""

    name = "packages"
    code = (
        "stages/packages.py",
        "stages/bootstrap.py",
        "stages/installs.py",
        "repro/lock.py",
        "repro/sources.py",
    )
    restore_with = ("bootstrap",)  # its native tools tree (and, with no packages, its rootfs)
    parts_read = True  # the rootfs's digest keys the deferred jobs (installs.restore_rootfs)

    def inputs(self, given: KeyInputs) -> dict[str, str]:
        return {"packages": digest(own_packages(given.spec))}

    def check(self, ctx: Context) -> None:
        if own_packages(ctx.spec):
            bootstrap.check_mirror(ctx)

    def title(self, ctx: Context) -> str:
        found = own_packages(ctx.spec)
        shown = ", ".join(found[:6]) + (f" and {len(found) - 6} more" if len(found) > 6 else "")
        return f"the config's own: {shown}" if found else "none of the config's own"

    def run(self, ctx: Context) -> None:
        include = own_packages(ctx.spec)
        if include:
            run(ctx, include)
            bootstrap.found_packages(ctx)
        if ctx.lock is not None:
            lock.check_installed(ctx.lock, bootstrap.installed_debs(ctx), ctx.spec.config_path)

    def save(self, ctx: Context, entry: Path) -> dict[str, str]:
        if own_packages(ctx.spec):  # else the bootstrap's entry holds this rootfs already
            installs.save_install(ctx, entry)
        return {}

    def committed(self, ctx: Context, entry: Entry) -> None:
        installs.committed(ctx, entry)

    def reads(self, ctx: Context, stage: str) -> frozenset[str] | None:
        # with packages of its own, its entry holds the rootfs: the bootstrap's, only its tools
        return frozenset({"tools"}) if stage == bootstrap.STAGE.name and own_packages(ctx.spec) else None

    def restore(self, ctx: Context, entries: dict[str, Entry]) -> bool:
        own, base = entries[self.name], entries[bootstrap.STAGE.name]
        installs.restore_install(ctx, own if (own.path / "rootfs").is_dir() else base)
        installs.restore_tools(ctx, base)
        return True


STAGE = Packages()
