"""Run the pipeline for one spec and publish its outputs atomically.

Everything is made in a private work directory inside the output directory; only a
complete build moves its files into place, and SHA256SUMS, which vouches for them, is
removed first and written last. A failed or interrupted build leaves the previous
outputs (if any) and its own build.log, never a half-written image.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imagesmith.build import current, locking
from imagesmith.build.stages import Stages
from imagesmith.cache import Cache
from imagesmith.cache.store import DamagedEntry
from imagesmith.config.load import Spec
from imagesmith.errors import ImagesmithError
from imagesmith.host import binfmt as host
from imagesmith.host import requirements
from imagesmith.host.rootfs import remove_tree
from imagesmith.host.run import Runner
from imagesmith.outputs import handlers, imager, manifest, sign
from imagesmith.outputs.base import Output, Release
from imagesmith.outputs.files import IMAGES, flushed
from imagesmith.repro import sources
from imagesmith.stages import customize, disk, plan
from imagesmith.stages.context import Context

WORK_PREFIX = ".imagesmith-work-"


@dataclass
class Result:
    image: Path
    outputs: list[Path]
    table: dict[str, object]
    key: str = ""  # what the outputs depend on (``current.release_key``); "" without a cache
    stages: dict[str, Any] = field(default_factory=dict)  # each stage's key and inputs


@dataclass(frozen=True)
class BuildOptions:
    """What the command line says about one build (every path absolute)."""

    output: Path
    signing_key: Path | None = None  # over the config's signing_key
    rebuild_from: str | None = None  # run this stage and every later one
    config_id: str = ""  # which config the cache's build record belongs to
    lock_file: Path | None = None  # CONFIG.lock: used when it exists
    update_lock: bool = False  # lock again first
    source_date_epoch: int | None = None  # given: over the lock's and the packages'
    #: called once what the build will make is decided (the quick no-op's recorder stops)
    decided: Callable[[], None] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not self.output.is_absolute():  # hooks and scripts run in other working directories
            raise AssertionError(f"the output directory must be absolute by now: {self.output}")


def check_host(spec: Spec) -> None:
    """The host can run this build: every command a build of this architecture calls is
    installed (``requirements``), and binfmt runs the target's programs."""
    purposes = ["build", *(["update"] if spec.config.update is not None else [])]
    wanted = requirements.needed(purposes, [spec.device.arch])
    missing = [req for req in wanted if any(shutil.which(tool) is None for tool in req.tools)]
    if missing:
        raise ImagesmithError(
            "missing host tools: "
            + ", ".join(f"{'/'.join(req.tools)} ({req.package}: {req.why})" for req in missing),
            hint=f"{requirements.install_command(req.package for req in missing)}   "
            f"(`imagesmith doctor --arch {spec.device.arch}` checks everything a build needs)",
        )
    if os.geteuid() != 0:  # the command line runs builds of ordinary users in a user namespace
        raise ImagesmithError(
            "a build runs as root or as root of a user namespace",
            hint="run it through the imagesmith command, which enters a user namespace by itself",
        )
    host.require_arch(spec.device.arch)


