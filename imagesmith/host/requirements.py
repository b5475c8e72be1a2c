"""The one list of what the build host needs: each Debian package, the commands of it that
imagesmith (or its test suite) runs, and what it is needed for.

Everything that asks "what must be installed" reads this list: ``./dev`` (which installs
it), ``imagesmith doctor`` (which checks it), a build's check of the host, the hint of a
command that is not found, the stage keys (the versions of the packages a stage calls)
and the manifest (the versions that made the image).

This module uses the standard library only: ``./dev`` runs it with the system's python3
before imagesmith's own environment exists::

    python3 -m imagesmith.host.requirements --for build --for boot --arch arm64
"""

from __future__ import annotations

import argparse
import platform
from collections.abc import Iterable
from dataclasses import dataclass

#: What a package can be needed for. ``foreign``: a build for an architecture the host
#: cannot run natively; ``rootless``: a build by an ordinary user; ``boot``: `imagesmith
#: boot` (per architecture, see ``BOOT``); ``signing``: making signing keys as the README
#: shows; ``update``: a build that makes update bundles (``update:``); ``test``: the test
#: suite (everything).
PURPOSES = ("build", "foreign", "rootless", "boot", "signing", "update", "test")
NATIVE = {"x86_64": "amd64", "aarch64": "arm64"}


@dataclass(frozen=True)
class Requirement:
    package: str
    tools: tuple[str, ...]  # the commands of it that are run (empty: data, or a library)
    why: str
    purposes: tuple[str, ...]
    stages: tuple[str, ...] = ()  # build stages whose output its version can change
    arches: tuple[str, ...] = ()  # boot: only for images of these architectures
    minimum: tuple[str, str] | None = None  # (oldest good version, what needs it)


REQUIREMENTS: tuple[Requirement, ...] = (
    Requirement("python3", ("python3",), "runs imagesmith", ("build",)),
    Requirement("python3-venv", (), "imagesmith's own Python environment (.venv)", ("build",)),
    Requirement("ca-certificates", (), "https mirrors and the Python package index", ("build",)),
    Requirement(
        "mmdebstrap",
        ("mmdebstrap",),
        "bootstraps the root filesystem",
        ("build",),
        stages=("bootstrap", "packages"),
        minimum=("1.0.0", "hooks and --skip options"),
    ),
    Requirement(
        "apt", ("apt-get",), "resolves and downloads packages", ("build",), stages=("bootstrap", "packages")
    ),
    Requirement("dpkg", ("dpkg-query",), "installs packages", ("build",), stages=("bootstrap", "packages")),
    Requirement("debian-archive-keyring", (), "verifies Debian's signed package indexes", ("build",)),
    Requirement("gpg", ("gpg",), "reads the keys of extra apt sources (their fingerprints)", ("build",)),
    Requirement(
        "util-linux",
        ("unshare",),
        "private namespaces for every step",
        ("build",),
        stages=("bootstrap", "packages", "customize"),
        minimum=("2.35", "unshare --kill-child and sfdisk --json"),
    ),
    Requirement(
        "fdisk", ("sfdisk",), "writes and reads partition tables", ("build", "boot"), stages=("disk",)
    ),
    Requirement(
        "dosfstools",
        ("mkfs.vfat", "fsck.vfat"),
        "makes and checks FAT boot partitions",
        ("build",),
        stages=("filesystems",),
    ),
    Requirement(
        "mtools",
        ("mcopy",),
        "writes and reads FAT partitions without mounting them",
        ("build", "boot"),
        stages=("filesystems",),
    ),
    Requirement(
        "e2fsprogs",
        ("mke2fs", "e2fsck", "debugfs"),
        "makes and checks ext4 partitions without mounting them",
        ("build",),
        stages=("filesystems",),
        minimum=("1.45.0", "mke2fs -d with root_owner and hash_seed"),
    ),
    Requirement(
        "bmap-tools", ("bmaptool",), "writes the block map for fast flashing", ("build",), stages=("disk",)
    ),
    Requirement("tzdata", (), "checks time zone names before a long build", ("build",)),
    Requirement("locales", (), "checks locale names before a long build", ("build",)),
    Requirement(
        "qemu-user-static",
        (),
        "runs the target's programs during the build",
        ("foreign",),
        stages=("bootstrap", "packages", "customize"),
    ),
    Requirement("binfmt-support", ("update-binfmts",), "registers qemu-user with the kernel", ("foreign",)),
    Requirement(
        "arch-test", ("arch-test",), "mmdebstrap checks that the target's programs run", ("foreign",)
    ),
    Requirement(
        "uidmap", ("newuidmap", "newgidmap"), "maps subordinate ids into the user namespace", ("rootless",)
    ),
    Requirement("qemu-utils", ("qemu-img",), "a copy-on-write overlay of the booted image", ("boot",)),
    Requirement(
        "qemu-system-arm", ("qemu-system-aarch64",), "boots arm64 images", ("boot",), arches=("arm64",)
    ),
    Requirement(
        "qemu-system-x86", ("qemu-system-x86_64",), "boots amd64 images", ("boot",), arches=("amd64",)
    ),
    Requirement(
        "openssl", ("openssl",), "makes signing keys (the README's commands, the tests)", ("signing",)
    ),
    Requirement("rauc", ("rauc",), "makes and checks update bundles (update:)", ("update",)),
    Requirement("squashfs-tools", ("mksquashfs",), "the file system of an update bundle", ("update",)),
    Requirement("xz-utils", ("xz",), "compresses published images (publish.compress: xz)", ("build",)),
    Requirement(
        "zstd", ("zstd",), "compresses published images and shared cache entries (--cache-remote)", ("build",)
    ),
    Requirement("tar", ("tar",), "packs and unpacks shared cache entries (--cache-remote)", ("build",)),
    Requirement("cpio", ("cpio",), "the test suite lists the images' initramfs", ("test",)),
    Requirement("u-boot-qemu", (), "the test suite runs the A/B boot script in U-Boot for qemu", ("test",)),
    Requirement(
        "libubootenv-tool", ("fw_setenv",), "the test suite writes the boot state as a device does", ("test",)
    ),
    Requirement(
        "docker-registry",
        ("docker-registry",),
        "the test suite's OCI registry for the shared stage cache (on 127.0.0.1)",
        ("test",),
    ),
)
#: architectures ``boot`` can start
BOOT_ARCHES = ("arm64", "amd64")


