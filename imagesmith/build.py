"""Run the pipeline for one spec and publish its outputs atomically.

Everything is made in a private work directory inside the output directory; only a
complete build moves its files into place, and SHA256SUMS, which vouches for them, is
removed first and written last. A failed or interrupted build leaves the previous
outputs (if any) and its own build.log, never a half-written image.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from imagesmith.cache import Cache, Entry, plan
from imagesmith.config import facts
from imagesmith.config.load import Spec
from imagesmith.errors import ImagesmithError
from imagesmith.host import binfmt as host
from imagesmith.host import requirements
from imagesmith.host.rootfs import inside, remove_tree
from imagesmith.host.run import Runner
from imagesmith.outputs import inventory, manifest, sbom, sign
from imagesmith.repro import lock, reproducible
from imagesmith.stages import artifacts, bootstrap, customize, disk, filesystems
from imagesmith.stages.context import Context, PartitionImage

WORK_PREFIX = ".imagesmith-work-"
COPYRIGHTS = "copyrights"


@dataclass
class Result:
    image: Path
    outputs: list[Path]
    table: dict[str, object]


def check_host(spec: Spec) -> None:
    """The host can run this build: every command a build of this architecture calls is
    installed (``requirements``), and binfmt runs the target's programs."""
    wanted = requirements.needed(["build"], [spec.device.arch])
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


def publish(files: list[Path], sums: Path, output: Path) -> list[Path]:
    """Move the outputs into place: the old SHA256SUMS and signature go first, the new
    signature and SHA256SUMS (which vouch for the rest) come last."""
    (output / sums.name).unlink(missing_ok=True)
    (output / sign.SIG).unlink(missing_ok=True)
    placed = []
    for path in [*files, sums]:
        final = output / path.name
        os.replace(path, final)
        placed.append(final)
    return placed


def audit(
    ctx: Context,
    image: Path,
    table: dict[str, object],
    found: Inventory,
    made: DiskOutputs,
    signing_key: Path | None,
    tools: dict[str, str],
) -> list[Path]:
    """The SBOMs (made with the image), manifest, checksums and signature; every file to
    publish, SHA256SUMS last."""
    spec, work = ctx.spec, ctx.work
    files = [image, made.bmap, made.spdx, made.cdx]
    data = manifest.build_manifest(spec, found.packages, table, files, found.roots, made.created, tools)
    manifest.write(data, work / manifest.NAME)
    files.append(work / manifest.NAME)
    sums = work / artifacts.SUMS
    artifacts.checksums(files, sums)
    if signing_key is not None:
        sign.sign(sums, signing_key, work / sign.SIG)
        files.append(work / sign.SIG)
    ctx.runner.detail(f"{len(found.packages)} packages in the SBOMs and the manifest")
    return [*files, sums]


@dataclass
class Inventory:
    packages: list[inventory.Package]
    roots: dict[str, str]
    distro: str

    def save(self, target: Path) -> None:
        data = {"packages": [asdict(p) for p in self.packages], "roots": self.roots, "distro": self.distro}
        target.write_text(json.dumps(data), encoding="utf-8")

    @classmethod
    def load(cls, source: Path) -> Inventory:
        data = json.loads(source.read_text(encoding="utf-8"))
        return cls([inventory.Package(**p) for p in data["packages"]], data["roots"], data["distro"])


@dataclass
class DiskOutputs:
    """What the disk stage leaves besides the image: its block map, SBOMs and timestamp."""

    bmap: Path
    spdx: Path
    cdx: Path
    created: str


def take_inventory(ctx: Context) -> Inventory:
    packages, roots = inventory.collect(ctx.spec, ctx.rootfs, ctx.work / COPYRIGHTS)
    os_release = inside(ctx.rootfs, "/etc/os-release")
    text = os_release.read_text() if os_release.is_file() else ""
    return Inventory(packages, roots, sbom.distro_of(text, ctx.spec.config.distribution.suite))


