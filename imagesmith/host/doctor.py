"""`imagesmith doctor`: is this host ready to build, and if not, the exact fix for each gap.

The host's facts are gathered once (``gather``) and judged by pure functions (``checks``),
so every check is tested with made-up facts. ``--fix`` (as root) runs the fixes.
"""

from __future__ import annotations

import os
import pwd
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from debian.debian_support import Version

from imagesmith.host import binfmt as host
from imagesmith.host import requirements, userns
from imagesmith.host.run import Runner

TARBALL_INPUT = "1.47.1"  # mke2fs -d reads a tarball from this version on
SYSCTL_FILE = "/etc/sysctl.d/60-imagesmith-userns.conf"


@dataclass
class Facts:
    """What the checks look at; ``gather`` reads them from this host."""

    euid: int
    user: str  # who will build
    native: str
    packages: dict[str, str]  # installed Debian package → version
    binfmt_mounted: bool
    binfmt: dict[str, bool]  # architecture → qemu entry enabled
    subuid: dict[str, list[userns.Range]]  # user → ranges, every user in /etc/subuid
    subgid: dict[str, list[userns.Range]]
    sysctl: dict[str, int | None]  # name → value (None: this kernel has no such setting)
    newuidmap_setuid: bool
    binfmt_d: set[str] = field(default_factory=set)  # architectures systemd-binfmt can register


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: list[list[str]] = field(default_factory=list)  # commands, run as root in order


SYSCTLS = {
    "kernel.unprivileged_userns_clone": "/proc/sys/kernel/unprivileged_userns_clone",
    "user.max_user_namespaces": "/proc/sys/user/max_user_namespaces",
    "kernel.apparmor_restrict_unprivileged_userns": "/proc/sys/kernel/apparmor_restrict_unprivileged_userns",
}


def _read_int(path: str) -> int | None:
    try:
        return int(Path(path).read_text().strip())
    except (OSError, ValueError):
        return None


def _ranges(path: Path) -> dict[str, list[userns.Range]]:
    found: dict[str, list[userns.Range]] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return found
    for line in lines:
        fields = line.strip().split(":")
        if len(fields) == 3 and fields[1].isdigit() and fields[2].isdigit():
            found.setdefault(fields[0], []).append(userns.Range(int(fields[1]), int(fields[2])))
    return found


def gather(runner: Runner, user: str, arches: list[str]) -> Facts:
    out = runner.run(
        ["dpkg-query", "-W", "-f", "${Package}\t${Version}\t${db:Status-Abbrev}\n"], capture=True
    )
    packages = {}
    for line in out.splitlines():
        name, version, status = [*line.split("\t"), "", ""][:3]
        if status.startswith("ii"):
            packages[name.split(":")[0]] = version
    newuidmap = Path("/usr/bin/newuidmap")
    return Facts(
        euid=os.geteuid(),
        user=user,
        native=host.native_arch(),
        packages=packages,
        binfmt_mounted=(host.BINFMT / "status").exists(),
        binfmt={arch: host.binfmt_enabled(arch) for arch in arches},
        binfmt_d={arch for arch in arches if host.systemd_binfmt(arch) is not None},
        subuid=_ranges(Path("/etc/subuid")),
        subgid=_ranges(Path("/etc/subgid")),
        sysctl={name: _read_int(path) for name, path in SYSCTLS.items()},
        newuidmap_setuid=newuidmap.exists() and bool(newuidmap.stat().st_mode & stat.S_ISUID),
    )


def free_range(facts: Facts) -> userns.Range:
    """A subordinate range no user has yet, starting at 100000 or after the last one."""
    ends = [r.start + r.count for table in (facts.subuid, facts.subgid) for rs in table.values() for r in rs]
    return userns.Range(max([100000, *ends]), userns.NEEDED)


