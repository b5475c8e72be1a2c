"""A/B slots, a read-only root and a data partition, built on the native target and booted
twice on one disk: what the device keeps across a reboot, and what it does not."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from imagesmith.disk import table

from .conftest import Built, build, check_filesystem, extract, imagesmith, same_bytes

pytestmark = pytest.mark.slow
DATA = Path(__file__).parent / "data" / "storage"
DONE = "storage: done"


@pytest.fixture(scope="module")
def vm(tmp_path_factory: pytest.TempPathFactory) -> Built:
    return build(DATA / "image.yaml", tmp_path_factory.mktemp("storage") / "out")


@pytest.fixture(scope="module")
def boots(vm: Built, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The console of two boots on one disk: the second sees what the first wrote."""
    work = tmp_path_factory.mktemp("boots")
    consoles = []
    for number in (1, 2):
        log = work / f"console{number}.log"
        imagesmith("boot", str(vm.image), "--disk", str(work / "disk.qcow2"), "--expect", DONE,
                   "--console-log", str(log), "--timeout", "900", timeout=1200)  # fmt: skip
        consoles.append(log.read_text(errors="replace"))
    return consoles


def said(console: str, name: str) -> str:
    found = re.findall(rf"storage: {re.escape(name)}=([^\r\n]*)", console)
    assert found, f"no line storage: {name}= on the console"
    return str(found[-1]).strip()


def test_the_table_has_boot_both_root_slots_and_data(vm: Built) -> None:
    assert vm.table["label"] == "gpt"
    parts = vm.partitions
    assert [p["name"] for p in parts] == ["BOOT", "rootA", "rootB", "data"]
    assert parts[0]["type"] == table.GPT_TYPES["basic-data"]
    assert parts[1]["size"] == parts[2]["size"]
    assert parts[3]["size"] * 512 == 64 * 1024 * 1024  # grows on the device
    manifest = json.loads((vm.output / "manifest.json").read_text())
    rows = [(p["name"], p["role"], p["slot"], p["mount"]) for p in manifest["partitions"]]
    assert rows == [("boot", "boot", None, "/boot/firmware"), ("root-a", "root-a", "a", "/"),
                    ("root-b", "root-b", "b", None), ("data", "data", None, "/data")]  # fmt: skip
    assert manifest["partitions"][1]["fs_id"] == manifest["partitions"][2]["fs_id"]


def test_slot_b_starts_as_a_copy_of_slot_a(vm: Built) -> None:
    assert same_bytes(vm.image, vm.partitions[1], vm.partitions[2])


def test_every_filesystem_passes_its_check(vm: Built, tmp_path: Path) -> None:
    for entry, fs in zip(vm.partitions, ["vfat", "ext4", "ext4", "ext4"], strict=True):
        check_filesystem(vm.image, entry, fs, tmp_path)
    data = extract(vm.image, vm.partitions[3], tmp_path / "data")
    labels = subprocess.run(["e2label", str(data)], capture_output=True, text=True, check=True)
    assert labels.stdout.strip() == "data"


def test_fstab_and_the_command_line(vm: Built) -> None:
    fstab = [line.split() for line in vm.cat("/etc/fstab").splitlines() if not line.startswith("#")]
    assert [(f[1], f[5]) for f in fstab] == [("/boot/firmware", "2"), ("/data", "0")]  # no slot in fstab
    root_a = vm.partitions[1]["uuid"].lower()
    cmdline = vm.boot_file("cmdline.txt").split()
    assert f"root=PARTUUID={root_a}" in cmdline and "ro" in cmdline and "rw" not in cmdline


def test_the_root_is_read_only_and_etc_survives_a_reboot(boots: list[str]) -> None:
    first, second = boots
    assert [said(first, "boots"), said(second, "boots")] == ["1", "2"]
    for console in boots:
        assert said(console, "root") == "read-only"
        assert said(console, "root-mount").split()[1].startswith("ro,")
        assert "imagesmith-data: / read-only, /etc kept on" in console


def test_host_keys_and_machine_id_are_made_once_and_kept(boots: list[str]) -> None:
    first, second = boots
    assert said(first, "hostkey").startswith("SHA256:")
    assert said(first, "hostkey") == said(second, "hostkey")
    machine_id = said(first, "machine-id")
    assert re.fullmatch(r"[0-9a-f]{32}", machine_id) and said(second, "machine-id") == machine_id


def test_data_grows_once_and_persisted_paths_stay(boots: list[str]) -> None:
    first, second = boots
    assert "imagesmith-data: grew partition 4" in first and "imagesmith-data: grew" not in second
    assert int(said(first, "data-bytes")) > 400 * 1024 * 1024  # 64 MiB grown into the larger disk
    assert said(first, "home") == "" and said(second, "home") == "kept"
    assert said(second, "var") == "", "/var is in memory: it starts afresh on every boot"


def test_a_blank_data_partition_is_made_anew(vm: Built, tmp_path: Path) -> None:
    image = tmp_path / "blank-data.img"
    subprocess.run(["cp", "--sparse=always", str(vm.image), str(image)], check=True)
    entry = vm.partitions[3]
    with open(image, "r+b") as handle:
        handle.seek(entry["start"] * 512)
        handle.write(bytes(entry["size"] * 512))  # blank: no superblock, no backup of it
    log = tmp_path / "console.log"
    imagesmith(
        "boot", str(image), "--expect", DONE, "--console-log", str(log), "--timeout", "900", timeout=1200
    )
    console = log.read_text(errors="replace")
    assert "holds no usable filesystem: making a new, empty one (label data)" in console
    assert said(console, "boots") == "1" and said(console, "root") == "read-only"


@pytest.fixture(scope="module")
def mbr(vm: Built, tmp_path_factory: pytest.TempPathFactory) -> Built:
    """The same image on the `ab` layout: an MBR with four primary partitions."""
    return build(DATA / "image.yaml", tmp_path_factory.mktemp("ab-mbr") / "out", "--set", "layout=ab")


def test_the_mbr_layout_has_four_primary_partitions(mbr: Built, tmp_path: Path) -> None:
    assert mbr.table["label"] == "dos"
    boot, root_a, root_b, data = mbr.partitions
    assert boot["type"] == "c" and boot.get("bootable") is True
    assert [p["type"] for p in (root_a, root_b, data)] == ["83", "83", "83"]
    assert root_a["size"] == root_b["size"] and data["size"] * 512 == 64 * 1024 * 1024
    signature = str(mbr.table["id"]).removeprefix("0x")
    cmdline = mbr.boot_file("cmdline.txt").split()
    assert f"root=PARTUUID={signature}-02" in cmdline and "ro" in cmdline
    env = mbr.cat("/usr/lib/imagesmith/storage.env")
    assert f"DATA_DEVICE=/dev/disk/by-partuuid/{signature}-04\n" in env and "READ_ONLY=yes" in env
    assert same_bytes(mbr.image, root_a, root_b)
    for entry, fs in zip(mbr.partitions, ["vfat", "ext4", "ext4", "ext4"], strict=True):
        check_filesystem(mbr.image, entry, fs, tmp_path)