def describe(ctx: Context, image: Path, found: Inventory, into: Path) -> DiskOutputs:
    """Block map and SBOMs of a finished image, written into ``into``."""
    name = ctx.spec.config.name
    created = artifacts.created()
    subject = sbom.Subject(
        name, image.name, artifacts.sha256(image), ctx.spec.device.arch, found.distro, created
    )
    made = DiskOutputs(
        artifacts.bmap(ctx, image, into / f"{image.name}.bmap"),
        into / f"{name}.spdx.json",
        into / f"{name}.cdx.json",
        created.isoformat(),
    )
    sbom.write_spdx(subject, found.packages, made.spdx)
    sbom.write_cyclonedx(subject, found.packages, made.cdx)
    return made


class Stages:
    """Runs each stage, or takes its result from the cache when its key is there."""

    def __init__(
        self, ctx: Context, cache: Cache | None, plans: list[plan.StagePlan], rebuild_from: str | None
    ):
        self.ctx, self.cache = ctx, cache
        self.plans = {p.name: p for p in plans}
        first_forced = plan.STAGES.index(rebuild_from) if rebuild_from else len(plan.STAGES)
        self.forced = set(plan.STAGES[first_forced:])

    def cached(self, stage: str) -> Entry | None:
        """The stage's cache entry, checked against the digest it was made with."""
        if self.cache is None or stage in self.forced:
            return None
        return self.cache.checked(stage, self.plans[stage].key, self.warn)

    def warn(self, text: str) -> None:
        self.ctx.runner.info(f"[yellow]note:[/yellow] {text}")

    def commit(self, stage: str, make: Callable[[Path], None], **meta: str) -> None:
        if self.cache is not None:
            # the config that made it counts as its first user (`cache list`, pruning)
            info = {"inputs": self.plans[stage].inputs, "configs": [str(self.ctx.spec.config_path)], **meta}
            self.cache.commit(stage, self.plans[stage].key, make, info)

    def discard(self, stage: str) -> None:
        if self.cache is not None and (entry := self.cache.lookup(stage, self.plans[stage].key)) is not None:
            self.cache.remove(entry)

    def used(self, entry: Entry) -> None:
        if self.cache is not None:
            self.cache.touch(entry, str(self.ctx.spec.config_path))

    @contextmanager
    def lock(self, stage: str) -> Iterator[None]:
        if self.cache is None:
            yield
        else:
            with self.cache.lock(stage, self.plans[stage].key):
                yield


def copy_tree(runner: Runner, source: Path, target: Path) -> None:
    """A rootfs copied with owners, modes, links, device nodes and extended attributes."""
    runner.run(["cp", "-a", "--reflink=auto", str(source), str(target)])


def copy_file(source: Path, target: Path) -> None:
    """A (sparse) file copied by its data extents: holes stay holes."""
    with open(target, "wb") as handle:
        handle.truncate(source.stat().st_size)
        disk.copy_data(source, handle.fileno(), 0)


@dataclass(frozen=True)
class BuildOptions:
    """What the command line says about one build (every path absolute)."""

    output: Path
    signing_key: Path | None = None  # over the config's signing_key
    rebuild_from: str | None = None  # run this stage and every later one
    config_id: str = ""  # which config the cache's build record belongs to
    lock_file: Path | None = None  # CONFIG.lock: used when it exists
    update_lock: bool = False  # lock again first

    def __post_init__(self) -> None:
        if not self.output.is_absolute():  # hooks and scripts run in other working directories
            raise AssertionError(f"the output directory must be absolute by now: {self.output}")


