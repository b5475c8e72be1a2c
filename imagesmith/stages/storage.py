"""Field-ready storage in the image: the data partition and a read-only root.

A layout with a data partition (the A/B layouts) gets an initramfs script
(``catalog/storage/``) that checks the data partition (making it anew when it is blank or
damaged), grows it once to the end of the disk and mounts it at /data before the system's
init runs. With ``read_only: true`` the same script makes /etc an overlay kept on data,
/var an overlay in memory, and binds the ``persist:`` directories from data; the root is
mounted read-only (``ro``). The packages the script runs (busybox, e2fsprogs, fdisk) are
added in ``config/facts.py``. ``/usr/lib/imagesmith/etc.sha256`` lists what the root ships
in /etc, so that after an update the new root's changed files win over local copies. The
tryboot layout also gets ``imagesmith-tryboot``, which reads and writes the firmware's
boot state (autoboot.txt) and is a RAUC custom bootloader backend.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from imagesmith.config import catalog
from imagesmith.config.load import Spec
from imagesmith.disk import ids
from imagesmith.errors import config_error
from imagesmith.host.rootfs import inside
from imagesmith.outputs.files import sha256
from imagesmith.stages.bootfiles import write

FILES = catalog.CATALOG / "storage"
ENV = "/usr/lib/imagesmith/storage.env"
ETC_SUMS = "/usr/lib/imagesmith/etc.sha256"
TRYBOOT_ENV = "/usr/lib/imagesmith/tryboot.env"


def check(spec: Spec) -> None:
    """Before a build: what the config asks of the storage, the layout and device can give."""
    layout, config = spec.layout, spec.config
    for key, wanted in (("read_only", config.read_only), ("persist", bool(config.persist))):
        if wanted and layout.data is None:
            raise config_error(
                f"{key} needs a data partition, and layout {layout.layout!r} has none",
                spec.locate(key),
                "use layout ab, ab-gpt or ab-tryboot, or a layout of your own with a partition of role data",
            )
    if config.persist and not config.read_only:
        raise config_error(
            "persist keeps directories of a read-only root on the data partition",
            spec.locate("persist"),
            "set read_only: true, or leave persist out (a writable root keeps everything)",
        )
    if layout.role("boot-a") is not None:
        if spec.device.boot != "raspi-firmware":
            raise config_error(
                f"layout {layout.layout!r} has boot slots for the Raspberry Pi firmware's tryboot; "
                f"device {spec.device.device} does not boot with it",
                spec.locate("layout"),
                "use layout ab or ab-gpt",
            )
        if not spec.kernel.tryboot:
            raise config_error(
                f"layout {layout.layout!r} needs a kernel that can ask the firmware for a tryboot; "
                f"the {spec.kernel_name} kernel of device {spec.device.device} cannot",
                spec.locate("layout"),
                "add the layer raspberrypi-archive (the Raspberry Pi kernel) on a Pi 4, Pi 5, CM4 or CM5 "
                "(`imagesmith devices` shows which kernels can), or use layout ab",
            )


def environment(spec: Spec) -> str:
    """The initramfs script's settings: where data is (by PARTUUID, which a blank
    partition also has), its label, and what a read-only root keeps."""
    data = spec.layout.data
    assert data is not None
    number = ids.number(spec.identity, "data")
    return (
        "# written by imagesmith: read by the initramfs script imagesmith-storage\n"
        f"DATA_DEVICE=/dev/disk/by-partuuid/{ids.partuuid(spec.identity, number)}\n"
        f"DATA_LABEL={data.label}\n"
        f"READ_ONLY={'yes' if spec.config.read_only else 'no'}\n"
        f'PERSIST="{" ".join(spec.config.persist)}"\n'
    )


def install(spec: Spec, rootfs: Path) -> None:
    """The initramfs hook and script, their settings, and the mount points they use:
    before the initramfs is made (customize's deferred jobs)."""
    if spec.layout.data is None:
        return
    for relative in ("hooks/imagesmith-storage", "scripts/init-bottom/imagesmith-storage"):
        source = FILES / "initramfs-tools" / relative
        write(rootfs, f"/usr/share/initramfs-tools/{relative}", source.read_text(encoding="utf-8"), 0o755)
    rule = (FILES / "etc-update-rule").read_text(encoding="utf-8")
    write(rootfs, "/usr/lib/imagesmith/etc-update-rule", rule, 0o755)
    write(rootfs, ENV, environment(spec))
    for path in ["/data", *spec.config.persist]:
        inside(rootfs, path).mkdir(parents=True, exist_ok=True)
    if spec.layout.role("boot-a") is not None:
        tool = (FILES / "tryboot" / "imagesmith-tryboot").read_text(encoding="utf-8")
        write(rootfs, "/usr/sbin/imagesmith-tryboot", tool, 0o755)
        write(rootfs, TRYBOOT_ENV, tryboot_environment(spec))


def tryboot_environment(spec: Spec) -> str:
    """imagesmith-tryboot's settings: the common boot partition (by PARTUUID), the boot
    slots' partition numbers, where the slots' states are kept."""
    common = next(i for i, p in enumerate(spec.layout.partitions, 1) if p.role == "boot")
    return (
        "# written by imagesmith: read by imagesmith-tryboot\n"
        f"AUTOBOOT=/dev/disk/by-partuuid/{ids.partuuid(spec.identity, common)}\n"
        f"BOOT_A={ids.number(spec.identity, 'boot-a')}\n"
        f"BOOT_B={ids.number(spec.identity, 'boot-b')}\n"
        "STATE=/data/.imagesmith/tryboot.state\n"
        "CHOSEN=/proc/device-tree/chosen/bootloader\n"
        "REBOOT_PARAM=/run/systemd/reboot-param\n"
    )


def etc_sums(rootfs: Path) -> str:
    """``sha256  path`` of every file and link under /etc (a link: of its target), sorted:
    what this root ships there."""
    etc = inside(rootfs, "/etc")
    lines = []
    for dirpath, dirnames, filenames in os.walk(etc):
        dirnames.sort()
        for name in sorted([*filenames, *(d for d in dirnames if os.path.islink(os.path.join(dirpath, d)))]):
            path = Path(dirpath) / name
            relative = str(path.relative_to(etc))
            if "\n" in relative:
                continue
            if path.is_symlink():
                digest = hashlib.sha256(b"link:" + os.fsencode(os.readlink(path))).hexdigest()
            elif path.is_file():
                digest = sha256(path)
            else:
                continue
            lines.append(f"{digest}  {relative}")
    return "".join(f"{line}\n" for line in sorted(lines, key=lambda ln: ln[66:]))


def finish(spec: Spec, rootfs: Path) -> None:
    """Last in customize: the list of what /etc holds, for the update rule."""
    if spec.config.read_only:
        write(rootfs, ETC_SUMS, etc_sums(rootfs))


def autoboot_txt(spec: Spec) -> str:
    """The tryboot common boot partition's only file: boot slot A, and slot B on a tryboot."""
    a, b = ids.number(spec.identity, "boot-a"), ids.number(spec.identity, "boot-b")
    return f"[all]\ntryboot_a_b=1\nboot_partition={a}\n[tryboot]\nboot_partition={b}\n"


def slot_b_boot(spec: Spec, tree_a: Path, tree_b: Path) -> None:
    """Boot slot B: boot slot A's files, with a cmdline.txt that names root slot B."""
    if tree_b.exists():
        shutil.rmtree(tree_b)
    shutil.copytree(tree_a, tree_b, symlinks=True)
    cmdline = tree_b / "cmdline.txt"
    root_a, root_b = ids.root_device(spec.identity, "a"), ids.root_device(spec.identity, "b")
    text = cmdline.read_text(encoding="utf-8") if cmdline.is_file() else ""
    if f"root={root_a}" not in text.split():
        raise AssertionError(f"boot slot A's cmdline.txt does not name root={root_a}: {text!r}")
    cmdline.write_text(
        " ".join(f"root={root_b}" if w == f"root={root_a}" else w for w in text.split()) + "\n"
    )
