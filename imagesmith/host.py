"""Facts about the build host that a build depends on, with the exact fix for each."""

from __future__ import annotations

import platform
from pathlib import Path

from imagesmith.errors import ImagesmithError

BINFMT = Path("/proc/sys/fs/binfmt_misc")
QEMU_NAMES = {"arm64": "qemu-aarch64", "amd64": "qemu-x86_64"}
NATIVE = {"x86_64": "amd64", "aarch64": "arm64"}


def native_arch() -> str:
    return NATIVE.get(platform.machine(), platform.machine())


def binfmt_enabled(arch: str, binfmt_dir: Path = BINFMT) -> bool:
    entry = binfmt_dir / QEMU_NAMES.get(arch, f"qemu-{arch}")
    try:
        return entry.read_text().splitlines()[0].strip() == "enabled"
    except (OSError, IndexError):
        return False


def require_arch(arch: str, binfmt_dir: Path = BINFMT) -> None:
    """Fail early, with the command that fixes it, if ``arch`` binaries cannot run here."""
    if arch == native_arch() or binfmt_enabled(arch, binfmt_dir):
        return
    name = QEMU_NAMES.get(arch, f"qemu-{arch}")
    fix = f"sudo apt-get install qemu-user-static binfmt-support && sudo update-binfmts --enable {name}"
    if not (binfmt_dir / "status").exists():
        fix = (
            "sudo mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc && "
            f"sudo apt-get install qemu-user-static binfmt-support && sudo update-binfmts --enable {name}"
        )
    raise ImagesmithError(
        f"cannot run {arch} programs on this {native_arch()} host: binfmt_misc has no enabled {name} entry",
        hint=f"enable it with: {fix}",
    )