def build(spec: Spec, options: BuildOptions, runner: Runner, cache: Cache | None = None) -> Result:
    """Build ``spec`` into ``options.output``; with a lock file, from the locked packages."""
    output, lock_file = options.output, options.lock_file
    customize.check_spec(spec)
    check_host(spec)
    key = options.signing_key or (Path(spec.config.signing_key) if spec.config.signing_key else None)
    if key is not None:
        sign.load_private_key(key)  # a bad key fails now, not after a long build
    output.mkdir(parents=True, exist_ok=True)
    remove_stale_work(output)
    work = Path(tempfile.mkdtemp(prefix=f"{WORK_PREFIX}{os.getpid()}-", dir=output))
    name = spec.config.name
    tools = manifest.host_tools()
    try:
        ctx = Context(spec=spec, runner=runner, work=work, debs=cache.debs if cache else None)
        if lock_file is not None and options.update_lock:
            ctx.lock = relock(ctx, cache, tools, lock_file)
        elif lock_file is not None and lock_file.exists():
            ctx.lock = use_lock(spec, runner, lock_file)
        plans = plan.stages(spec, cache.salt if cache else b"", tools, ctx.lock)
        stages = Stages(ctx, cache, plans, options.rebuild_from)
        if ctx.rootfs.is_dir() and stages.cached("bootstrap") is None:  # made by the re-lock
            stages.commit("bootstrap", lambda entry: keep_bootstrap(ctx, entry))
        image = work / f"{name}.img"
        found, made = produce(ctx, stages, image)
        table = disk.read_table(ctx, image)
        with runner.stage("artifacts", "manifest, checksums" + (", signature" if key else "")):
            *files, sums = audit(ctx, image, table, found, made, key, tools)
            outputs = publish(files, sums, output)
        if cache is not None:
            cache.record_build(options.config_id, {p.name: {"key": p.key, "inputs": p.inputs} for p in plans})
        return Result(output / image.name, outputs, table)
    finally:
        remove_tree(work)


def produce(ctx: Context, stages: Stages, image: Path) -> tuple[Inventory, DiskOutputs]:
    """The image and what describes it: from the cache where the keys are there, else made."""
    runner, spec, work = ctx.runner, ctx.spec, ctx.work
    with stages.lock("disk"):
        disk_entry, inv_entry = stages.cached("disk"), stages.cached("customize")
        if disk_entry is not None and inv_entry is not None:
            with stages.lock("filesystems"):
                fs_entry = stages.cached("filesystems")
                if fs_entry is not None:
                    with runner.stage("disk", "from the cache"):
                        # the image is put together again from the cached partitions (the same
                        # bytes: sfdisk and the copy are deterministic); the cache keeps no image
                        for item in json.loads((fs_entry.path / "partitions.json").read_text()):
                            source = fs_entry.path / item.pop("file")
                            ctx.partitions.append(PartitionImage(path=source, **item))
                        disk.run(ctx, image)
                        same = artifacts.sha256(image) == disk_entry.meta.get("sha256")
                        if same:
                            found = Inventory.load(inv_entry.path / "inventory.json")
                            bmap, spdx, cdx = (work / n for n in _copy_small(disk_entry.path, work))
                            made = DiskOutputs(bmap, spdx, cdx, str(disk_entry.meta["created"]))
                            for entry in (disk_entry, fs_entry, inv_entry):
                                stages.used(entry)
                    if same:
                        return found, made
                    # the checksums and SBOMs must name the bytes written, not what the cache said
                    stages.warn("the image put together from the cache is not the one its entry "
                                "recorded: the entry is discarded and the image described anew")  # fmt: skip
                    stages.discard("disk")
                    ctx.partitions.clear()
                    image.unlink()
        found = partitions(ctx, stages)
        with runner.stage("disk", f"{spec.layout.table} partition table → {image.name}"):
            disk.run(ctx, image)
            made = describe(ctx, image, found, work)

            def keep(entry: Path) -> None:
                for path in (made.bmap, made.spdx, made.cdx):
                    shutil.copyfile(path, entry / path.name)

            stages.commit("disk", keep, sha256=artifacts.sha256(image), created=made.created)
    return found, made


