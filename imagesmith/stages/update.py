"""RAUC in the image: its system.conf (the compatible string, the slots of the layout, the
boot state's keeper) and the keyring of the certificates the device trusts.

The slots are named by PARTUUID, which both the slots and RAUC see the same way. The
tryboot layout keeps its boot state with ``imagesmith-tryboot`` (RAUC's custom bootloader
backend, see ``stages/storage.py``); the ``ab`` layouts with U-Boot's boot counter
(``stages/uboot.py``), which RAUC reads and writes with fw_printenv/fw_setenv.

Every boot, ``imagesmith-mark-good.service`` marks the booted slot good once the system
has reached its target and the config's health command succeeded; otherwise it reboots,
and the boot counter falls. ``update.watchdog`` sets systemd's hardware watchdog.
"""

from __future__ import annotations

from pathlib import Path

from imagesmith.config import catalog
from imagesmith.config.facts import boots_through_uboot, update_compatible
from imagesmith.config.load import Spec
from imagesmith.disk import ids
from imagesmith.errors import config_error
from imagesmith.host.rootfs import inside
from imagesmith.stages.bootfiles import write
from imagesmith.stages.uboot import boot_partition as uboot_boot_partition

SYSTEM_CONF = "/etc/rauc/system.conf"
KEYRING = "/etc/rauc/keyring.pem"
FILES = catalog.CATALOG / "storage" / "update"
MARK_GOOD = "/usr/lib/imagesmith/mark-good"
HEALTH = "/usr/lib/imagesmith/health"
UNIT = "imagesmith-mark-good.service"
WATCHDOG = "/etc/systemd/system.conf.d/imagesmith-watchdog.conf"


def check(spec: Spec) -> None:
    """Before a build: bundles need A/B slots and a way to switch between them."""
    if spec.config.update is None:
        return
    layout = spec.layout
    if not layout.slotted:
        raise config_error(
            f"update bundles need A/B slots, and layout {layout.layout!r} has one root",
            spec.locate("update"),
            "use layout ab or ab-gpt (U-Boot's boot counter), or ab-tryboot (Pi 4, Pi 5, CM4, CM5 with the "
            "Raspberry Pi kernel)",
        )
    uboot = spec.device.uboot
    if boots_through_uboot(spec) and uboot is None:
        raise config_error(
            f"layout {layout.layout!r} switches slots with U-Boot's boot counter, and the catalog has no "
            f"U-Boot for device {spec.device.device}",
            spec.locate("update"),
            "use layout ab-tryboot, whose slots the Raspberry Pi firmware switches (tryboot); "
            "`imagesmith devices` shows which A/B method each device has",
        )
    if boots_through_uboot(spec) and uboot_boot_partition(spec) is None:
        raise config_error(
            f"layout {layout.layout!r} has no FAT partition at /boot/firmware, where U-Boot's boot counter "
            "keeps U-Boot, its script and the boot state",
            spec.locate("layout"),
            "give the layout's boot partition `fs: vfat` and `mount: /boot/firmware`, as layout ab has",
        )
    update = spec.config.update
    if boots_through_uboot(spec) and update.attempts != 3 and spec.config.distribution.suite == "bookworm":
        raise config_error(
            "update.attempts other than 3 needs RAUC 1.10 or later (boot-attempts); Debian 12 has 1.8",
            spec.locate("update", "attempts"),
            "leave attempts out (3), or build for Debian 13 (distribution.suite: trixie)",
        )


def system_conf(spec: Spec) -> str:
    update = spec.config.update
    assert update is not None
    uboot = boots_through_uboot(spec)
    lines = [
        "# written by imagesmith",
        "[system]",
        f"compatible={update_compatible(spec)}",
        f"bootloader={'uboot' if uboot else 'custom'}",
        "mountprefix=/run/rauc/mnt",  # /mnt is on the read-only root
        "data-directory=/data/rauc",
    ]
    if uboot and update.attempts != 3:  # RAUC's default: 3 (the keys need RAUC 1.10)
        lines += [f"boot-attempts={update.attempts}", f"boot-attempts-primary={update.attempts}"]
    if not uboot:
        lines += ["", "[handlers]", "bootloader-custom-backend=/usr/sbin/imagesmith-tryboot"]
    lines += ["", "[keyring]", f"path={KEYRING}"]
    for slot, index in (("A", 0), ("B", 1)):
        root = ids.number(spec.identity, f"root-{slot.lower()}")
        lines += [
            "",
            f"[slot.rootfs.{index}]",
            f"device=/dev/disk/by-partuuid/{ids.partuuid(spec.identity, root)}",
            "type=ext4",
            f"bootname={slot}",
        ]
        if uboot:
            continue
        boot = ids.number(spec.identity, f"boot-{slot.lower()}")
        lines += [
            "",
            f"[slot.bootfs.{index}]",
            f"device=/dev/disk/by-partuuid/{ids.partuuid(spec.identity, boot)}",
            "type=vfat",
            f"parent=rootfs.{index}",
        ]
    return "\n".join(lines) + "\n"


def health_script(command: str) -> str:
    return f"#!/bin/sh\n# written by imagesmith: the config's update.health\n{command}\n"


def install(spec: Spec, rootfs: Path) -> None:
    update = spec.config.update
    if update is None:
        return
    write(rootfs, SYSTEM_CONF, system_conf(spec))
    keyring = Path(update.keyring or update.cert).read_text(encoding="utf-8")
    write(rootfs, KEYRING, keyring)
    write(rootfs, MARK_GOOD, (FILES / "mark-good").read_text(encoding="utf-8"), 0o755)
    write(rootfs, f"/usr/lib/systemd/system/{UNIT}", (FILES / UNIT).read_text(encoding="utf-8"))
    wants = inside(rootfs, f"/etc/systemd/system/multi-user.target.wants/{UNIT}", follow_last=False)
    wants.parent.mkdir(parents=True, exist_ok=True)
    wants.unlink(missing_ok=True)
    wants.symlink_to(f"/usr/lib/systemd/system/{UNIT}")
    if update.health is not None:
        write(rootfs, HEALTH, health_script(update.health), 0o755)
    if update.watchdog is not None:
        text = f"# written by imagesmith: update.watchdog\n[Manager]\nRuntimeWatchdogSec={update.watchdog}\n"
        write(rootfs, WATCHDOG, text)
