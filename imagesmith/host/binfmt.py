"""Facts about the build host that a build depends on, with the exact fix for each."""

from __future__ import annotations

from pathlib import Path

from imagesmith.errors import ImagesmithError
from imagesmith.host.requirements import install_command, native_arch

BINFMT = Path("/proc/sys/fs/binfmt_misc")
QEMU_NAMES = {"arm64": "qemu-aarch64", "amd64": "qemu-x86_64"}

__all__ = ["BINFMT", "QEMU_NAMES", "binfmt_enabled", "native_arch", "require_arch"]


def binfmt_enabled(arch: str, binfmt_dir: Path = BINFMT) -> bool:
    entry = binfmt_dir / QEMU_NAMES.get(arch, f"qemu-{arch}")
    try:
        return entry.read_text().splitlines()[0].strip() == "enabled"
    except (OSError, IndexError):
        return False


SYSTEMD_BINFMT = Path("/usr/lib/systemd/systemd-binfmt")


def systemd_binfmt(arch: str) -> Path | None:
    """qemu's binfmt.d file for ``arch`` when systemd-binfmt is there to load it (Debian 13's
    qemu-user-binfmt registers only this way; Debian 12's qemu-user-static both ways)."""
    conf = Path("/usr/lib/binfmt.d") / f"{QEMU_NAMES.get(arch, f'qemu-{arch}')}.conf"
    return conf if conf.is_file() and SYSTEMD_BINFMT.is_file() else None


def register_command(arch: str, by_systemd: bool) -> list[str]:
    """The command (as root) that registers qemu-user for ``arch`` with the kernel now."""
    name = QEMU_NAMES.get(arch, f"qemu-{arch}")
    if by_systemd:
        return [str(SYSTEMD_BINFMT), f"/usr/lib/binfmt.d/{name}.conf"]
    return ["update-binfmts", "--enable", name]


def require_arch(arch: str, binfmt_dir: Path = BINFMT) -> None:
    """Fail early, with the command that fixes it, if ``arch`` binaries cannot run here."""
    if arch == native_arch() or binfmt_enabled(arch, binfmt_dir):
        return
    name = QEMU_NAMES.get(arch, f"qemu-{arch}")
    register = " ".join(register_command(arch, systemd_binfmt(arch) is not None))
    fix = f"{install_command(['qemu-user-static', 'binfmt-support'])} && sudo {register}"
    if not (binfmt_dir / "status").exists():
        fix = f"sudo mount -t binfmt_misc binfmt_misc {binfmt_dir} && {fix}"
    raise ImagesmithError(
        f"cannot run {arch} programs on this {native_arch()} host: binfmt_misc has no enabled {name} entry",
        hint=f"enable it with: {fix}",
    )
