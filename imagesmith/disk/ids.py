"""Identifiers that tools would make random, derived from the config instead, and the
facts later stages read from the layout: the root partition, fstab and ``root=``.

The disk signature, filesystem UUIDs and FAT volume ids come from a hash of the image's
name, device and layout, so rebuilding the same image gives the same identifiers (and
the same root= argument), while two different images do not collide.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass

from imagesmith.disk.layout import Layout


@dataclass(frozen=True)
class Identity:
    """What the identifiers are derived from: the image's name, its device and layout."""

    name: str
    device: str
    layout: Layout


def derived(identity: Identity, purpose: str) -> bytes:
    seed = "\0".join(["imagesmith", identity.name, identity.device, identity.layout.layout, purpose])
    return hashlib.sha256(seed.encode()).digest()


def disk_signature(identity: Identity) -> str:
    """The MBR disk identifier as 8 hex digits (never 0, which means 'none')."""
    value = int.from_bytes(derived(identity, "disk")[:4], "big") or 1
    return f"{value:08x}"


def disk_id(identity: Identity) -> str:
    """The partition table's own identifier: the MBR signature, or the GPT disk GUID."""
    if identity.layout.table == "gpt":
        return str(uuid.UUID(bytes=derived(identity, "gpt-disk")[:16], version=4))
    return disk_signature(identity)


def partuuid(identity: Identity, index: int) -> str:
    """PARTUUID of partition ``index`` (1-based), as the kernel and blkid show it: the
    MBR's ``signature-NN``, or the partition's GPT GUID."""
    if identity.layout.table == "gpt":
        return str(uuid.UUID(bytes=derived(identity, f"gpt-part:{index}")[:16], version=4))
    return f"{disk_signature(identity)}-{index:02x}"


def fs_id(identity: Identity, partition: str) -> str:
    """The filesystem's identifier (UUID, FAT volume id) as its kind derives it."""
    from imagesmith.disk import fs

    part = next(p for p in identity.layout.partitions if p.name == partition)
    if part.role == "root-b":  # a copy of slot A's root, byte for byte
        part = identity.layout.root
    return fs.get(part.fs).fs_id(identity, part.name)


def device(identity: Identity, index: int) -> str:
    """How fstab and the kernel name partition ``index`` (1-based)."""
    layout = identity.layout
    if layout.root_by == "label":
        return f"LABEL={layout.partitions[index - 1].label}"
    return f"PARTUUID={partuuid(identity, index)}"


def number(identity: Identity, role: str) -> int:
    """The partition number (1-based) of the partition with ``role``."""
    return next(i for i, p in enumerate(identity.layout.partitions, 1) if p.role == role)


def root_device(identity: Identity, slot: str = "a") -> str:
    """How the kernel command line names the root filesystem (of ``slot`` in an A/B layout)."""
    layout = identity.layout
    if layout.slotted:
        return device(identity, number(identity, f"root-{slot}"))
    return device(identity, layout.partitions.index(layout.root) + 1)


def fstab(identity: Identity, data_mounted_early: bool = False) -> str:
    """The image's fstab. In an A/B layout the same file is in both root slots, so it names
    no slot: the root is mounted from ``root=`` (and stays read-only with ``ro``), slot
    partitions are not mounted. A data partition that the initramfs mounts and checks is
    listed without a check of its own."""
    from imagesmith.disk import fs

    lines = ["# <device> <mount point> <type> <options> <dump> <pass>"]
    for index, part in enumerate(identity.layout.partitions, start=1):
        if part.mount is None or part.slot is not None or part.role == "raw":
            continue
        mount, check = ("/", 1) if part.role == "root" else (part.mount, 2)
        if part.role == "data" and data_mounted_early:
            check = 0
        lines.append(f"{device(identity, index)} {mount} {part.fs} {fs.get(part.fs).options} 0 {check}")
    return "\n".join(lines) + "\n"
