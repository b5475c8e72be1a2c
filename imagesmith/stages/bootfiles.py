"""The boot configuration and boot files, as the device's boot method and kernel want them.

- ``direct-kernel`` (virtual machines): the newest kernel and initrd under fixed names,
  and cmdline.txt, for ``qemu -kernel``.
- ``raspi-firmware`` with Debian's kernel: Debian's raspi-firmware hooks fill
  /boot/firmware (kernel, initrd, device trees, config.txt, cmdline.txt) from
  /etc/default/raspi-firmware*, which imagesmith writes before the hooks run.
- ``raspi-firmware`` with the Raspberry Pi kernel (``image:`` in the device's kernel): the
  Raspberry Pi OS way. The kernel and initramfs go under the names the firmware loads
  (kernel8.img and initramfs8, or kernel_2712.img and initramfs_2712), the device trees
  and overlays come from the kernel package, and imagesmith writes config.txt and
  cmdline.txt itself, after every hook has run (Debian's hook would write
  ``upstream_kernel=1``, which is wrong for this kernel).
- U-Boot's A/B boot counter (``stages/uboot.py``), on either: the boot partition holds
  U-Boot, its script and the boot state, and each root slot its own kernel.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from imagesmith.config.facts import boots_through_uboot, kernel_arguments
from imagesmith.config.load import Spec
from imagesmith.disk import ids
from imagesmith.errors import ImagesmithError
from imagesmith.host.rootfs import inside
from imagesmith.stages import deferred, uboot

FIRMWARE = "/boot/firmware"


def write(rootfs: Path, path: str, text: str, mode: int = 0o644) -> None:
    """Write a file in the image; a symlink there is followed (inside the image)."""
    host = inside(rootfs, path)
    host.parent.mkdir(parents=True, exist_ok=True)
    host.write_text(text, encoding="utf-8")
    os.chmod(host, mode)


def cmdline(spec: Spec) -> str:
    """The kernel command line (slot A's in an A/B layout): the root read-only with
    ``read_only``."""
    root = ids.root_device(spec.identity)
    # without an initramfs the kernel mounts the root as told: read-only, so that systemd
    # checks it before it remounts it read-write (fstab)
    mode = "ro" if spec.config.read_only or spec.config.slim.initramfs else "rw"
    line = f"console=tty0 console={spec.console} root={root} {mode} fsck.repair=yes rootwait"
    return " ".join([line, *kernel_arguments(spec)]) + "\n"


def before_hooks(spec: Spec, rootfs: Path) -> None:
    """What the kernel's hooks read: written before they run at the end of customize."""
    root = ids.root_device(spec.identity)
    if spec.device.boot == "direct-kernel":
        write(rootfs, f"{FIRMWARE}/cmdline.txt", cmdline(spec))
        return
    # Debian's hook writes "rw" before these: the last of ro/rw wins
    extra = " ".join([*kernel_arguments(spec), *(["ro"] if spec.config.read_only else [])])
    write(
        rootfs,
        "/etc/default/raspi-firmware",
        "# written by imagesmith: read by raspi-firmware's kernel and initramfs hooks\n"
        f'ROOTPART="{root}"\nCONSOLES="tty0 {spec.console}"\nCMA=0\n',
    )
    custom = [*spec.device.firmware_config, *spec.config.config_txt]
    # the hooks append these files when they exist, so only write them with content
    for path, text in (
        ("/etc/default/raspi-firmware-custom", "".join(f"{line}\n" for line in custom)),
        ("/etc/default/raspi-extra-cmdline", f"{extra}\n" if extra else ""),
    ):
        if text:
            write(rootfs, path, text)
        else:
            inside(rootfs, path).unlink(missing_ok=True)


def after_hooks(spec: Spec, rootfs: Path, epoch: int) -> None:
    """The boot files that imagesmith places itself, once the hooks have run; with U-Boot's
    boot counter, U-Boot and its script instead of the kernel (``stages/uboot.py``)."""
    with_uboot = boots_through_uboot(spec)
    if spec.device.boot == "direct-kernel" and not with_uboot:
        direct_kernel_files(rootfs)
    elif spec.kernel.image is not None:
        raspberrypi_files(spec, rootfs)
    if with_uboot:
        uboot.place(spec, rootfs, cmdline(spec), newest_kernel(rootfs), epoch)


def newest_kernel(rootfs: Path) -> str:
    versions = deferred.kernel_versions(rootfs)
    if not versions:
        raise ImagesmithError("no kernel was installed", hint="the device's kernel packages must install one")
    return versions[-1]


def _copy(rootfs: Path, source: str, target: str) -> None:
    """Copy a file of the image to another place in it; neither end is followed out of it."""
    to = inside(rootfs, target, follow_last=False)
    to.unlink(missing_ok=True)
    shutil.copyfile(inside(rootfs, source), to)


def direct_kernel_files(rootfs: Path) -> None:
    """The newest kernel and initrd, under fixed names, where `qemu -kernel` finds them."""
    version = newest_kernel(rootfs)
    inside(rootfs, FIRMWARE).mkdir(parents=True, exist_ok=True)
    _copy(rootfs, f"/boot/vmlinuz-{version}", f"{FIRMWARE}/vmlinuz")
    _copy(rootfs, f"/boot/initrd.img-{version}", f"{FIRMWARE}/initrd.img")


def config_txt(spec: Spec) -> str:
    kernel = spec.kernel
    lines = [
        f"# written by imagesmith for the {spec.kernel_name} kernel ({', '.join(kernel.packages)})",
        "arm_64bit=1",
        "enable_uart=1",
        f"kernel={kernel.image}",
        *([] if spec.config.slim.initramfs else [f"initramfs {kernel.initramfs} followkernel"]),
        *spec.device.firmware_config,
        *spec.config.config_txt,
    ]
    return "\n".join(lines) + "\n"


def raspberrypi_files(spec: Spec, rootfs: Path) -> None:
    """/boot/firmware as Raspberry Pi OS lays it out, for the newest installed kernel."""
    kernel = spec.kernel
    assert kernel.image is not None and kernel.initramfs is not None
    version = newest_kernel(rootfs)
    firmware = inside(rootfs, FIRMWARE)
    firmware.mkdir(parents=True, exist_ok=True)
    # what Debian's raspi-firmware hook may have left: its copies under package names
    for stale in [*firmware.glob("vmlinuz-*"), *firmware.glob("initrd.img-*")]:
        stale.unlink()
    _copy(rootfs, f"/boot/vmlinuz-{version}", f"{FIRMWARE}/{kernel.image}")
    initrd = f"/boot/initrd.img-{version}"
    if spec.config.slim.initramfs:  # none: the kernel mounts the root itself
        inside(rootfs, f"{FIRMWARE}/{kernel.initramfs}", follow_last=False).unlink(missing_ok=True)
    elif not inside(rootfs, initrd).is_file():
        raise ImagesmithError(
            f"the kernel {version} has no initramfs ({initrd})",
            hint="the device's packages must include initramfs-tools",
        )
    else:
        _copy(rootfs, initrd, f"{FIRMWARE}/{kernel.initramfs}")
    trees = inside(rootfs, f"/usr/lib/linux-image-{version}")
    dtbs = sorted(trees.glob("broadcom/*.dtb")) if trees.is_dir() else []
    if not dtbs:
        raise ImagesmithError(
            f"the kernel {version} ships no device trees in /usr/lib/linux-image-{version}/broadcom",
            hint=f"check that {', '.join(kernel.packages)} is the Raspberry Pi kernel package",
        )
    for dtb in dtbs:
        _copy(rootfs, f"/usr/lib/linux-image-{version}/broadcom/{dtb.name}", f"{FIRMWARE}/{dtb.name}")
    overlays = inside(rootfs, f"{FIRMWARE}/overlays", follow_last=False)
    if overlays.is_symlink() or overlays.is_file():
        overlays.unlink()
    elif overlays.is_dir():
        shutil.rmtree(overlays)
    shipped = trees / "overlays"
    if shipped.is_dir() and not shipped.is_symlink():
        overlays.mkdir()
        for item in sorted(shipped.iterdir()):
            if item.is_file() and not item.is_symlink():
                shutil.copyfile(item, overlays / item.name)
    write(rootfs, f"{FIRMWARE}/config.txt", config_txt(spec))
    write(rootfs, f"{FIRMWARE}/cmdline.txt", cmdline(spec))
