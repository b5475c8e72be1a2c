"""The A/B layout on a GPT with a read-only root, on real arm64 packages: the table, the
identifiers, every filesystem, and a boot on qemu-arm64 whose data partition grows into
the larger disk while the root stays read-only."""

from __future__ import annotations

from pathlib import Path

import pytest

from imagesmith.disk import table

from .conftest import Built, build, check_filesystem, imagesmith, kernel_modules, same_bytes

pytestmark = pytest.mark.slow
# slim on arm64: the read-only root's overlayfs and the virt machine's drivers stay; no
# board's device tree is needed (QEMU makes the machine's own)
OPTIONS = ("--set", "device=qemu-arm64", "--set", "layout=ab-gpt", "--set", "read_only=true",
           "--set", "slim={modules: true, device_trees: true}")  # fmt: skip


@pytest.fixture(scope="module")
def vm(tmp_path_factory: pytest.TempPathFactory) -> Built:
    return build(None, tmp_path_factory.mktemp("ab") / "out", *OPTIONS)  # the default config


def test_the_table_is_gpt_with_the_layout_s_partitions(vm: Built) -> None:
    assert vm.table["label"] == "gpt"
    boot, root_a, root_b, data = vm.partitions
    assert boot["type"] == table.GPT_TYPES["basic-data"] and boot["name"] == "BOOT"
    assert [p["type"] for p in (root_a, root_b, data)] == [table.GPT_TYPES["linux"]] * 3
    assert [p["name"] for p in (root_a, root_b, data)] == ["rootA", "rootB", "data"]
    # the backup GPT has its room after the last partition
    end = (data["start"] + data["size"]) * 512
    assert vm.image.stat().st_size - end >= table.GPT_BACKUP


def test_root_slot_a_is_found_by_its_gpt_guid_and_mounted_read_only(vm: Built) -> None:
    root_guid = vm.partitions[1]["uuid"].lower()
    cmdline = vm.boot_file("cmdline.txt").split()
    assert f"root=PARTUUID={root_guid}" in cmdline and "ro" in cmdline
    assert root_guid not in vm.cat("/etc/fstab").lower(), "fstab names no slot"


def test_every_filesystem_passes_its_check(vm: Built, tmp_path: Path) -> None:
    for entry, fs in zip(vm.partitions, ["vfat", "ext4", "ext4", "ext4"], strict=True):
        check_filesystem(vm.image, entry, fs, tmp_path)
    assert same_bytes(vm.image, vm.partitions[1], vm.partitions[2]), "root B is a copy of root A"


def test_modules_are_pruned_to_the_virtual_machine_s(vm: Built) -> None:
    version, modules = kernel_modules(vm)
    names = set(modules.paths)
    assert {"virtio_blk", "virtio_net", "overlay", "ext4", "vfat"} <= names
    assert len(names) < 80 and "brcmfmac" not in names
    # Debian's device trees of every arm64 board are gone
    listing = vm.debugfs(f"ls -p /usr/lib/linux-image-{version}").splitlines()
    assert {e.split("/")[5] for e in listing if e.count("/") > 5} == {".", ".."}


def test_boots_on_qemu_arm64_read_only_and_grows_the_data_partition(vm: Built, tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    imagesmith("boot", str(vm.image), "--console-log", str(log), "--timeout", "1500", timeout=1800)
    console = log.read_text(errors="replace")
    assert "imagesmith-data: grew partition 4 of /dev/vda" in console
    assert "imagesmith-data: / read-only, /etc kept on /dev/vda4, /var in memory" in console
    assert "imagesmith-growroot: " not in console, "the root slots never grow"
    assert "login:" in console