def checks(facts: Facts, arches: list[str], purposes: tuple[str, ...] = ("build",)) -> list[Check]:
    """Every check for building (and ``purposes``: boot, test) images of ``arches``."""
    found: list[Check] = []
    building = bool({"build", "test"} & set(purposes))
    rootless = facts.user != "root" and building
    wanted = requirements.needed([*purposes, *(["rootless"] if rootless else [])], arches, facts.native)
    missing = [req.package for req in wanted if req.package not in facts.packages]
    found.append(
        Check(
            "host packages",
            not missing,
            f"missing: {' '.join(missing)}" if missing else f"{len(wanted)} packages installed",
            [["apt-get", "install", "-y", "--no-install-recommends", *missing]] if missing else [],
        )
    )
    for req in wanted:
        have = facts.packages.get(req.package)
        if have is None or req.minimum is None:
            continue
        minimum, why = req.minimum
        package = req.package
        old = Version(have) < Version(minimum)
        found.append(
            Check(
                f"{package} version",
                not old,
                f"{have} is older than {minimum}, needed for {why}" if old else have,
                [["apt-get", "install", "-y", "--only-upgrade", package]] if old else [],
            )
        )
    e2fs = facts.packages.get("e2fsprogs")
    if rootless and e2fs is not None and Version(e2fs) < Version(TARBALL_INPUT):
        found.append(
            Check(
                "mke2fs tarball input",
                True,
                f"mke2fs {e2fs} cannot read a tarball; not needed: imagesmith runs mke2fs -d on the "
                "tree inside the build's user namespace",
            )
        )
    for arch in arches:
        if arch == facts.native or not building:
            continue
        name = host.QEMU_NAMES.get(arch, f"qemu-{arch}")
        fix = (
            [] if facts.binfmt_mounted else [["mount", "-t", "binfmt_misc", "binfmt_misc", str(host.BINFMT)]]
        )
        enabled = facts.binfmt_mounted and facts.binfmt.get(arch, False)
        found.append(
            Check(
                f"{arch} programs (binfmt_misc)",
                enabled,
                f"{name} is enabled" if enabled else f"binfmt_misc has no enabled {name} entry",
                [] if enabled else [*fix, host.register_command(arch, arch in facts.binfmt_d)],
            )
        )
    if rootless:
        found += rootless_checks(facts)
    return found


def rootless_checks(facts: Facts) -> list[Check]:
    found = []
    spare = free_range(facts)
    span = f"{spare.start}-{spare.start + spare.count - 1}"
    for kind, table, option in (
        ("subuid", facts.subuid, "--add-subuids"),
        ("subgid", facts.subgid, "--add-subgids"),
    ):
        have = userns.usable(table.get(facts.user, []))
        found.append(
            Check(
                f"/etc/{kind} range for {facts.user}",
                have is not None,
                f"{have.start}+{have.count}" if have else f"no range of {userns.NEEDED} ids for {facts.user}",
                [] if have else [["usermod", option, span, facts.user]],
            )
        )
    found.append(
        Check(
            "newuidmap and newgidmap",
            facts.newuidmap_setuid,
            "setuid root" if facts.newuidmap_setuid else "missing or not setuid root",
            [] if facts.newuidmap_setuid else [["apt-get", "install", "-y", "--reinstall", "uidmap"]],
        )
    )
    wanted: dict[str, tuple[Callable[[int], bool], int]] = {
        "kernel.unprivileged_userns_clone": (lambda v: v != 0, 1),
        "user.max_user_namespaces": (lambda v: v > 0, 10000),
        "kernel.apparmor_restrict_unprivileged_userns": (lambda v: v == 0, 0),
    }
    for name, (good, value) in wanted.items():
        now = facts.sysctl.get(name)
        if now is None:
            continue  # this kernel has no such switch
        ok = good(now)
        found.append(
            Check(
                f"user namespaces ({name})",
                ok,
                f"{name} = {now}" + ("" if ok else ": unprivileged user namespaces are disabled"),
                []
                if ok
                else [
                    ["sysctl", "-w", f"{name}={value}"],
                    ["sh", "-c", f"echo '{name} = {value}' >> {SYSCTL_FILE}"],
                ],
            )
        )
    return found


def builder(user: str | None) -> str:
    """Whom to check for: --user, else the user behind sudo, else whoever runs this."""
    if user:
        return user
    if os.geteuid() == 0 and os.environ.get("SUDO_USER"):
        return os.environ["SUDO_USER"]
    return pwd.getpwuid(os.getuid()).pw_name
