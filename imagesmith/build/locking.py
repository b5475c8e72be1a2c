"""Lock files in a build: using one, and making one (`imagesmith lock`, `--update-lock`)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from imagesmith.build.stages import Stages
from imagesmith.cache import Cache
from imagesmith.config import facts
from imagesmith.config.load import Spec
from imagesmith.errors import ImagesmithError, Location, config_error
from imagesmith.host.rootfs import remove_tree
from imagesmith.host.run import Runner
from imagesmith.outputs import manifest
from imagesmith.repro import lock, reproducible, sources
from imagesmith.stages import bootstrap, customize, packages, plan
from imagesmith.stages.context import Context


def use_lock(ctx: Context, lock_file: Path) -> lock.Lock:
    """The lock, checked against the config; its SOURCE_DATE_EPOCH unless one is given."""
    found = read_lock(ctx.spec, ctx.runner, lock_file)
    if ctx.epoch is not None and ctx.epoch != found.source_date_epoch:
        ctx.runner.note(f"SOURCE_DATE_EPOCH={ctx.epoch} as given, not the lock's")
    elif ctx.epoch is None:
        ctx.set_epoch(found.source_date_epoch)
    ctx.runner.info(f"using {lock_file.name}: {len(found.packages)} locked packages")
    return found


def read_lock(spec: Spec, runner: Runner, lock_file: Path) -> lock.Lock:
    """The lock file, with a note for each way the config has moved from it."""
    found = lock.read(lock_file)
    for note in lock.check_spec(found, spec, facts.packages(spec)):
        runner.note(note)
    now = locked_sources(runner, spec)
    before = [source.model_dump() for source in found.sources]
    if now != before:
        changed = sorted(
            {str(s["name"]) for s in now}.symmetric_difference(str(s["name"]) for s in before)
        ) or [str(n["name"]) for n, b in zip(now, before, strict=False) if n != b]
        raise config_error(
            f"the config's extra sources changed since the lock was made ({', '.join(changed) or 'order'}): "
            "an archive, its suites or components, or the key that signs it",
            Location(lock_file),
            f"make it again: {lock.relock_command(found, spec.config_path)}",
        )
    return found


def locked_sources(runner: Runner, spec: Spec) -> list[dict[str, object]]:
    """The extra sources as a lock records them."""
    keep = ("name", "url", "suites", "components", "key_fingerprints")
    return [{k: v for k, v in entry.items() if k in keep} for entry in sources.described(runner, spec)]


#: the stages a re-lock runs: those that install packages
INSTALLS = (bootstrap.STAGE, packages.STAGE)


def relock(ctx: Context, cache: Cache | None, tools: dict[str, str], lock_file: Path) -> lock.Lock:
    """Install afresh (never from the cache: a lock says what the mirror gives now) and
    write the lock of what was installed. The rootfs stays in the work directory, and in
    the cache under the new lock's keys."""
    spec = ctx.spec
    plans = plan.stages(spec, cache.salt if cache else b"", tools, epoch=ctx.epoch)
    Stages(ctx, cache, plans, bootstrap.STAGE.name).run(INSTALLS)
    epoch = reproducible.source_date_epoch(ctx.rootfs)
    made = lock.make(
        spec, facts.packages(spec), bootstrap.installed_debs(ctx), epoch,
        [lock.LockedSource(**entry) for entry in locked_sources(ctx.runner, spec)],
        sources.read_archives(ctx.work / sources.ARCHIVES),
    )  # fmt: skip
    try:
        old = lock.read(lock_file) if lock_file.exists() else None
    except ImagesmithError:  # a damaged lock is what a re-lock is for
        old = None
    lock.write(made, lock_file)
    made.path = lock_file
    changes = "unchanged" if old is not None and old.digest_input() == made.digest_input() else "written"
    ctx.runner.info(f"{lock_file}: {len(made.packages)} packages, SOURCE_DATE_EPOCH {epoch} ({changes})")
    if ctx.epoch is None:
        ctx.set_epoch(epoch)
    if cache is not None:  # kept under the locked key: the next locked build starts from it
        locked = Stages(ctx, cache, plan.stages(spec, cache.salt, tools, made, ctx.epoch), None)
        # the entry the bootstrap above just committed (no need to check its digest again)
        base = cache.lookup(
            bootstrap.STAGE.name, next(p.key for p in plans if p.name == bootstrap.STAGE.name)
        )
        if locked.cached(bootstrap.STAGE.name) is None and base is not None:
            # from its entry: the rootfs in the work directory has the config's packages now
            locked.commit_copy(bootstrap.STAGE.name, base)
        if locked.cached(packages.STAGE.name) is None:
            locked.commit(packages.STAGE)
    ctx.done.update(stage.name for stage in INSTALLS)
    return made


def lock_only(spec: Spec, runner: Runner, cache: Cache | None, lock_file: Path) -> lock.Lock:
    """`imagesmith lock`: the installs, the lock file, and the installs kept in the cache
    under the locked keys (so the next locked build starts after them)."""
    customize.check_spec(spec)
    from imagesmith.build.pipeline import check_host

    check_host(spec)
    scratch = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-lock-", dir=cache.root / "tmp" if cache else None))
    try:
        ctx = Context(spec=spec, runner=runner, work=scratch, debs=cache.debs if cache else None)
        return relock(ctx, cache, manifest.host_tools(), lock_file)
    finally:
        remove_tree(scratch)