def _copy_small(entry: Path, work: Path) -> list[str]:
    names = sorted(p.name for p in entry.iterdir() if p.name.endswith((".bmap", ".spdx.json", ".cdx.json")))
    for name in names:
        shutil.copyfile(entry / name, work / name)
    bmap = next(n for n in names if n.endswith(".bmap"))
    spdx = next(n for n in names if n.endswith(".spdx.json"))
    cdx = next(n for n in names if n.endswith(".cdx.json"))
    return [bmap, spdx, cdx]


def partitions(ctx: Context, stages: Stages) -> Inventory:
    """``ctx.partitions`` filled (from the cache, or by customize and filesystems)."""
    runner, spec, work = ctx.runner, ctx.spec, ctx.work
    with stages.lock("filesystems"):
        fs_entry, inv_entry = stages.cached("filesystems"), stages.cached("customize")
        if fs_entry is not None and inv_entry is not None:
            with runner.stage("filesystems", "from the cache"):
                for item in json.loads((fs_entry.path / "partitions.json").read_text()):
                    target = work / item.pop("file")
                    copy_file(fs_entry.path / target.name, target)
                    ctx.partitions.append(PartitionImage(path=target, **item))
                stages.used(fs_entry)
                stages.used(inv_entry)
            return Inventory.load(inv_entry.path / "inventory.json")
        rootfs(ctx, stages)
        ctx.epoch = reproducible.source_date_epoch(ctx.rootfs)
        os.environ["SOURCE_DATE_EPOCH"] = str(ctx.epoch)  # for every program the build runs from now on
        with (
            stages.lock("customize"),
            runner.stage("customize", "settings, users, files, services, scripts, initramfs"),
        ):
            customize.run(ctx)
            found = take_inventory(ctx)
            stages.commit("customize", lambda entry: found.save(entry / "inventory.json"))
        with runner.stage("filesystems", ", ".join(f"{p.name} ({p.fs})" for p in spec.layout.partitions)):
            filesystems.run(ctx)

            def keep(entry: Path) -> None:
                rows = []
                for part in ctx.partitions:
                    copy_file(part.path, entry / part.path.name)
                    row = {"name": part.name, "file": part.path.name, "size": part.size, "type": part.type}
                    rows.append({**row, "label": part.label, "bootable": part.bootable})
                (entry / "partitions.json").write_text(json.dumps(rows), encoding="utf-8")

            stages.commit("filesystems", keep)
    return found


def use_lock(spec: Spec, runner: Runner, lock_file: Path) -> lock.Lock:
    """The lock, checked against the config; its SOURCE_DATE_EPOCH for every program run."""
    found = lock.read(lock_file)
    for note in lock.check_spec(found, spec, facts.packages(spec)):
        runner.info(f"[yellow]note:[/yellow] {note}")
    given = os.environ.get("SOURCE_DATE_EPOCH")
    if given and given != str(found.source_date_epoch):
        runner.info(f"[yellow]note:[/yellow] SOURCE_DATE_EPOCH={given} from the environment, not the lock's")
    else:
        os.environ["SOURCE_DATE_EPOCH"] = str(found.source_date_epoch)
    runner.info(f"using {lock_file.name}: {len(found.packages)} locked packages")
    return found


def relock(ctx: Context, cache: Cache | None, tools: dict[str, str], lock_file: Path) -> lock.Lock:
    """Bootstrap afresh (never from the cache: a lock says what the mirror gives now) and
    write the lock of what was installed. The rootfs stays in the work directory."""
    spec = ctx.spec
    plans = plan.stages(spec, cache.salt if cache else b"", tools)
    rootfs(ctx, Stages(ctx, cache, plans, "bootstrap"))
    epoch = reproducible.source_date_epoch(ctx.rootfs)
    made = lock.make(spec, facts.packages(spec), installed_debs(ctx), epoch)
    try:
        old = lock.read(lock_file) if lock_file.exists() else None
    except ImagesmithError:  # a damaged lock is what a re-lock is for
        old = None
    lock.write(made, lock_file)
    made.path = lock_file
    changes = "unchanged" if old is not None and old.digest_input() == made.digest_input() else "written"
    ctx.runner.info(f"{lock_file}: {len(made.packages)} packages, SOURCE_DATE_EPOCH {epoch} ({changes})")
    if "SOURCE_DATE_EPOCH" not in os.environ:
        os.environ["SOURCE_DATE_EPOCH"] = str(epoch)
    return made


