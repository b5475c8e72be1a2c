"""Partition tables: dos as before, gpt with derived GUIDs; types, roles and FAT recognition."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from imagesmith.config.load import load_spec
from imagesmith.disk import ids, table
from imagesmith.errors import ImagesmithError

Write = Callable[[str, str], Path]
GUID = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"


def test_existing_layouts_keep_their_meaning(write: Write) -> None:
    spec = load_spec(write("a.yaml", "name: a\ndevice: pi4\n"))
    boot, root = spec.layout.partitions
    assert (spec.layout.table, boot.type, boot.role, root.type, root.role) == (
        "dos",
        "c",
        "boot",
        "83",
        "root",
    )
    assert spec.layout.root is root


def test_gpt_layout_gets_guids_types_and_a_root(write: Write) -> None:
    spec = load_spec(write("a.yaml", "name: a\ndevice: qemu-arm64\nlayout: simple-gpt\n"))
    boot, root = spec.layout.partitions
    identity = spec.identity
    assert boot.type == table.GPT_TYPES["basic-data"] and root.type == table.GPT_TYPES["linux"]
    assert re.fullmatch(GUID, ids.disk_id(identity)) and re.fullmatch(GUID, ids.partuuid(identity, 2))
    assert ids.partuuid(identity, 1) != ids.partuuid(identity, 2)
    assert ids.root_device(identity) == f"PARTUUID={ids.partuuid(identity, 2)}"
    assert (
        f"PARTUUID={ids.partuuid(identity, 2)} / ext4 defaults,noatime 0 1"
        in ids.fstab(identity).splitlines()
    )
    # the same config gives the same GUIDs; another name others
    again = load_spec(write("b.yaml", "name: a\ndevice: qemu-arm64\nlayout: simple-gpt\n"))
    other = load_spec(write("c.yaml", "name: b\ndevice: qemu-arm64\nlayout: simple-gpt\n"))
    assert ids.partuuid(again.identity, 2) == ids.partuuid(identity, 2) != ids.partuuid(other.identity, 2)


def test_sfdisk_writes_the_gpt_script_as_given(tmp_path: Path) -> None:
    disk_guid, part_guid = "3f2504e0-4f89-41d3-9a0c-0305e82c3301", "6ba7b810-9dad-41d1-80b4-00c04fd430c8"
    entries = [table.Entry(4 << 20, 8 << 20, table.GPT_TYPES["linux"], part_guid, "root", False)]
    image = tmp_path / "x.img"
    image.write_bytes(b"")
    with open(image, "wb") as handle:
        handle.truncate((4 << 20) + (8 << 20) + table.tail_room("gpt"))
    subprocess.run(["sfdisk", "--no-reread", "--no-tell-kernel", str(image)], check=True, capture_output=True,
                   input=table.script("gpt", disk_guid, entries), text=True)  # fmt: skip
    read = json.loads(subprocess.run(["sfdisk", "--json", str(image)], capture_output=True, text=True).stdout)
    found = read["partitiontable"]
    assert found["label"] == "gpt" and found["id"].lower() == disk_guid
    part = found["partitions"][0]
    assert (part["start"], part["size"]) == ((4 << 20) // 512, (8 << 20) // 512)
    assert part["uuid"].lower() == part_guid and part["name"] == "root"
    assert table.holds_fat(part["type"]) is False


def test_fat_types_of_both_tables() -> None:
    assert all(table.holds_fat(t) for t in ("c", "b", "e", "EF", table.GPT_TYPES["esp"].lower()))
    assert not any(table.holds_fat(t) for t in ("83", table.GPT_TYPES["linux"]))


def test_a_type_the_table_does_not_take_is_a_config_error(write: Write, tmp_path: Path) -> None:
    layouts = tmp_path / "layouts"
    layouts.mkdir()
    with pytest.raises(ValueError, match="gpt partition type is a GUID or one of esp"):
        table.normalise_type("gpt", "83")
    with pytest.raises(ValueError, match="dos partition type is a hex code"):
        table.normalise_type("dos", "linux")
    assert table.normalise_type("gpt", "ESP") == table.GPT_TYPES["esp"]
    with pytest.raises(ImagesmithError, match="exactly one root partition"):
        from imagesmith.config.model import Layout
        from imagesmith.config.nodes import load_yaml
        from imagesmith.config.validate import validate

        bad = write(
            "bad.yaml",
            "layout: bad\ndescription: x\npartitions:\n  - {name: a, fs: ext4, label: a, mount: /srv}\n",
        )
        validate(Layout, load_yaml(bad), "layout bad")


def test_a_layout_next_to_the_config_is_found_and_checked(write: Write) -> None:
    from imagesmith.disk import fs

    write(
        "layouts/mine.yaml",
        """
        layout: mine
        description: three partitions, data kept apart
        table: gpt
        partitions:
          - {name: boot, fs: vfat, label: BOOT, mount: /boot/firmware, size: 128MiB}
          - {name: root, fs: ext4, label: root, mount: /}
          - {name: data, fs: ext4, label: data, mount: /data, size: 64MiB}
        """,
    )
    spec = load_spec(write("a.yaml", "name: a\ndevice: qemu-arm64\nlayout: mine\n"))
    assert [p.role for p in spec.layout.partitions] == ["boot", "root", "data"]
    assert "/data ext4 defaults,noatime 0 2" in ids.fstab(spec.identity)
    write(
        "layouts/bad.yaml",
        """
        layout: bad
        description: x
        partitions:
          - {name: root, fs: btrfs, label: root, mount: /}
        """,
    )
    with pytest.raises(ImagesmithError) as caught:
        load_spec(write("b.yaml", "name: a\ndevice: qemu-arm64\nlayout: bad\n"))
    assert "bad.yaml:4" in str(caught.value.location) and caught.value.exit_code == 2
    assert f"unknown filesystem 'btrfs': one of {', '.join(fs.NAMES)}" in str(caught.value)
    with pytest.raises(ImagesmithError, match="unknown layout 'mien'") as unknown:
        load_spec(write("c.yaml", "name: a\ndevice: qemu-arm64\nlayout: mien\n"))
    assert "mine" in (unknown.value.hint or "")
