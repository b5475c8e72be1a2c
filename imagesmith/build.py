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
from dataclasses import dataclass
from pathlib import Path

from imagesmith import host, inventory, manifest, sbom, sign
from imagesmith.config.load import Spec
from imagesmith.errors import ImagesmithError
from imagesmith.rootfs import inside, remove_tree
from imagesmith.run import Runner
from imagesmith.stages import artifacts, bootstrap, customize, disk, filesystems
from imagesmith.stages.context import Context

WORK_PREFIX = ".imagesmith-work-"
COPYRIGHTS = "copyrights"
TOOLS = {
    "mmdebstrap": "mmdebstrap",
    "mke2fs": "e2fsprogs",
    "mkfs.vfat": "dosfstools",
    "mcopy": "mtools",
    "sfdisk": "fdisk",
    "bmaptool": "bmap-tools",
    "unshare": "util-linux",
}


@dataclass
class Result:
    image: Path
    outputs: list[Path]
    table: dict[str, object]


def check_host(spec: Spec) -> None:
    missing = sorted({pkg for tool, pkg in TOOLS.items() if shutil.which(tool) is None})
    if missing:
        raise ImagesmithError(
            f"missing host tools from: {', '.join(missing)}",
            hint=f"sudo apt-get install {' '.join(missing)}   (or run ./dev build, which installs them)",
        )
    if os.geteuid() != 0:
        raise ImagesmithError(
            "building an image needs root for now (mmdebstrap --mode=root)",
            hint="run it with sudo",
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


def audit(ctx: Context, image: Path, table: dict[str, object], signing_key: Path | None) -> list[Path]:
    """SBOMs, manifest, checksums and signature; returns every file to publish, SHA256SUMS last."""
    spec, work = ctx.spec, ctx.work
    name = spec.config.name
    bmap = artifacts.bmap(ctx, image)
    packages, roots = inventory.collect(spec, ctx.rootfs, work / COPYRIGHTS)
    os_release = inside(ctx.rootfs, "/etc/os-release")
    created = artifacts.created()
    subject = sbom.Subject(
        name=name,
        file=image.name,
        sha256=artifacts.sha256(image),
        arch=spec.device.arch,
        distro=sbom.distro_of(
            os_release.read_text() if os_release.is_file() else "", spec.config.distribution.suite
        ),
        created=created,
    )
    spdx, cdx = work / f"{name}.spdx.json", work / f"{name}.cdx.json"
    sbom.write_spdx(subject, packages, spdx)
    sbom.write_cyclonedx(subject, packages, cdx)
    files = [image, bmap, spdx, cdx]
    data = manifest.build_manifest(spec, packages, table, files, roots, created.isoformat())
    manifest.write(data, work / manifest.NAME)
    files.append(work / manifest.NAME)
    sums = work / artifacts.SUMS
    artifacts.checksums(files, sums)
    if signing_key is not None:
        sign.sign(sums, signing_key, work / sign.SIG)
        files.append(work / sign.SIG)
    ctx.runner.detail(f"{len(packages)} packages in the SBOMs and the manifest")
    return [*files, sums]


def build(spec: Spec, output: Path, runner: Runner, signing_key: Path | None = None) -> Result:
    customize.check_spec(spec)
    check_host(spec)
    key = signing_key or (Path(spec.config.signing_key) if spec.config.signing_key else None)
    if key is not None:
        sign.load_private_key(key)  # a bad key fails now, not after a long build
    output.mkdir(parents=True, exist_ok=True)
    remove_stale_work(output)
    work = Path(tempfile.mkdtemp(prefix=f"{WORK_PREFIX}{os.getpid()}-", dir=output))
    name = spec.config.name
    try:
        ctx = Context(spec=spec, runner=runner, work=work)
        dist = spec.config.distribution
        with runner.stage("bootstrap", f"{dist.name} {dist.suite} {spec.device.arch} with mmdebstrap"):
            bootstrap.run(ctx)
            # kept now: a script that strips /usr/share/doc must not cost the SBOM its licences
            inventory.keep_copyrights(ctx.rootfs, work / COPYRIGHTS)
        with runner.stage("customize", "settings, users, files, services, scripts, initramfs"):
            customize.run(ctx)
        with runner.stage("filesystems", ", ".join(f"{p.name} ({p.fs})" for p in spec.layout.partitions)):
            filesystems.run(ctx)
        image = work / f"{name}.img"
        with runner.stage("disk", f"{spec.layout.table} partition table → {image.name}"):
            disk.run(ctx, image)
            table = disk.read_table(ctx, image)
        with runner.stage("artifacts", "block map, SBOMs, manifest, checksums"):
            *files, sums = audit(ctx, image, table, key)
            outputs = publish(files, sums, output)
        return Result(output / image.name, outputs, table)
    finally:
        remove_tree(work)