def lock_only(spec: Spec, runner: Runner, cache: Cache | None, lock_file: Path) -> lock.Lock:
    """`imagesmith lock`: the bootstrap, the lock file, and the bootstrap kept in the
    cache under the locked key (so the next locked build starts from it)."""
    customize.check_spec(spec)
    check_host(spec)
    scratch = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-lock-", dir=cache.root / "tmp" if cache else None))
    try:
        ctx = Context(spec=spec, runner=runner, work=scratch, debs=cache.debs if cache else None)
        tools = manifest.host_tools()
        made = relock(ctx, cache, tools, lock_file)
        if cache is not None:
            stages = Stages(ctx, cache, plan.stages(spec, cache.salt, tools, made), None)
            if stages.cached("bootstrap") is None:
                stages.commit("bootstrap", lambda entry: keep_bootstrap(ctx, entry))
        return made
    finally:
        remove_tree(scratch)


def rootfs(ctx: Context, stages: Stages) -> None:
    """The bootstrapped rootfs (and tools tree) in the work directory."""
    runner, spec, work = ctx.runner, ctx.spec, ctx.work
    if ctx.rootfs.is_dir():  # already made in this build (by a re-lock)
        return
    with stages.lock("bootstrap"):
        entry = stages.cached("bootstrap")
        if entry is not None:
            with runner.stage("bootstrap", "from the cache"):
                copy_tree(runner, entry.path / "rootfs", ctx.rootfs)
                copy_tree(runner, entry.path / COPYRIGHTS, work / COPYRIGHTS)
                shutil.copyfile(entry.path / lock.DEB_HASHES, work / lock.DEB_HASHES)
                if (entry.path / "tools").is_dir():
                    copy_tree(runner, entry.path / "tools", work / "tools")
                    ctx.tools_tree = work / "tools"
                stages.used(entry)
            return
        dist = spec.config.distribution
        if ctx.lock is not None:
            with runner.stage("lock", f"the mirror still has the {len(ctx.lock.packages)} locked versions"):
                lock.check_available(ctx.lock, spec)
        with runner.stage("bootstrap", f"{dist.name} {dist.suite} {spec.device.arch} with mmdebstrap"):
            bootstrap.run(ctx)
            if ctx.lock is not None:
                lock.check_installed(ctx.lock, installed_debs(ctx), spec.config_path)
            # kept now: a script that strips /usr/share/doc must not cost the SBOM its licences
            inventory.keep_copyrights(ctx.rootfs, work / COPYRIGHTS)

            stages.commit("bootstrap", lambda entry: keep_bootstrap(ctx, entry))


def keep_bootstrap(ctx: Context, entry: Path) -> None:
    """A bootstrap's cache entry: the rootfs, its copyright files, the tools tree, and the
    sha256 of the .deb files it was made from."""
    copy_tree(ctx.runner, ctx.rootfs, entry / "rootfs")
    copy_tree(ctx.runner, ctx.work / COPYRIGHTS, entry / COPYRIGHTS)
    shutil.copyfile(ctx.work / lock.DEB_HASHES, entry / lock.DEB_HASHES)
    if ctx.tools_tree is not None:
        copy_tree(ctx.runner, ctx.tools_tree, entry / "tools")


def installed_debs(ctx: Context) -> dict[tuple[str, str, str], str]:
    """(name, version, arch) → sha256 of the .deb, for every package dpkg installed."""
    hashes = lock.read_deb_hashes(ctx.work / lock.DEB_HASHES)
    found = {}
    for package in inventory.read_status(ctx.rootfs):
        key = (package.name, package.version, package.arch)
        found[key] = hashes.get(key, "")
    return found
