from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from imagesmith import ids
from imagesmith.config.load import load_spec

Write = Callable[[str, str], Path]


def test_identifiers_are_stable_and_depend_on_the_config(write: Write) -> None:
    a1 = load_spec(write("a.yaml", "name: a\ndevice: pi4\n"))
    a2 = load_spec(write("a2.yaml", "name: a\ndevice: pi4\nhostname: other\n"))
    b = load_spec(write("b.yaml", "name: b\ndevice: pi4\n"))
    assert ids.disk_signature(a1) == ids.disk_signature(a2)
    assert ids.disk_signature(a1) != ids.disk_signature(b)
    assert ids.fs_uuid(a1, "root") != ids.fs_uuid(a1, "boot")
    assert re.fullmatch(r"[0-9a-f]{8}", ids.disk_signature(a1))
    assert re.fullmatch(r"[0-9a-f]{8}", ids.vfat_volume_id(a1, "boot"))
    assert ids.partuuid(a1, 2) == f"{ids.disk_signature(a1)}-02"


def test_fstab_and_root_device(write: Write) -> None:
    spec = load_spec(write("a.yaml", "name: a\ndevice: pi4\n"))
    sig = ids.disk_signature(spec)
    assert ids.root_device(spec) == f"PARTUUID={sig}-02"
    lines = ids.fstab(spec).splitlines()
    assert f"PARTUUID={sig}-01 /boot/firmware vfat defaults,noatime,umask=0077 0 2" in lines
    assert f"PARTUUID={sig}-02 / ext4 defaults,noatime 0 1" in lines
