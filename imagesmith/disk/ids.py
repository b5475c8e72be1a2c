"""Identifiers that tools would make random, derived from the config instead.

The disk signature, filesystem UUIDs and FAT volume ids come from a hash of the image's
name, device and layout, so rebuilding the same image gives the same identifiers (and
the same root= argument), while two different images do not collide.
"""

from __future__ import annotations

import hashlib
import uuid

from imagesmith.config.load import Spec


def _digest(spec: Spec, purpose: str) -> bytes:
    seed = "\0".join(["imagesmith", spec.config.name, spec.device.device, spec.layout.layout, purpose])
    return hashlib.sha256(seed.encode()).digest()


def disk_signature(spec: Spec) -> str:
    """The MBR disk identifier as 8 hex digits (never 0, which means 'none')."""
    value = int.from_bytes(_digest(spec, "disk")[:4], "big") or 1
    return f"{value:08x}"


def disk_id(spec: Spec) -> str:
    """The partition table's own identifier: the MBR signature, or the GPT disk GUID."""
    if spec.layout.table == "gpt":
        return str(uuid.UUID(bytes=_digest(spec, "gpt-disk")[:16], version=4))
    return disk_signature(spec)


def partuuid(spec: Spec, index: int) -> str:
    """PARTUUID of partition ``index`` (1-based), as the kernel and blkid show it: the
    MBR's ``signature-NN``, or the partition's GPT GUID."""
    if spec.layout.table == "gpt":
        return str(uuid.UUID(bytes=_digest(spec, f"gpt-part:{index}")[:16], version=4))
    return f"{disk_signature(spec)}-{index:02x}"


def fs_uuid(spec: Spec, partition: str) -> str:
    return str(uuid.UUID(bytes=_digest(spec, f"fs:{partition}")[:16], version=4))


def vfat_volume_id(spec: Spec, partition: str) -> str:
    return _digest(spec, f"vfat:{partition}")[:4].hex()


def ext4_hash_seed(spec: Spec, partition: str) -> str:
    return str(uuid.UUID(bytes=_digest(spec, f"hash:{partition}")[:16], version=4))


def root_device(spec: Spec) -> str:
    """How fstab and the kernel command line name the root filesystem."""
    root = spec.layout.root
    if spec.layout.root_by == "label":
        return f"LABEL={root.label}"
    return f"PARTUUID={partuuid(spec, spec.layout.partitions.index(root) + 1)}"


def fstab(spec: Spec) -> str:
    lines = ["# <device> <mount point> <type> <options> <dump> <pass>"]
    for index, part in enumerate(spec.layout.partitions, start=1):
        device = (
            f"LABEL={part.label}" if spec.layout.root_by == "label" else f"PARTUUID={partuuid(spec, index)}"
        )
        if part.role == "root":
            lines.append(f"{device} / {part.fs} defaults,noatime 0 1")
        elif part.fs == "vfat":
            lines.append(f"{device} {part.mount} vfat defaults,noatime,umask=0077 0 2")
        else:
            lines.append(f"{device} {part.mount} {part.fs} defaults,noatime 0 2")
    return "\n".join(lines) + "\n"
