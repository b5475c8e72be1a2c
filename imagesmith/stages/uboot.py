"""The U-Boot boot counter of the A/B layouts without boot slots (``ab``, ``ab-gpt``).

The device's firmware runs U-Boot (the catalog's ``uboot:`` build, copied to the boot
partition as u-boot.bin), U-Boot runs ``boot.scr`` from the boot partition, and the
script follows RAUC's U-Boot contract: ``BOOT_ORDER`` names the slots in the order to try,
``BOOT_A_LEFT`` and ``BOOT_B_LEFT`` the attempts each has left (hexadecimal). It takes the
first slot in the order with attempts left, takes one away, saves the state, and boots that
slot's own kernel and initramfs (``/boot/vmlinuz`` and ``/boot/initrd.img`` in the slot,
so an update brings its kernel) with ``rauc.slot=A|B``. No slot with attempts left: both
get their attempts back and the device resets.

The state is kept twice on the boot partition, ``uboot.env`` and ``uboot-redund.env``,
in U-Boot's redundant environment format (CRC-32, a counter byte, the variables) that
``fw_printenv``/``fw_setenv`` (libubootenv) read and write on Linux: each write goes to the
older copy with the counter one higher, and the newer valid copy is read. A copy cut short
or damaged is skipped (its CRC fails), so the device boots from the state before the last
write, never from U-Boot's defaults while one copy is good.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

from imagesmith.config import catalog
from imagesmith.config.load import Spec
from imagesmith.disk import ids
from imagesmith.errors import ImagesmithError
from imagesmith.host.rootfs import inside

FIRMWARE = "/boot/firmware"
ENV_FILES = ("uboot.env", "uboot-redund.env")
ENV_SIZE = 0x4000  # each copy; what /etc/fw_env.config says too
KERNEL = "/boot/vmlinuz"
INITRD = "/boot/initrd.img"
FW_ENV_CONFIG = "/etc/fw_env.config"
SCRIPT = catalog.CATALOG / "storage" / "uboot" / "boot.cmd"


def boot_partition(spec: Spec) -> int | None:
    """The FAT partition at /boot/firmware (U-Boot, its script and the state), by number."""
    found = (i for i, p in enumerate(spec.layout.partitions, 1) if p.mount == FIRMWARE and p.fs == "vfat")
    return next(found, None)


def initial_state(attempts: int) -> dict[str, str]:
    return {"BOOT_ORDER": "A B", "BOOT_A_LEFT": f"{attempts:x}", "BOOT_B_LEFT": f"{attempts:x}"}


def environment_copy(variables: dict[str, str], counter: int) -> bytes:
    """One copy in U-Boot's redundant format: CRC-32 of the data (little-endian), the
    counter byte, then ``key=value`` strings, each ended by a NUL, padded with NULs."""
    data = b"".join(f"{key}={value}".encode() + b"\0" for key, value in variables.items()) + b"\0"
    room = ENV_SIZE - 5
    if len(data) > room:
        raise ImagesmithError(f"the boot state does not fit in {ENV_SIZE} bytes")
    data = data.ljust(room, b"\0")
    return struct.pack("<IB", zlib.crc32(data), counter) + data


def read_copy(raw: bytes) -> tuple[int, dict[str, str]] | None:
    """A copy's counter and variables; None when it is damaged (its CRC fails)."""
    if len(raw) != ENV_SIZE:
        return None
    crc, counter = struct.unpack("<IB", raw[:5])
    data = raw[5:]
    if zlib.crc32(data) != crc:
        return None
    variables = {}
    for item in data.split(b"\0"):
        if not item:
            break
        key, _, value = item.decode(errors="replace").partition("=")
        variables[key] = value
    return counter, variables


def script_image(text: str, epoch: int, name: str = "imagesmith boot counter") -> bytes:
    """``text`` as a U-Boot script image (what ``mkimage -A arm64 -T script -C none``
    makes): the 64-byte legacy header, then the script's length list and the script."""
    payload = struct.pack(">II", len(text.encode()), 0) + text.encode()
    # magic, header CRC (0 while it is computed), time, size, load and entry addresses,
    # data CRC, then the OS (Linux), architecture (arm64), type (script), compression (none)
    fields = (0x27051956, 0, epoch, len(payload), 0, 0, zlib.crc32(payload), 5, 22, 6, 0)
    layout = ">IIIIIIIBBBB32s"
    header = struct.pack(layout, *fields, name.encode()[:32])
    crc = zlib.crc32(header)
    return struct.pack(layout, *fields[:1], crc, *fields[2:], name.encode()[:32]) + payload