def remove_stale_work(output: Path) -> None:
    """Work directories of builds that were killed: their process is gone."""
    for path in output.glob(f"{WORK_PREFIX}*"):
        pid = path.name.removeprefix(WORK_PREFIX).split("-", 1)[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            remove_tree(path)


def publish(made: list[tuple[Output, list[Path]]], spec: Spec, output: Path) -> list[Path]:
    """Move the outputs into place: the old files that vouch for the others (SHA256SUMS and
    its signature) go first; the new ones come last, SHA256SUMS the very last."""
    vouching = [handler for handler in handlers.HANDLERS if handler.vouches]
    for handler in vouching:
        for name in handler.names(spec):
            (output / name).unlink(missing_ok=True)
    order = [item for item in made if not item[0].vouches] + [
        item for item in reversed(made) if item[0].vouches
    ]
    placed = []
    for _handler, paths in order:
        for path in paths:
            final = output / path.name
            flushed(path)
            os.replace(path, final)
            placed.append(final)
    return placed


def make_outputs(release: Release, kept: dict[str, list[Path]]) -> list[tuple[Output, list[Path]]]:
    """Every output, in handler order: those of the image phase as the disk stage made (or
    restored) them, the rest made now; each handler sees the files made before it."""
    made = []
    for handler in handlers.HANDLERS:
        if handler.name in kept:
            paths = kept[handler.name]
        elif handler.phase == "release" and handler.wanted(release):
            paths = handler.make(release)
        else:
            continue
        release.files += paths
        made.append((handler, paths))
    return made


def unchanged(
    spec: Spec,
    options: BuildOptions,
    runner: Runner,
    cache: Cache,
    plans: list[plan.StagePlan],
    found: dict[str, Any],
) -> Result:
    """The outputs in place are this build's (``current.py``): nothing is made again. The
    stages' entries count as used, as a build restoring them would count them."""
    with runner.stage("outputs", "up to date: the last build into this directory had the same inputs"):
        for stage in plans:
            entry = cache.lookup(stage.name, stage.key)
            if entry is not None:
                cache.touch(entry, str(spec.config_path))
        cache.record_build(options.config_id, stage_record(plans))
    outputs = [options.output / name for name in found["files"]]
    image = next((p for p in outputs if p.name.endswith(IMAGES)), options.output / f"{spec.config.name}.img")
    return Result(image, outputs, found.get("table", {}), found["key"], stage_record(plans))


def stage_record(plans: list[plan.StagePlan]) -> dict[str, Any]:
    """What the cache keeps of a config's last build, for `imagesmith plan` to compare with."""
    return {p.name: {"key": p.key, "inputs": p.inputs} for p in plans}


#: how many times a build starts again after finding a cache entry it used damaged
AGAIN = 3


def build(spec: Spec, options: BuildOptions, runner: Runner, cache: Cache | None = None) -> Result:
    """Build ``spec`` into ``options.output``; with a lock file, from the locked packages.
    An entry taken from the cache is checked while the build goes on (``Stages.check``):
    one found damaged is discarded once the build let go of it, and the build starts again."""
    for _ in range(AGAIN):
        try:
            return build_once(spec, options, runner, cache)
        except DamagedEntry as damaged:
            assert cache is not None
            cache.discard(damaged.entry, damaged.why, runner.note, "the build starts again")
    return build_once(spec, options, runner, cache)


def build_once(spec: Spec, options: BuildOptions, runner: Runner, cache: Cache | None) -> Result:
    """One go at ``build``."""
    output, lock_file = options.output, options.lock_file
    customize.check_spec(spec)
    imager.check(spec)
    check_host(spec)
    sources.check_keys(runner, spec)  # a wrong key file fails now, not after the bootstrap
    key = options.signing_key or (Path(spec.config.signing_key) if spec.config.signing_key else None)
    if key is not None:
        sign.load_private_key(key)  # a bad key fails now, not after a long build
    output.mkdir(parents=True, exist_ok=True)
    remove_stale_work(output)
    work = Path(tempfile.mkdtemp(prefix=f"{WORK_PREFIX}{os.getpid()}-", dir=output))
    tools = manifest.host_tools()
    ctx = Context(spec=spec, runner=runner, work=work, debs=cache.debs if cache else None, store=cache)
    try:
        if options.source_date_epoch is not None:
            ctx.set_epoch(options.source_date_epoch)
        if lock_file is not None and options.update_lock:
            ctx.lock = locking.relock(ctx, cache, tools, lock_file)
        elif lock_file is not None and lock_file.exists():
            ctx.lock = locking.use_lock(ctx, lock_file)
        plans = plan.stages(spec, cache.salt if cache else b"", tools, ctx.lock, ctx.epoch)
        if cache is not None and cache.remote is not None:
            cache.remote.secret = plan.secret_stages(spec, tools, ctx.lock, ctx.epoch)
        released = current.release_key(plans, spec, tools, key, cache.salt) if cache is not None else ""
        if options.decided is not None:
            options.decided()
        shortcut = not (options.rebuild_from or options.update_lock)
        if cache is not None and cache.remote is None and shortcut:  # a shared cache: push after every build
            found = current.current(cache, output, released)
            if found is not None:
                return unchanged(spec, options, runner, cache, plans, found)
        stages = Stages(ctx, cache, plans, options.rebuild_from)
        stages.run()
        release = disk.release(ctx)
        release.signing_key, release.tools = key, tools
        release.table = disk.read_table(ctx, release.image)
        with runner.stage("artifacts", "manifest, checksums" + (", signature" if key else "")):
            made = make_outputs(release, ctx.products[disk.OUTPUTS])
            if cache is not None:  # from the first file replaced, the record no longer holds
                cache.forget_published(output)
            outputs = publish(made, spec, output)
        if cache is not None:
            current.record(cache, output, released, outputs, release.table)
            cache.record_build(options.config_id, stage_record(plans))
            if cache.remote is not None:
                with runner.stage("share", f"push to {cache.remote.address}"):
                    cache.remote.push(cache, [(p.name, p.key) for p in plans], runner)
        image = next((p for p in outputs if p.name.endswith(IMAGES)), output / release.image.name)
        return Result(image, outputs, release.table, released, stage_record(plans))  # image: raw or packed
    finally:
        try:
            ctx.held.close()  # the overlay over a cache entry first: then the work directory goes
        finally:
            remove_tree(work)
