"""Partition tables, dos (MBR) and gpt: the sfdisk script that writes one, partition type
names and defaults, and which types hold a FAT filesystem.

Everything that depends on the kind of table is here; stages, ``ids``, ``qemu`` and
``reprodiff`` ask this module instead of comparing MBR type codes themselves.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

SECTOR = 512
MiB = 1024 * 1024
#: partitions (and filesystem sizes) start and end on this boundary
ALIGN = 4 * MiB
#: room after the last partition for the backup GPT (33 sectors; 1 MiB keeps alignment)
GPT_BACKUP = 1024 * 1024

#: GPT partition type GUIDs by the short names layouts may use
GPT_TYPES = {
    "esp": "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
    "basic-data": "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7",
    "linux": "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
    "root-arm64": "B921B045-1DF0-41C3-AF44-4C6F280D3FAE",
    "root-amd64": "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709",
}
#: MBR type codes that mean FAT (12, 16, 32, with and without LBA, and the EFI partition)
DOS_FAT = {"1", "4", "6", "b", "c", "e", "ef"}
GPT_FAT = {GPT_TYPES["esp"], GPT_TYPES["basic-data"]}
_GUID = re.compile(r"^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$")
_HEX = re.compile(r"^[0-9a-fA-F]{1,2}$")


def align(size: int, to: int = ALIGN) -> int:
    return (size + to - 1) // to * to


def default_type(table: str, fs: str) -> str:
    """The type of a partition whose layout names none: FAT or Linux data."""
    if table == "gpt":
        return GPT_TYPES["basic-data"] if fs == "vfat" else GPT_TYPES["linux"]
    return "c" if fs == "vfat" else "83"


def normalise_type(table: str, value: str) -> str:
    """A layout's type (a code, a GUID or a short name) as sfdisk writes it; ValueError
    names what the table accepts."""
    if table == "gpt":
        if value.lower() in GPT_TYPES:
            return GPT_TYPES[value.lower()]
        if _GUID.match(value):
            return value.upper()
        raise ValueError(f"a gpt partition type is a GUID or one of {', '.join(GPT_TYPES)}, not {value!r}")
    if _HEX.match(value):
        return value.lower()
    raise ValueError(f"a dos partition type is a hex code such as c or 83, not {value!r}")


def holds_fat(type_: str) -> bool:
    """Whether a partition of this type (as sfdisk --json shows it) is a FAT filesystem."""
    return type_.lower() in DOS_FAT or type_.upper() in GPT_FAT


@dataclass(frozen=True)
class Entry:
    """One partition as the table records it."""

    start: int  # bytes
    size: int  # bytes
    type: str
    uuid: str  # gpt: the partition's GUID (dos: unused)
    name: str  # gpt: the partition's name (dos: unused)
    bootable: bool


def script(table: str, disk_id: str, entries: Sequence[Entry]) -> str:
    """The sfdisk script of a table: ``disk_id`` is the MBR signature (8 hex digits) or
    the GPT disk GUID."""
    label_id = f"0x{disk_id}" if table == "dos" else disk_id
    lines = [f"label: {table}", f"label-id: {label_id}", "unit: sectors", ""]
    for entry in entries:
        fields = [f"start={entry.start // SECTOR}", f"size={entry.size // SECTOR}", f"type={entry.type}"]
        if table == "gpt":
            fields += [f"uuid={entry.uuid}", f'name="{entry.name}"']
        elif entry.bootable:
            fields.append("bootable")
        lines.append(", ".join(fields))
    return "\n".join(lines) + "\n"


def tail_room(table: str) -> int:
    """Bytes a table needs after the last partition."""
    return GPT_BACKUP if table == "gpt" else 0