def kernel_arguments(command_line: str) -> str:
    """The command line without ``root=``: the script adds the slot's."""
    return " ".join(word for word in command_line.split() if not word.startswith("root="))


def boot_script(spec: Spec, command_line: str) -> str:
    """The boot script (``catalog/storage/uboot/boot.cmd``) with this layout's partitions,
    the slots' root devices, the attempts and the rest of the command line filled in."""
    update = spec.config.update
    values = {
        "BOOT": str(boot_partition(spec) or 1),
        "ATTEMPTS": f"{update.attempts if update else 3:x}",
        "ARGS": kernel_arguments(command_line),
    }
    for slot in "AB":
        values[f"PART_{slot}"] = str(ids.number(spec.identity, f"root-{slot.lower()}"))
        values[f"ROOT_{slot}"] = ids.root_device(spec.identity, slot.lower())
    text = SCRIPT.read_text(encoding="utf-8")
    for name, value in values.items():
        text = text.replace(f"@{name}@", value)
    return text


def fw_env_config() -> str:
    lines = ["# written by imagesmith: the boot state's two copies (fw_printenv, fw_setenv)"]
    lines += [f"{FIRMWARE}/{name} 0x0000 {ENV_SIZE:#x}" for name in ENV_FILES]
    return "\n".join(lines) + "\n"


def config_txt(spec: Spec) -> str:
    """The Raspberry Pi firmware's config.txt: it runs U-Boot, which boots the slot."""
    lines = [
        "# written by imagesmith: the firmware runs U-Boot, whose boot.scr boots slot A or B",
        "arm_64bit=1",
        "enable_uart=1",
        "kernel=u-boot.bin",
        *spec.device.firmware_config,
        *spec.config.config_txt,
    ]
    return "\n".join(lines) + "\n"


def put(rootfs: Path, name: str, data: bytes) -> None:
    """A new file on the boot partition (whatever was there, a link too, goes first)."""
    path = inside(rootfs, f"{FIRMWARE}/{name}", follow_last=False)
    path.unlink(missing_ok=True)
    path.write_bytes(data)


def place(spec: Spec, rootfs: Path, command_line: str, version: str, epoch: int) -> None:
    """After the kernel's hooks: U-Boot and its script and state on the boot partition, the
    slot's kernel under fixed names; the kernel copies the hooks left there go (the slot's
    own are booted)."""
    from imagesmith.stages.bootfiles import write  # bootfiles calls this module

    uboot = spec.device.uboot
    assert uboot is not None
    firmware = inside(rootfs, FIRMWARE)
    firmware.mkdir(parents=True, exist_ok=True)
    binary = inside(rootfs, uboot.binary)
    if not binary.is_file():
        raise ImagesmithError(
            f"U-Boot is not at {uboot.binary} in the image",
            hint=f"the catalog's device {spec.device.device} names it; check that {uboot.package} ships it",
        )
    put(rootfs, "u-boot.bin", binary.read_bytes())
    kernel = spec.kernel
    for pattern in ("vmlinuz*", "initrd.img*", "cmdline.txt", kernel.image, kernel.initramfs):
        for path in firmware.glob(pattern) if pattern else []:
            if path.is_file() or path.is_symlink():
                path.unlink()
    put(rootfs, "boot.scr", script_image(boot_script(spec, command_line), epoch))
    state = initial_state(spec.config.update.attempts if spec.config.update else 3)
    for name, counter in zip(ENV_FILES, (1, 0), strict=True):
        put(rootfs, name, environment_copy(state, counter))
    if spec.device.boot == "raspi-firmware":
        write(rootfs, f"{FIRMWARE}/config.txt", config_txt(spec))
    write(rootfs, FW_ENV_CONFIG, fw_env_config())
    for link, target in ((KERNEL, f"vmlinuz-{version}"), (INITRD, f"initrd.img-{version}")):
        host = inside(rootfs, link, follow_last=False)
        host.unlink(missing_ok=True)
        if not inside(rootfs, f"/boot/{target}").is_file():
            raise ImagesmithError(f"the kernel {version} has no /boot/{target}", hint="the slot boots it")
        host.symlink_to(target)
