"""The layout model: a partition table kind and its partitions, each with a role, a
filesystem (from the registry in ``disk/fs``) and an optional mount point.

Layout files (built-in in ``catalog/layouts/`` or the user's own) are validated against
it; the facts later stages need (which partition is the root, its fstab, ``root=``) are
computed from it in ``disk/ids.py``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, JsonValue, field_validator, model_validator

from imagesmith.disk import table as table_types
from imagesmith.schema import NAME_RE, Size, Strict

#: what a partition is for: the boot files, the root filesystem (or one of two A/B
#: slots of either), data kept across updates, or bytes written as they are
ROLES = ("boot", "root", "root-a", "root-b", "boot-a", "boot-b", "data", "raw")
Role = Literal["boot", "root", "root-a", "root-b", "boot-a", "boot-b", "data", "raw"]


def _fs_names(schema: dict[str, JsonValue]) -> None:
    from imagesmith.disk import fs

    schema["enum"] = list(fs.NAMES)


class Partition(Strict):
    name: str = Field(pattern=NAME_RE)
    fs: str = Field(description="a filesystem of the registry in disk/fs", json_schema_extra=_fs_names)
    label: str = Field(pattern=r"^[A-Za-z0-9_-]{1,11}$")
    mount: str = Field(pattern=r"^/")
    size: Size | Literal["auto"] = "auto"
    free: Size = 0  # with size: auto, free space left in the filesystem
    type: str | None = Field(
        None,
        description="dos: a hex code (c, 83); gpt: a GUID or esp, basic-data, linux, root-arm64, root-amd64; "
        "default: FAT or Linux data",
    )
    bootable: bool = False  # dos only: the MBR's active flag
    role: Role | None = Field(None, description="default: root for /, boot for a FAT partition, else data")

    @field_validator("fs")
    @classmethod
    def _known_fs(cls, value: str) -> str:
        from imagesmith.disk import fs

        if value not in fs.NAMES:
            raise ValueError(f"unknown filesystem {value!r}: one of {', '.join(fs.NAMES)}")
        return value

    @property
    def kind(self) -> str:
        """The type as sfdisk writes it (set for every partition of a validated layout)."""
        assert self.type is not None, "layouts complete their partitions' types"
        return self.type

    def with_defaults(self, table: str) -> Partition:
        """The partition with its type written as sfdisk takes it, and its role."""
        kind = (
            table_types.normalise_type(table, self.type)
            if self.type
            else table_types.default_type(table, self.fs)
        )
        role = self.role or ("root" if self.mount == "/" else "boot" if self.fs == "vfat" else "data")
        return self.model_copy(update={"type": kind, "role": role})


class Layout(Strict):
    layout: str = Field(pattern=NAME_RE)
    description: str
    table: Literal["dos", "gpt"] = "dos"
    root_by: Literal["partuuid", "label"] = "partuuid"
    first_offset: Size = 4 * 1024**2
    partitions: list[Partition]

    @model_validator(mode="after")
    def _complete(self) -> Layout:
        try:
            parts = [p.with_defaults(self.table) for p in self.partitions]
        except ValueError as exc:
            raise ValueError(str(exc)) from None
        if sum(1 for p in parts if p.role == "root") != 1:
            raise ValueError("a layout needs exactly one root partition (role root, or mounted at /)")
        object.__setattr__(self, "partitions", parts)  # frozen: completed once, here
        return self

    @property
    def root(self) -> Partition:
        """The partition the system boots from as / (fstab, root=, mke2fs -d of the tree)."""
        return next(p for p in self.partitions if p.role == "root")
