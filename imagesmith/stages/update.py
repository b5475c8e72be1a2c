"""RAUC in the image: its system.conf (the compatible string, the slots of the layout, the
boot state's keeper) and the keyring of the certificates the device trusts.

The slots are named by PARTUUID, which both the slots and RAUC see the same way. The
tryboot layout keeps its boot state with ``imagesmith-tryboot`` (RAUC's custom bootloader
backend, see ``stages/storage.py``); the U-Boot boot counter of the ``ab`` layouts is not
built yet, so ``update:`` there is a config error that says so.
"""

from __future__ import annotations

from pathlib import Path

from imagesmith.config.facts import update_compatible
from imagesmith.config.load import Spec
from imagesmith.disk import ids
from imagesmith.errors import config_error
from imagesmith.stages.bootfiles import write

SYSTEM_CONF = "/etc/rauc/system.conf"
KEYRING = "/etc/rauc/keyring.pem"


def check(spec: Spec) -> None:
    """Before a build: bundles need A/B slots and a way to switch between them."""
    if spec.config.update is None:
        return
    layout = spec.layout
    if not layout.slotted:
        raise config_error(
            f"update bundles need A/B slots, and layout {layout.layout!r} has one root",
            spec.locate("update"),
            "use layout ab-tryboot (Pi 4, Pi 5, CM4, CM5 with the Raspberry Pi kernel)",
        )
    if layout.role("boot-a") is None:
        raise config_error(
            f"layout {layout.layout!r} switches slots with U-Boot's boot counter, which imagesmith does not "
            "build yet",
            spec.locate("update"),
            "use layout ab-tryboot, whose slots the Raspberry Pi firmware switches (tryboot)",
        )


def system_conf(spec: Spec) -> str:
    lines = [
        "# written by imagesmith",
        "[system]",
        f"compatible={update_compatible(spec)}",
        "bootloader=custom",
        "mountprefix=/run/rauc/mnt",  # /mnt is on the read-only root
        "data-directory=/data/rauc",
        "",
        "[handlers]",
        "bootloader-custom-backend=/usr/sbin/imagesmith-tryboot",
        "",
        "[keyring]",
        f"path={KEYRING}",
    ]
    for slot, index in (("A", 0), ("B", 1)):
        root = ids.number(spec.identity, f"root-{slot.lower()}")
        boot = ids.number(spec.identity, f"boot-{slot.lower()}")
        lines += [
            "",
            f"[slot.rootfs.{index}]",
            f"device=/dev/disk/by-partuuid/{ids.partuuid(spec.identity, root)}",
            "type=ext4",
            f"bootname={slot}",
            "",
            f"[slot.bootfs.{index}]",
            f"device=/dev/disk/by-partuuid/{ids.partuuid(spec.identity, boot)}",
            "type=vfat",
            f"parent=rootfs.{index}",
        ]
    return "\n".join(lines) + "\n"


def install(spec: Spec, rootfs: Path) -> None:
    update = spec.config.update
    if update is None:
        return
    write(rootfs, SYSTEM_CONF, system_conf(spec))
    keyring = Path(update.keyring or update.cert).read_text(encoding="utf-8")
    write(rootfs, KEYRING, keyring)
