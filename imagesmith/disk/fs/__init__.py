"""The filesystem registry: each kind is one module with one ``Filesystem``; a layout's
``fs:`` names one of them. Adding a kind (erofs, squashfs) is a module and a line here."""

from __future__ import annotations

from imagesmith.disk.fs import ext4, vfat
from imagesmith.disk.fs.base import Filesystem, Job

REGISTRY: dict[str, Filesystem] = {fs.name: fs for fs in (vfat.FILESYSTEM, ext4.FILESYSTEM)}
NAMES = tuple(REGISTRY)


def get(name: str) -> Filesystem:
    return REGISTRY[name]


__all__ = ["NAMES", "REGISTRY", "Filesystem", "Job", "get"]
