"""A GPT layout on real arm64 packages: the table, the identifiers, both filesystems, and a
boot on qemu-arm64 whose root grows into the larger disk."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from imagesmith.disk import table

from .conftest import Built, build, imagesmith

pytestmark = pytest.mark.slow
OPTIONS = ("--set", "device=qemu-arm64", "--set", "layout=simple-gpt")


@pytest.fixture(scope="module")
def vm(tmp_path_factory: pytest.TempPathFactory) -> Built:
    return build(None, tmp_path_factory.mktemp("gpt") / "out", *OPTIONS)  # the default config


def test_the_table_is_gpt_with_the_layout_s_partitions(vm: Built) -> None:
    assert vm.table["label"] == "gpt"
    boot, root = vm.table["partitions"]  # type: ignore[misc]
    assert boot["type"] == table.GPT_TYPES["basic-data"] and boot["name"] == "BOOT"
    assert root["type"] == table.GPT_TYPES["linux"] and root["name"] == "root"
    # the backup GPT has its room after the last partition
    end = (root["start"] + root["size"]) * 512
    assert vm.image.stat().st_size - end >= table.GPT_BACKUP


def test_root_is_found_by_its_gpt_guid(vm: Built) -> None:
    root_guid = vm.table["partitions"][1]["uuid"].lower()  # type: ignore[index]
    assert f"root=PARTUUID={root_guid}" in vm.boot_file("cmdline.txt")
    assert f"PARTUUID={root_guid} / ext4" in vm.cat("/etc/fstab")


def test_both_filesystems_pass_their_checks(vm: Built, tmp_path: Path) -> None:
    for index, tool in ((0, ["fsck.vfat", "-n"]), (1, ["e2fsck", "-fn"])):
        start, size = vm.partition_offset(index), vm.table["partitions"][index]["size"] * 512  # type: ignore[index]
        part = tmp_path / f"p{index}"
        with open(vm.image, "rb") as src, open(part, "wb") as dst:
            src.seek(start)
            dst.write(src.read(size))
        subprocess.run([*tool, str(part)], check=True, capture_output=True)


def test_boots_on_qemu_arm64_and_grows_the_root(vm: Built, tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    imagesmith("boot", str(vm.image), "--console-log", str(log), "--timeout", "1500", timeout=1800)
    console = log.read_text(errors="replace")
    assert "imagesmith-growroot: /dev/vda2 now" in console and "login:" in console