def native_arch() -> str:
    return NATIVE.get(platform.machine(), platform.machine())


def needed(purposes: Iterable[str], arches: Iterable[str], native: str | None = None) -> list[Requirement]:
    """What ``purposes`` need for targets of ``arches``; ``foreign`` is added by itself
    when a build purpose meets an architecture other than the host's, and ``boot`` needs
    the emulator of each architecture asked for."""
    wanted = set(purposes)
    unknown = wanted - set(PURPOSES)
    if unknown:
        raise ValueError(f"unknown purpose {sorted(unknown)[0]!r}: one of {', '.join(PURPOSES)}")
    targets = set(arches)
    if "test" in wanted:  # the test suite builds and boots every kind
        wanted |= set(PURPOSES)
        targets |= set(BOOT_ARCHES)
    if "build" in wanted and targets - {native or native_arch()}:
        wanted.add("foreign")
    return [
        req
        for req in REQUIREMENTS
        if wanted & set(req.purposes) and (not req.arches or targets & set(req.arches))
    ]


def packages(purposes: Iterable[str], arches: Iterable[str], native: str | None = None) -> list[str]:
    return [req.package for req in needed(purposes, arches, native)]


def for_stage(stage: str) -> list[str]:
    """The packages whose version can change what ``stage`` makes (part of its cache key)."""
    return [req.package for req in REQUIREMENTS if stage in req.stages]


def recorded() -> list[str]:
    """The packages whose versions the manifest records: those whose tools make the image."""
    return [req.package for req in REQUIREMENTS if req.stages]


def provider(tool: str) -> Requirement | None:
    """The requirement whose package provides the command ``tool``."""
    name = tool.rsplit("/", 1)[-1]
    return next((req for req in REQUIREMENTS if name in req.tools), None)


def install_command(names: Iterable[str]) -> str:
    return "sudo apt-get install --no-install-recommends " + " ".join(names)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python3 -m imagesmith.host.requirements",
        description="Print the Debian packages the build host needs, one per line.",
    )
    parser.add_argument("--for", dest="purposes", action="append", choices=PURPOSES, default=[])
    parser.add_argument("--arch", dest="arches", action="append", default=[])
    args = parser.parse_args(argv)
    for name in packages(args.purposes or ["build"], args.arches or [native_arch()]):
        print(name)


if __name__ == "__main__":
    main()
