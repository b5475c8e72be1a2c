from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from imagesmith.config.load import Spec, load_spec
from imagesmith.disk import ids
from imagesmith.disk.fs import ext4

Write = Callable[[str, str], Path]


def test_identifiers_are_stable_and_depend_on_the_config(write: Write) -> None:
    a1 = load_spec(write("a.yaml", "name: a\ndevice: pi4\n"))
    a2 = load_spec(write("a2.yaml", "name: a\ndevice: pi4\nhostname: other\n"))
    b = load_spec(write("b.yaml", "name: b\ndevice: pi4\n"))
    a1, a2, b = a1.identity, a2.identity, b.identity
    assert ids.disk_signature(a1) == ids.disk_signature(a2)
    assert ids.disk_signature(a1) != ids.disk_signature(b)
    assert ids.fs_id(a1, "root") != ids.fs_id(a1, "boot")
    assert re.fullmatch(r"[0-9a-f]{8}", ids.disk_signature(a1))
    assert re.fullmatch(r"[0-9a-f]{8}", ids.fs_id(a1, "boot"))  # a FAT volume id
    assert ids.partuuid(a1, 2) == f"{ids.disk_signature(a1)}-02"


def test_fstab_and_root_device(write: Write) -> None:
    spec = load_spec(write("a.yaml", "name: a\ndevice: pi4\n")).identity
    sig = ids.disk_signature(spec)
    assert ids.root_device(spec) == f"PARTUUID={sig}-02"
    lines = ids.fstab(spec).splitlines()
    assert f"PARTUUID={sig}-01 /boot/firmware vfat defaults,noatime,umask=0077 0 2" in lines
    assert f"PARTUUID={sig}-02 / ext4 defaults,noatime 0 1" in lines


def test_every_identifier_follows_name_device_and_layout_only(write: Write) -> None:
    def all_ids(spec: Spec) -> list[str]:
        identity = spec.identity
        return [
            ids.disk_signature(identity),
            ids.fs_id(identity, "root"),  # the ext4 UUID
            ids.fs_id(identity, "boot"),  # the FAT volume id
            ext4.hash_seed(identity, "root"),
        ]

    base = all_ids(load_spec(write("a.yaml", "name: a\ndevice: pi4\n")))
    # loading the same config again, or changing what is not identity, keeps every id
    assert all_ids(load_spec(write("a.yaml", "name: a\ndevice: pi4\n"))) == base
    assert (
        all_ids(load_spec(write("c.yaml", "name: a\ndevice: pi4\ntimezone: UTC\npackages: [jq]\n"))) == base
    )
    # a new name or device changes each of them
    for text in ("name: b\ndevice: pi4\n", "name: a\ndevice: pi5\n", "name: a\ndevice: cm4\n"):
        changed = all_ids(load_spec(write("d.yaml", text)))
        assert all(x != y for x, y in zip(base, changed, strict=True)), text
    assert len(set(base)) == len(base)
