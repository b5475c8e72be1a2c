"""slim.modules and slim.firmware: what is kept, on module and firmware trees made here."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from imagesmith.config.load import load_spec
from imagesmith.errors import ImagesmithError
from imagesmith.host.run import Runner
from imagesmith.stages import prune

Write = Callable[[str, str], Path]
VERSION = "6.12.0-test"
DEP = """\
kernel/fs/ext4/ext4.ko.xz: kernel/fs/jbd2/jbd2.ko.xz kernel/fs/mbcache.ko.xz
kernel/fs/jbd2/jbd2.ko.xz:
kernel/fs/mbcache.ko.xz:
kernel/crypto/crc32c_generic.ko.xz:
kernel/fs/fat/vfat.ko.xz: kernel/fs/fat/fat.ko.xz
kernel/fs/fat/fat.ko.xz:
kernel/drivers/block/virtio_blk.ko.xz:
kernel/drivers/gpu/drm/big-gpu.ko.xz: kernel/drivers/gpu/drm/drm_helper.ko.xz
kernel/drivers/gpu/drm/drm_helper.ko.xz:
kernel/drivers/net/wifi/wifi.ko.xz:
kernel/drivers/usb/usb-storage.ko.xz:
updates/dkms/vendor.ko.xz: kernel/drivers/net/wifi/wifi.ko.xz
"""
SOFTDEP = "softdep ext4 pre: crc32c\n"
ALIAS = "alias crc32c crc32c_generic\nalias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_blk\n"


def modules() -> prune.Modules:
    return prune.Modules.parse(DEP, SOFTDEP, "kernel/drivers/tty/serial/8250.ko\n", ALIAS)


def test_names_are_read_as_modprobe_reads_them() -> None:
    assert prune.module_name("kernel/drivers/usb/usb-storage.ko.zst") == "usb_storage"
    assert prune.module_name("ext4.ko") == "ext4"
    assert prune.listed("# comment\nloop\n\nbtrfs opt=1  # why\n;old\n") == ["loop", "btrfs"]


def test_kept_modules_follow_dependencies_softdeps_through_aliases_and_add_ons() -> None:
    kept = prune.kept_modules(modules(), ["ext4", "usb-storage", "not-in-this-kernel"])
    assert kept == {
        "kernel/fs/ext4/ext4.ko.xz", "kernel/fs/jbd2/jbd2.ko.xz", "kernel/fs/mbcache.ko.xz",
        "kernel/crypto/crc32c_generic.ko.xz",  # ext4's softdep names the alias crc32c
        "kernel/drivers/usb/usb-storage.ko.xz",
        "updates/dkms/vendor.ko.xz", "kernel/drivers/net/wifi/wifi.ko.xz",  # an add-on and its need
    }  # fmt: skip
    assert modules().known("8250") and modules().known("crc32c") and not modules().known("nope")


def tree(root: Path, files: dict[str, str]) -> None:
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)


def rootfs_with_modules(root: Path) -> Path:
    directory = root / "usr/lib/modules" / VERSION
    files = {f"usr/lib/modules/{VERSION}/{line.split(':')[0]}": "x" * 1024 for line in DEP.splitlines()}
    tree(root, files)
    tree(directory, {"modules.dep": DEP, "modules.softdep": SOFTDEP, "modules.alias": ALIAS,
                     "modules.builtin": ""})  # fmt: skip
    tree(root, {"etc/modules-load.d/wifi.conf": "# loaded at boot\nwifi\n"})
    return directory


def test_prune_keeps_device_layout_and_load_lists_and_removes_the_rest(write: Write, tmp_path: Path) -> None:
    root = tmp_path / "root"
    directory = rootfs_with_modules(root)
    spec = load_spec(
        write("s.yaml", "name: s\ndevice: qemu-amd64\nslim: {modules: true, keep_modules: [usb_storage]}\n")
    )
    prune.prune_modules(Runner(log_path=tmp_path / "log"), spec, root, VERSION)
    left = {p.relative_to(directory).as_posix() for p in directory.rglob("*.ko.xz")}
    assert "kernel/drivers/block/virtio_blk.ko.xz" in left  # the device's catalog entry
    assert {"kernel/fs/ext4/ext4.ko.xz", "kernel/fs/fat/vfat.ko.xz", "kernel/fs/fat/fat.ko.xz"} <= left
    assert "kernel/drivers/usb/usb-storage.ko.xz" in left  # keep_modules
    assert "kernel/drivers/net/wifi/wifi.ko.xz" in left  # modules-load.d
    assert not (directory / "kernel/drivers/gpu").exists(), "the unused driver and its empty directory"
    assert "kept 10 modules, left out 2 (2 KiB)" in (tmp_path / "log").read_text()


def test_a_module_the_config_names_that_the_kernel_lacks_is_a_config_error(
    write: Write, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    rootfs_with_modules(root)
    config = write(
        "s.yaml", "name: s\ndevice: qemu-amd64\nslim:\n  modules: true\n  keep_modules: [usb_storge]\n"
    )
    spec = load_spec(config)
    with pytest.raises(ImagesmithError) as caught:
        prune.prune_modules(Runner(log_path=tmp_path / "log"), spec, root, VERSION)
    assert caught.value.exit_code == 2 and "no module 'usb_storge'" in caught.value.message
    assert caught.value.location is not None and caught.value.location.line == 5
    assert (root / "usr/lib/modules" / VERSION / "kernel/drivers/gpu/drm/big-gpu.ko.xz").exists()


def firmware_tree(directory: Path) -> None:
    tree(directory, {"cypress/cyfmac43455-sdio.bin": "a" * 2048, "cypress/cyfmac4356-pcie.bin": "b" * 4096,
                     "brcm/brcmfmac43455-sdio.raspberrypi,4-model-b.txt": "nvram",
                     "brcm/brcmfmac43455-sdio.AW-CM256SM.txt": "nvram2", "regulatory.db": "db",
                     "other/chip.bin.zst": "c" * 100, "vendor/sub/blob.bin": "d"})  # fmt: skip
    os.symlink("../cypress/cyfmac43455-sdio.bin", directory / "brcm/brcmfmac43455-sdio.bin")
    os.symlink("../cypress/cyfmac4356-pcie.bin", directory / "brcm/brcmfmac4356-pcie.bin")
    os.symlink("brcmfmac43455-sdio.AW-CM256SM.txt", directory / "brcm/brcmfmac43455-sdio.pine64.txt")
    os.symlink("vendor/sub", directory / "vendor-link")


def test_kept_firmware_follows_links_and_matches_compressed_files(tmp_path: Path) -> None:
    firmware_tree(tmp_path)
    files = prune.tree_files(tmp_path, tmp_path)
    assert files["brcm/brcmfmac43455-sdio.bin"] == "cypress/cyfmac43455-sdio.bin"
    patterns = [*prune.ALWAYS_FIRMWARE, "brcm/brcmfmac43455-sdio.*", "other/chip.bin", "vendor-link"]
    kept = prune.kept_files(files, patterns)
    assert kept == {
        "brcm/brcmfmac43455-sdio.bin", "cypress/cyfmac43455-sdio.bin",
        "brcm/brcmfmac43455-sdio.raspberrypi,4-model-b.txt", "brcm/brcmfmac43455-sdio.AW-CM256SM.txt",
        "brcm/brcmfmac43455-sdio.pine64.txt", "regulatory.db", "other/chip.bin.zst",
        "vendor-link", "vendor/sub/blob.bin",
    }  # fmt: skip


def test_prune_firmware_leaves_the_device_s_chips(write: Write, tmp_path: Path) -> None:
    root = tmp_path / "root"
    firmware_tree(root / "usr/lib/firmware")
    spec = load_spec(write("s.yaml", "name: s\ndevice: pi4\nslim: {firmware: true}\n"))
    prune.prune_firmware(Runner(log_path=tmp_path / "log"), spec, root)
    left = prune.tree_files(root / "usr/lib/firmware", root)
    assert set(left) == {
        "brcm/brcmfmac43455-sdio.bin", "cypress/cyfmac43455-sdio.bin", "regulatory.db",
        "brcm/brcmfmac43455-sdio.raspberrypi,4-model-b.txt", "brcm/brcmfmac43455-sdio.AW-CM256SM.txt",
        "brcm/brcmfmac43455-sdio.pine64.txt",
    }  # fmt: skip
    assert not (root / "usr/lib/firmware/vendor").exists() and not (root / "usr/lib/firmware/other").exists()


GPU = ("bootcode.bin", "start.elf", "start_x.elf", "fixup.dat", "start4.elf", "start4cd.elf", "fixup4.dat",
       "fixup4cd.dat")  # fmt: skip


def gpu_firmware(root: Path) -> None:
    """raspi-firmware's files for every model, and the copies its postinst made on the boot
    partition (next to the kernel the hooks put there)."""
    tree(root / "usr/lib/raspi-firmware", {name: "g" * 10 for name in GPU} | {"overlays/README": "r"})
    tree(root / "boot/firmware", {name: "g" * 10 for name in GPU} | {"vmlinuz": "k", "config.txt": "c"})


@pytest.mark.parametrize(
    ("device", "kept"),
    [
        ("pi4", {"start4.elf", "start4cd.elf", "fixup4.dat", "fixup4cd.dat"}),
        ("zero2w", {"bootcode.bin", "start.elf", "start_x.elf", "fixup.dat"}),
        ("pi5", set()),  # its EEPROM bootloader loads no start*.elf
        ("qemu-arm64", set(GPU)),  # the catalog does not say: all stay
    ],
)
def test_gpu_firmware_of_other_models_goes_from_both_places(
    write: Write, tmp_path: Path, device: str, kept: set[str]
) -> None:
    root = tmp_path / "root"
    gpu_firmware(root)
    spec = load_spec(write("s.yaml", f"name: s\ndevice: {device}\nslim: {{firmware: true}}\n"))
    assert prune.savings(load_spec(write("t.yaml", f"name: s\ndevice: {device}\n")), root).get(
        "slim.firmware", 0
    ) == 10 * (len(GPU) - len(kept))
    prune.prune_firmware(Runner(log_path=tmp_path / "log"), spec, root)
    assert set(os.listdir(root / "usr/lib/raspi-firmware")) == kept | {"overlays"}
    assert set(os.listdir(root / "boot/firmware")) == kept | {"vmlinuz", "config.txt"}


def test_only_gpu_firmware_the_model_does_not_load_is_chosen() -> None:
    assert prune.other_models(["start4.elf", "start.elf", "README", "fixup.dat"], ["start4*.elf"]) == [
        "fixup.dat",
        "start.elf",
    ]
    assert prune.other_models(["start.elf"], None) == []


def device_trees(root: Path) -> Path:
    directory = root / f"usr/lib/linux-image-{VERSION}"
    tree(directory, {"broadcom/bcm2711-rpi-4-b.dtb": "pi4", "rockchip/rk3588-rock-5b.dtb": "r" * 2000,
                     "overlays/disable-bt.dtbo": "o"})  # fmt: skip
    (root / "usr/lib/firmware").mkdir(parents=True, exist_ok=True)
    os.symlink(f"/usr/lib/linux-image-{VERSION}/rockchip", root / "usr/lib/firmware/absolute-link")
    return directory


def test_device_trees_of_other_boards_go(write: Write, tmp_path: Path) -> None:
    root = tmp_path / "root"
    directory = device_trees(root)
    spec = load_spec(write("s.yaml", "name: s\ndevice: pi4\nslim: {device_trees: true}\n"))
    prune.prune_device_trees(Runner(log_path=tmp_path / "log"), spec, root)
    assert set(prune.tree_files(directory, root)) == {
        "broadcom/bcm2711-rpi-4-b.dtb",
        "overlays/disable-bt.dtbo",
    }
    assert not (directory / "rockchip").exists()
    # an absolute link is read inside the image: it leaves the firmware tree
    assert prune.tree_files(root / "usr/lib/firmware", root) == {"absolute-link": None}


def test_savings_are_measured_without_removing_anything(write: Write, tmp_path: Path) -> None:
    root = tmp_path / "root"
    rootfs_with_modules(root)
    firmware_tree(root / "usr/lib/firmware")
    device_trees(root)
    spec = load_spec(write("s.yaml", "name: s\ndevice: pi4\n"))
    found = prune.savings(spec, root)
    # pi4 names none of these modules: all but the filesystems', systemd's and the load list's go
    assert found["slim.modules"] == 3 * 1024
    assert found["slim.firmware"] == 4096 + 100 + 1
    assert found["slim.device_trees"] == 2000
    assert (root / "usr/lib/firmware/cypress/cyfmac4356-pcie.bin").exists()
    config = "name: s\ndevice: pi4\nslim: {modules: true, firmware: true, device_trees: true}\n"
    assert prune.savings(load_spec(write("t.yaml", config)), root) == {}


@pytest.mark.parametrize("path", ["../etc/shadow", "/etc/shadow", "brcm/../../etc"])
def test_a_firmware_path_must_stay_in_the_firmware_directory(write: Write, path: str) -> None:
    with pytest.raises(ImagesmithError) as caught:
        load_spec(
            write("s.yaml", f"name: s\ndevice: pi4\nslim: {{firmware: true, keep_firmware: ['{path}']}}\n")
        )
    assert caught.value.exit_code == 2 and "keep_firmware" in caught.value.message


def test_no_initramfs_only_where_the_kernel_mounts_the_root_itself(write: Write) -> None:
    from imagesmith.stages.customize import check_spec

    with pytest.raises(ImagesmithError) as caught:
        check_spec(load_spec(write("d.yaml", "name: s\ndevice: pi4\nslim: {initramfs: true}\n")))
    assert (
        caught.value.exit_code == 2 and "the debian kernel of pi4 needs an initramfs" in caught.value.message
    )
    assert caught.value.hint is not None and "kernel: raspberrypi" in caught.value.hint
    with pytest.raises(ImagesmithError) as caught:
        check_spec(load_spec(write("q.yaml", "name: s\ndevice: qemu-amd64\nslim: {initramfs: true}\n")))
    assert caught.value.hint == "leave slim.initramfs out"
    with pytest.raises(ImagesmithError) as caught:
        config = "name: s\ndevice: pi4\nkernel: raspberrypi\nlayout: ab-tryboot\nslim: {initramfs: true}\n"
        check_spec(load_spec(write("a.yaml", config)))
    assert "has a data partition" in caught.value.message


def test_without_an_initramfs_the_firmware_loads_none_and_the_root_is_checked_first(write: Write) -> None:
    from imagesmith.stages import bootfiles
    from imagesmith.stages.customize import check_spec

    lean = load_spec(write("r.yaml", "name: s\ndevice: pi4\nkernel: raspberrypi\nslim: {initramfs: true}\n"))
    check_spec(lean)
    assert "initramfs" not in bootfiles.config_txt(lean) and "kernel=kernel8.img" in bootfiles.config_txt(
        lean
    )
    assert " ro " in bootfiles.cmdline(lean) and " rw " not in bootfiles.cmdline(lean)
    usual = load_spec(write("u.yaml", "name: s\ndevice: pi4\nkernel: raspberrypi\n"))
    assert "initramfs initramfs8 followkernel" in bootfiles.config_txt(usual)
    assert " rw " in bootfiles.cmdline(usual)
