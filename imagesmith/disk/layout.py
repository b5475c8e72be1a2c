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
    mount: str | None = Field(
        None,
        pattern=r"^/",
        description="where the system mounts it; a slot B partition mirrors slot A's; none for a "
        "tryboot common boot partition",
    )
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

    @property
    def slot(self) -> str | None:
        """``a`` or ``b`` for a partition of an A/B slot, else None."""
        return self.role[-1] if self.role is not None and self.role.endswith(("-a", "-b")) else None


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
        _check_roles(parts)
        if self.root_by == "label" and any(p.role == "root-b" for p in parts):
            raise ValueError(
                "a layout with A/B slots finds its root by PARTUUID (root_by: partuuid): slot B starts as "
                "a copy of slot A, filesystem label and all, so a label would name both slots"
            )
        object.__setattr__(self, "partitions", parts)  # frozen: completed once, here
        return self

    def role(self, role: str) -> Partition | None:
        return next((p for p in self.partitions if p.role == role), None)

    @property
    def root(self) -> Partition:
        """The partition the system boots from as / (root=, mke2fs -d of the tree): the
        root, or slot A's."""
        found = self.role("root") or self.role("root-a")
        assert found is not None, "validated: a layout has a root"
        return found

    @property
    def slotted(self) -> bool:
        """Whether the layout has A/B slots (root-a and root-b)."""
        return self.role("root-a") is not None

    @property
    def data(self) -> Partition | None:
        """The partition kept across updates: role data, mounted at /data (the initramfs
        checks, remakes and grows it). Another data partition (say /srv in a layout of
        your own) is an ordinary filesystem in fstab."""
        return next((p for p in self.partitions if p.role == "data" and p.mount == "/data"), None)

    @property
    def grows(self) -> Partition:
        """The partition that grows to fill the disk on first boot: data if there is one
        (the root no longer grows then), else the root."""
        return self.data or self.root


def _check_roles(parts: list[Partition]) -> None:
    """Roles make sense together: one root (or an A/B pair), slots in pairs, one data
    partition, mount points where the system needs them."""

    def count(role: str) -> int:
        return sum(1 for p in parts if p.role == role)

    roots, slots = count("root"), (count("root-a"), count("root-b"))
    if not (roots == 1 and slots == (0, 0)) and not (roots == 0 and slots == (1, 1)):
        raise ValueError(
            "a layout needs exactly one root partition (role root, or mounted at /), or one root-a and "
            "one root-b"
        )
    if (count("boot-a"), count("boot-b")) not in ((0, 0), (1, 1)):
        raise ValueError("boot slots come in pairs: one boot-a and one boot-b")
    if count("boot-a") and not roots == 0:
        raise ValueError("boot slots need root slots: use root-a and root-b")
    if count("data") > 1:
        raise ValueError("a layout has at most one data partition (role data)")
    for part in parts:
        if part.role in ("root", "root-a") and part.mount != "/":
            raise ValueError(f"partition {part.name!r}: the root (slot A's) is mounted at /")
        if part.role in ("root-b", "boot-b") and part.mount is not None:
            raise ValueError(f"partition {part.name!r}: a slot B partition has no mount: it mirrors slot A")
        if part.role == "boot-a" and part.mount is None:
            raise ValueError(
                f"partition {part.name!r}: slot A's boot partition needs its mount (/boot/firmware)"
            )
        if part.role == "data" and part.mount != "/data" and count("root-a"):
            raise ValueError(
                f"partition {part.name!r}: the data partition of an A/B layout is mounted at /data"
            )
        if part.mount is None and part.role not in ("root-b", "boot-b", "boot", "raw"):
            raise ValueError(f"partition {part.name!r} needs `mount:`")
        if part.mount is None and part.role == "boot" and not count("boot-a"):
            raise ValueError(
                f"partition {part.name!r}: a boot partition without `mount:` is the tryboot common "
                "boot partition, which needs boot-a and boot-b"
            )
