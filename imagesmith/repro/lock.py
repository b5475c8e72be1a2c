"""The lock file: the exact package set a config resolved to, so builds repeat it.

``CONFIG.lock`` (next to the config) records the suite, mirror (and snapshot timestamp
of a snapshot-style mirror), the packages the config asks for, every installed package
with its exact version, architecture and the sha256 of its .deb, and the
SOURCE_DATE_EPOCH. A locked build pins apt to those versions, first checks that the
mirror still has them, and afterwards that it installed exactly them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

from pydantic import Field

from imagesmith import redact
from imagesmith.config.facts import components
from imagesmith.config.load import Spec
from imagesmith.config.model import Strict
from imagesmith.config.nodes import load_yaml
from imagesmith.config.validate import validate
from imagesmith.errors import ImagesmithError, Location, config_error
from imagesmith.repro import mirror

FORMAT = 1
#: apt preferences written into the rootfs during the bootstrap only
PREFERENCES = "/etc/apt/preferences.d/imagesmith-lock.pref"
#: what the bootstrap writes next to the rootfs: the sha256 of every .deb it installed
DEB_HASHES = "debs.sha256"


class LockedPackage(Strict):
    name: str
    version: str
    architecture: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    archive: str | None = None  # the extra source it came from (absent: the distribution's mirror)


class LockedSource(Strict):
    """An extra apt source as the lock was made from it."""

    name: str
    url: str
    suites: list[str]
    components: list[str]
    key_fingerprints: list[str]


class LockFile(Strict):
    format: int
    suite: str
    mirror: str
    snapshot: str | None = None
    architecture: str
    components: list[str]
    source_date_epoch: int = Field(ge=1)
    requested: list[str]
    sources: list[LockedSource] = Field(default_factory=list)
    packages: list[LockedPackage]


@dataclass
class Lock:
    suite: str
    mirror: str
    snapshot: str | None
    architecture: str
    components: list[str]
    source_date_epoch: int
    requested: list[str]
    packages: list[LockedPackage] = field(default_factory=list)
    path: Path | None = None
    sources: list[LockedSource] = field(default_factory=list)

    def digest_input(self) -> list[object]:
        """What a build takes from the lock (the bootstrap's cache key covers it)."""
        return [self.source_date_epoch, [p.model_dump() for p in self.packages]]


def path_for(config_path: Path, variant: str | None = None) -> Path:
    """``minimal.yaml`` → ``minimal.yaml.lock``; a variant has its own lock."""
    if variant:
        return config_path.with_name(f"{config_path.stem}.{variant}{config_path.suffix}.lock")
    return config_path.with_name(config_path.name + ".lock")


def relock_command(lock: Lock, config: Path) -> str:
    """The command that makes ``lock`` again (with its variant, if it has one)."""
    name = lock.path.name if lock.path is not None else ""
    variant = name.removeprefix(config.stem + ".").removesuffix(config.suffix + ".lock")
    extra = f" --variant {variant}" if name != config.name + ".lock" and variant and variant != name else ""
    return f"`imagesmith lock {config}{extra}` (or build with --update-lock)"


def deb_filename_fields(filename: str) -> tuple[str, str, str] | None:
    """(name, version, architecture) of an apt archive file name
    ``name_version_arch.deb`` (apt writes the epoch's ':' as %3a)."""
    if not filename.endswith(".deb"):
        return None
    parts = filename[: -len(".deb")].split("_")
    if len(parts) != 3:
        return None
    return parts[0], unquote(parts[1]), parts[2]


def read_deb_hashes(path: Path) -> dict[tuple[str, str, str], str]:
    """``sha256sum`` output over apt's archive → (name, version, arch) → sha256."""
    found: dict[tuple[str, str, str], str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        digest, _, filename = line.partition("  ")
        fields = deb_filename_fields(Path(filename).name)
        if fields is not None:
            found[fields] = digest
    return found


def make(
    spec: Spec,
    requested: list[str],
    installed: dict[tuple[str, str, str], str],
    epoch: int,
    sources: list[LockedSource] | None = None,
    archives: dict[str, str] | None = None,
) -> Lock:
    """The lock of what a bootstrap installed: (name, version, arch) → sha256 of the .deb
    ("" when the bootstrap kept none); ``sources``: the extra sources, ``archives``:
    ``name:arch`` → the one a package came from."""
    dist = spec.config.distribution
    packages = []
    missing = []
    for (name, version, arch), digest in sorted(installed.items()):
        if not digest:
            missing.append(f"{name} {version}")
            continue
        archive = (archives or {}).get(f"{name}:{arch}")
        packages.append(
            LockedPackage(name=name, version=version, architecture=arch, sha256=digest, archive=archive)
        )
    if missing:
        raise ImagesmithError(
            f"no downloaded .deb for {', '.join(missing[:5])}{' …' if len(missing) > 5 else ''}",
            hint="the bootstrap kept no archive file for these packages; report this as a bug",
        )

    return Lock(
        suite=dist.suite,
        mirror=redact.strip_url(dist.mirror),  # credentials stay out of the lock
        snapshot=mirror.snapshot_of(redact.strip_url(dist.mirror)),
        architecture=spec.device.arch,
        components=components(spec),
        source_date_epoch=epoch,
        requested=requested,
        packages=packages,
        sources=list(sources or []),
    )


def write(lock: Lock, path: Path) -> None:
    """A YAML file with one package per line (JSON scalars: exact, and stable to diff)."""

    def j(value: object) -> str:
        return json.dumps(value, ensure_ascii=False)

    lines = [
        "# imagesmith lock file: the exact packages this config builds with.",
        "# Made by `imagesmith lock`; refresh it with `imagesmith lock` or `imagesmith build --update-lock`.",
        f"format: {FORMAT}",
        f"suite: {j(lock.suite)}",
        f"mirror: {j(lock.mirror)}",
        f"snapshot: {j(lock.snapshot)}",
        f"architecture: {j(lock.architecture)}",
        f"components: {j(lock.components)}",
        f"source_date_epoch: {lock.source_date_epoch}",
        f"requested: {j(lock.requested)}",
    ]
    if lock.sources:
        lines.append("sources:")
        for source in lock.sources:
            lines.append("  - {" + ", ".join(f"{k}: {j(v)}" for k, v in source.model_dump().items()) + "}")
    lines.append("packages:")
    for p in lock.packages:
        fields = ", ".join(f"{k}: {j(v)}" for k, v in p.model_dump(exclude_none=True).items())
        lines.append(f"  - {{{fields}}}")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(path)


def read(path: Path) -> Lock:
    tree = load_yaml(path)
    data = validate(LockFile, tree, f"lock file {path.name}")
    if data.format != FORMAT:
        raise config_error(
            f"lock file format {data.format} is not supported (this imagesmith writes {FORMAT})",
            tree.locate(("format",)),
            "make it again with `imagesmith lock`",
        )
    fields = data.model_dump(exclude={"format", "packages", "sources"})
    return Lock(**fields, packages=data.packages, path=path, sources=data.sources)


def check_spec(lock: Lock, spec: Spec, requested: list[str]) -> list[str]:
    """Problems that make the lock wrong for this config (it was made for another);
    notes (returned) for differences a build may live with."""
    assert lock.path is not None
    where = Location(lock.path)
    relock = f"make it again: {relock_command(lock, spec.config_path)}"
    dist = spec.config.distribution

    for what, locked, now in [
        ("suite", lock.suite, dist.suite),
        ("architecture", lock.architecture, spec.device.arch),
        ("components", lock.components, components(spec)),
    ]:
        if locked != now:
            raise config_error(
                f"the lock was made for {what} {locked}, the config now says {now}", where, relock
            )
    if lock.requested != requested:
        added = sorted(set(requested) - set(lock.requested))
        dropped = sorted(set(lock.requested) - set(requested))
        change = ", ".join([*(f"+{n}" for n in added), *(f"-{n}" for n in dropped)])
        raise config_error(f"the config's packages changed since the lock was made: {change}", where, relock)
    notes = []
    if lock.mirror != redact.strip_url(dist.mirror):
        notes.append(
            f"the lock was made from {lock.mirror}; building from {redact.strip_url(dist.mirror)} "
            "(every package is still checked against the lock's versions and sha256)"
        )
    return notes


def preferences(lock: Lock) -> str:
    """apt preferences that make every locked version the candidate (and allow nothing else
    to win): priority over 1000 also wins over a newer version in the index."""
    stanzas = [f"Package: {p.name}\nPin: version {p.version}\nPin-Priority: 1001\n" for p in lock.packages]
    return "\n".join(stanzas)


def unavailable(lock: Lock, index: mirror.Index) -> list[str]:
    """Locked packages the mirror no longer offers at that version (or offers changed)."""
    problems = []
    for p in lock.packages:
        versions = index.versions(p.name, p.architecture)
        if p.version not in versions:
            now = ", ".join(sorted(versions)) or "no version at all"
            problems.append(f"{p.name} {p.version} ({p.architecture}): the mirror has {now}")
        elif versions[p.version] != p.sha256:
            problems.append(f"{p.name} {p.version}: the mirror's .deb has another sha256 than the lock's")
    return problems


def check_available(lock: Lock, spec: Spec) -> None:
    dist = spec.config.distribution
    index = mirror.fetch(dist.mirror, dist.suite, lock.components, lock.architecture)
    for source in spec.config.sources:  # packages may come from the extra sources too
        for suite in source.suites or [dist.suite]:
            index = index.merged(mirror.fetch(source.url, suite, list(source.components), lock.architecture))
    problems = unavailable(lock, index)
    if problems:
        shown = "\n".join(problems[:20]) + (
            f"\n… and {len(problems) - 20} more" if len(problems) > 20 else ""
        )
        snapshot = (
            ""
            if lock.snapshot
            else "; to build these old versions, point the mirror at a snapshot "
            "(e.g. https://snapshot.debian.org/archive/debian/<timestamp>) and lock again"
        )
        raise ImagesmithError(
            f"{len(problems)} locked package version(s) can no longer be had from "
            + redact.strip_url(dist.mirror),
            details=shown,
            hint=f"re-lock: {relock_command(lock, spec.config_path)}{snapshot}",
        )


def check_installed(
    lock: Lock, installed: dict[tuple[str, str, str], str], config: Path, partial: bool = False
) -> None:
    """The installs put in exactly the locked packages, from the locked .deb files
    (``partial``: the bootstrap, before the config's own packages: nothing else)."""
    locked = {(p.name, p.version, p.architecture): p.sha256 for p in lock.packages}
    problems = []
    for key in [] if partial else sorted(locked.keys() - installed.keys()):
        problems.append(f"not installed: {' '.join(key)}")
    for key in sorted(installed.keys() - locked.keys()):
        problems.append(f"not in the lock: {' '.join(key)}")
    for key in sorted(locked.keys() & installed.keys()):
        if locked[key] != installed[key]:
            problems.append(f"sha256 differs: {' '.join(key)}")
    if problems:
        raise ImagesmithError(
            f"the installs did not put in exactly the locked packages ({len(problems)} difference(s))",
            details="\n".join(problems[:30]),
            hint=f"re-lock: {relock_command(lock, config)}",
        )
