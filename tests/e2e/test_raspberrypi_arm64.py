"""A real Pi 4 build (arm64) with the catalog's raspberrypi-archive layer, pointed at a
signed archive made here that stands in for the Raspberry Pi archive: its kernel package
(the real one's file layout, a marker for a kernel) replaces Debian's. The image uses the
tryboot layout with a read-only root: both boot slots are laid out as Raspberry Pi OS
lays them out, each naming its own root slot (a Pi cannot be booted in QEMU here)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
from pathlib import Path

import jsonschema
import pytest

from imagesmith.outputs.files import sha256

from .aptrepo import Deb, archive, make_key, stop_agent
from .conftest import Built, build, check_filesystem, extract, imagesmith, installed, same_bytes

pytestmark = pytest.mark.slow
VERSION = "6.12.47+rpt-rpi-v8"
KERNEL = "stand-in for the Raspberry Pi kernel\n"


PROBE_HOOK = "/etc/initramfs-tools/hooks/path-probe"
#: an initramfs hook that looks a program up in PATH and copies it, as some hooks do
PROBE = """#!/bin/sh
[ "$1" = prereqs ] && exit 0
. /usr/share/initramfs-tools/hook-functions
copy_exec "$(command -v sed)" /usr/bin/path-probe
"""


def kernel_package() -> Deb:
    """linux-image-rpi-v8 as the Raspberry Pi archive ships it: the kernel in /boot, its
    modules' directory, device trees and overlays under /usr/lib/linux-image-VERSION."""
    lib = f"/usr/lib/linux-image-{VERSION}"
    return Deb(
        "linux-image-rpi-v8",
        "1:6.12.47-1+rpt1",
        {
            f"/boot/vmlinuz-{VERSION}": KERNEL,
            f"/boot/config-{VERSION}": "CONFIG_BLK_DEV_INITRD=y\nCONFIG_RD_GZIP=y\nCONFIG_RD_ZSTD=y\n",
            f"/usr/lib/modules/{VERSION}/modules.order": "",
            f"/usr/lib/modules/{VERSION}/modules.builtin": "",
            f"{lib}/broadcom/bcm2711-rpi-4-b.dtb": "device tree: Pi 4 B\n",
            f"{lib}/broadcom/bcm2711-rpi-400.dtb": "device tree: Pi 400\n",
            f"{lib}/overlays/disable-bt.dtbo": "overlay: disable-bt\n",
            f"{lib}/overlays/README": "overlays\n",
        },
        architecture="arm64",
    )


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Built:
    base = tmp_path_factory.mktemp("raspberrypi")
    key = make_key(base / "gpg", "raspberrypi-standin")
    archive(base / "archive", "trixie", [kernel_package()], base / "gpg")
    fingerprint = subprocess.run(
        ["gpg", "--homedir", str(base / "gpg"), "--with-colons", "--fingerprint"],
        capture_output=True, text=True, check=True,
    ).stdout.split("fpr:::::::::")[1].split(":")[0]  # fmt: skip
    stop_agent(base / "gpg")
    project = base / "project"
    project.mkdir()
    update_key, update_cert = project / "update.key.pem", project / "update.cert.pem"
    argv = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(update_key),
            "-out", str(update_cert), "-days", "3650", "-subj", "/CN=test"]  # fmt: skip
    subprocess.run(argv, check=True, capture_output=True)
    (project / "raspberrypi.asc").write_text(key.read_text())
    config = project / "image.yaml"
    config.write_text(
        "name: rpi\ndevice: pi4\nlayout: ab-tryboot\nread_only: true\nlayers: [raspberrypi-archive]\n"
        "packages: [tzdata]\nconfig_txt: [dtoverlay=disable-bt]\nslim: {firmware: true}\n"
        "publish:\n  compress: zstd\n  imager: {url: 'https://images.example.com/pi/'}\n"
        "update: {key: update.key.pem, cert: update.cert.pem}\n"
        f"files:\n  - {{target: {PROBE_HOOK}, mode: '0755', content: {json.dumps(PROBE)}}}\n"
        "sources:\n"
        f"  - {{name: raspberrypi, url: 'file://{base / 'archive'}', key: raspberrypi.asc,\n"
        f"     fingerprint: {fingerprint}}}\n"
    )
    built = build(config, base / "out")
    return dataclasses.replace(built, boot_index=1, root_index=3)  # boot slot A, root slot A


@pytest.fixture(scope="module")
def lean(image: Built) -> Built:
    """The same kernel with no initramfs (slim.initramfs) on the simple layout. Its packages
    are those of ``image`` (what the A/B layout and the updater bring are named here), so
    both installs are the same stages and come from the cache."""
    project = image.output.parent / "project"
    text = (project / "image.yaml").read_text()
    (project / "lean.yaml").write_text(
        "name: lean\ndevice: pi4\nlayout: simple\nlayers: [raspberrypi-archive]\n"
        "packages: [tzdata, busybox, e2fsprogs, fdisk, mtools, rauc, rauc-service]\n"
        "slim: {initramfs: true}\n" + text[text.index("sources:") :]
    )
    return build(project / "lean.yaml", image.output.parent / "lean")


def test_no_initramfs_with_a_kernel_that_mounts_the_root_itself(lean: Built) -> None:
    config = lean.boot_file("config.txt")
    assert "kernel=kernel8.img" in config and "initramfs" not in config
    assert lean.boot_file("kernel8.img") == KERNEL
    listing = subprocess.run(["mdir", "-b", "-i", lean.boot(), "::"], capture_output=True, text=True,
                             check=True).stdout  # fmt: skip
    assert "initramfs8" not in listing and "initrd.img" not in listing
    assert " ro fsck.repair=yes rootwait" in lean.boot_file("cmdline.txt"), "systemd checks the root first"
    assert "initrd.img" not in lean.debugfs("ls /boot")
    assert "==> packages: from the cache" in (lean.output / "build.log").read_text(), "shared with image"


def slot_b(image: Built) -> Built:
    return dataclasses.replace(image, boot_index=2, root_index=4)


def boot_names(image: Built, directory: str = "::/") -> set[str]:
    listing = subprocess.run(
        ["mdir", "-b", "-i", image.boot(), directory], capture_output=True, text=True, check=True
    )
    return {line.rstrip("/").rsplit("/", 1)[-1] for line in listing.stdout.split()}


def test_only_the_pi_4_s_wireless_firmware_is_left(image: Built) -> None:
    """slim.firmware on Debian's real firmware-brcm80211: the Pi 4's chip (43455, its links
    into cypress/ followed), the regulatory database, nothing of other chips."""
    brcm, cypress = image.debugfs("ls /usr/lib/firmware/brcm"), image.debugfs("ls /usr/lib/firmware/cypress")
    assert "brcmfmac43455-sdio.bin" in brcm and "brcmfmac43455-sdio.raspberrypi,4-model-b.txt" in brcm
    assert "cyfmac43455-sdio.bin" in cypress and "cyfmac43455-sdio.clm_blob" in cypress
    assert "4356" not in brcm + cypress and "43430" not in brcm + cypress
    assert "regulatory.db" in image.debugfs("ls /usr/lib/firmware")
    assert "slim.firmware: kept" in (image.output / "build.log").read_text()
    # raspi-firmware's GPU firmware: the Pi 4's own (start4*.elf, fixup4*.dat), no other model's
    gpu = image.debugfs("ls /usr/lib/raspi-firmware").split()
    assert "start4.elf" in gpu and "fixup4.dat" in gpu and "start4x.elf" in gpu
    assert not [n for n in gpu if n in ("bootcode.bin", "start.elf", "fixup.dat") or n.startswith("start_")]
    # the package stays installed: the SBOM is unchanged by pruning
    assert "firmware-brcm80211" in installed(image.cat("/var/lib/dpkg/status"))


def test_the_kernel_comes_from_the_archive_and_debian_s_is_not_installed(image: Built) -> None:
    versions = installed(image.cat("/var/lib/dpkg/status"))
    assert versions["linux-image-rpi-v8"] == ("1:6.12.47-1+rpt1", "arm64")
    assert "linux-image-arm64" not in versions and not any(n.startswith("linux-image-6") for n in versions)
    assert "raspi-firmware" in versions  # the firmware, from Debian here: the stand-in has none
    manifest = json.loads((image.output / "manifest.json").read_text())
    by_name = {p["name"]: p for p in manifest["packages"]}
    assert by_name["linux-image-rpi-v8"]["archive"] == "raspberrypi"
    assert "archive" not in by_name["raspi-firmware"]


def test_the_boot_partition_is_laid_out_for_the_raspberry_pi_kernel(image: Built) -> None:
    names = boot_names(image)
    for required in ("kernel8.img", "initramfs8", "bcm2711-rpi-4-b.dtb", "bcm2711-rpi-400.dtb",
                     "overlays", "config.txt", "cmdline.txt", "start4.elf", "fixup4.dat"):  # fmt: skip
        assert required in names, (required, names)
    assert not [n for n in names if n.startswith(("vmlinuz", "initrd.img"))], names
    # slim.firmware: no GPU firmware of other models (a Pi 3's bootcode.bin and start.elf)
    assert not names & {"bootcode.bin", "start.elf", "fixup.dat", "start_x.elf", "start_cd.elf"}, names
    assert "disable-bt.dtbo" in boot_names(image, "::/overlays")
    assert image.boot_file("kernel8.img") == KERNEL


def test_the_initramfs_is_the_one_built_for_this_kernel(image: Built, tmp_path: Path) -> None:
    on_boot, in_root = tmp_path / "initramfs8", tmp_path / "initrd.img"
    subprocess.run(["mcopy", "-i", image.boot(), "::initramfs8", str(on_boot)], check=True)
    image.debugfs(f"dump /boot/initrd.img-{VERSION} {in_root}")
    data = on_boot.read_bytes()
    assert data == in_root.read_bytes()
    assert data[:4] in (b"\x28\xb5\x2f\xfd", b"070701"[:4]) and len(data) > 100_000  # zstd or cpio


def test_a_hook_copying_a_program_found_in_path_gets_the_image_s_own(image: Built, tmp_path: Path) -> None:
    """The hooks first ran with the tools tree's programs first in PATH (stages/native.py);
    the probe hook copied the script that stands for sed, cpio's guard saw it, and the
    hooks ran again emulated: the initramfs holds the image's sed, no script of the build."""
    log = (image.output / "build.log").read_text()
    assert "postinst hooks with " in log and " programs of the tools tree run natively (" in log
    assert "a hook copied one of the programs run natively into its output (/var/tmp/mkinitramfs_" in log
    assert "/usr/bin/path-probe in the tree mkinitramfs packed): running the hooks again, emulated" in log
    packed = tmp_path / "initrd.img"
    image.debugfs(f"dump /boot/initrd.img-{VERSION} {packed}")
    data = packed.read_bytes()
    if data[:4] == b"\x28\xb5\x2f\xfd":
        data = subprocess.run(["zstd", "-dc", str(packed)], capture_output=True, check=True).stdout
    assert b"/run/imagesmith-native" not in data
    copied = data[data.index(b"usr/bin/path-probe\0") :][:64]  # the name, then the file: an arm64 program
    assert b"\x7fELF" in copied


def test_config_and_cmdline_follow_the_kernel(image: Built) -> None:
    config = image.boot_file("config.txt").splitlines()
    assert config[0].startswith("# written by imagesmith for the raspberrypi kernel")
    assert config[1:] == ["arm_64bit=1", "enable_uart=1", "kernel=kernel8.img",
                          "initramfs initramfs8 followkernel", "dtoverlay=disable-bt"]  # fmt: skip
    parts = image.partitions
    root_a, root_b = parts[3]["uuid"].lower(), parts[4]["uuid"].lower()
    expected = "console=tty0 console=ttyS0,115200 root=PARTUUID={} ro fsck.repair=yes rootwait\n"
    assert image.boot_file("cmdline.txt") == expected.format(root_a)
    assert slot_b(image).boot_file("cmdline.txt") == expected.format(root_b)
    assert image.cat("/etc/apt/keyrings/imagesmith-raspberrypi.asc").startswith("-----BEGIN PGP PUBLIC KEY")


def test_tryboot_layout_autoboot_and_both_slots(image: Built, tmp_path: Path) -> None:
    parts = image.partitions
    assert [p["name"] for p in parts] == ["AUTOBOOT", "BOOTA", "BOOTB", "rootA", "rootB", "data"]
    common = dataclasses.replace(image, boot_index=0)
    assert boot_names(common) == {"autoboot.txt"}
    assert common.boot_file("autoboot.txt") == (
        "[all]\ntryboot_a_b=1\nboot_partition=2\n[tryboot]\nboot_partition=3\n"
    )
    assert boot_names(slot_b(image)) == boot_names(image)  # the same firmware, kernel, trees
    assert slot_b(image).boot_file("kernel8.img") == KERNEL
    assert slot_b(image).boot_file("config.txt") == image.boot_file("config.txt")
    for entry, fs in zip(parts, ["vfat"] * 3 + ["ext4"] * 3, strict=True):
        check_filesystem(image.image, entry, fs, tmp_path)
    assert same_bytes(image.image, parts[3], parts[4]), "root B is a copy of root A"
    env = image.cat("/usr/lib/imagesmith/tryboot.env")
    assert f"AUTOBOOT=/dev/disk/by-partuuid/{parts[0]['uuid'].lower()}\nBOOT_A=2\nBOOT_B=3\n" in env
    assert "imagesmith-tryboot" in image.debugfs("ls /usr/sbin")
    assert "mtools" in installed(image.cat("/var/lib/dpkg/status"))


def test_the_initramfs_brings_the_data_partition_and_the_read_only_root(image: Built, tmp_path: Path) -> None:
    initrd = tmp_path / "initramfs8"
    subprocess.run(["mcopy", "-i", image.boot(), "::initramfs8", str(initrd)], check=True)
    unpacked = initrd.read_bytes()
    if not unpacked.startswith(b"070701"):  # zstd, initramfs-tools' default
        unpacked = subprocess.run(["zstd", "-dc", str(initrd)], capture_output=True, check=True).stdout
    listing = subprocess.run(["cpio", "-t"], input=unpacked, capture_output=True, check=True).stdout.decode()
    for needed in ("scripts/init-bottom/imagesmith-storage", "conf/imagesmith-storage.env",
                   "bin/imagesmith-etc-update-rule", "usr/sbin/mke2fs", "usr/sbin/sfdisk"):  # fmt: skip
        assert needed in listing, needed
    assert image.cat("/usr/lib/imagesmith/etc.sha256").count("\n") > 50


def test_published_for_raspberry_pi_imager(image: Built) -> None:
    listing = json.loads((image.output / "rpi.rpi-imager.json").read_text())
    schema = Path(__file__).parents[1] / "data" / "rpi-imager" / "os-list-schema.json"
    jsonschema.validate(listing, json.loads(schema.read_text()))
    (item,) = listing["os_list"]
    packed = image.output / "rpi.img.zst"
    assert item["url"] == "https://images.example.com/pi/rpi.img.zst" and item["devices"] == ["pi4-64bit"]
    assert item["extract_sha256"] == sha256(image.image) and item["image_download_sha256"] == sha256(packed)
    unpacking = subprocess.Popen(["zstd", "-dc", str(packed)], stdout=subprocess.PIPE)
    assert unpacking.stdout is not None
    assert hashlib.file_digest(unpacking.stdout, "sha256").hexdigest() == sha256(image.image)
    assert unpacking.wait() == 0


def test_the_update_bundle_holds_slot_a_and_the_image_trusts_its_signer(image: Built, tmp_path: Path) -> None:
    cert = image.output.parent / "project" / "update.cert.pem"
    bundle = image.output / "rpi.raucb"
    assert "rpi.raucb" in (image.output / "SHA256SUMS").read_text()
    subprocess.run(["rauc", "info", f"--keyring={cert}", str(bundle)], check=True, capture_output=True)
    extracted = tmp_path / "bundle"
    subprocess.run(["rauc", "extract", f"--keyring={cert}", str(bundle), str(extracted)], check=True,
                   capture_output=True)  # fmt: skip
    for name, entry in (("rootfs.ext4", image.partitions[3]), ("bootfs.vfat", image.partitions[1])):
        part = extract(image.image, entry, tmp_path / name)
        assert subprocess.run(["cmp", "--quiet", str(part), str(extracted / name)]).returncode == 0, name
        part.unlink()
    conf = image.cat("/etc/rauc/system.conf")
    assert "compatible=rpi-pi4\nbootloader=custom\n" in conf and "bootname=B" in conf
    assert image.cat("/etc/rauc/keyring.pem") == cert.read_text()
    manifest = json.loads((image.output / "manifest.json").read_text())
    assert manifest["update"]["compatible"] == "rpi-pi4" and manifest["update"]["rauc"].startswith("rauc ")
    # a damaged payload is refused (rauc info of a verity bundle only checks the signature)
    damaged = tmp_path / "damaged.raucb"
    data = bytearray(bundle.read_bytes())
    data[len(data) // 3] ^= 0xFF
    damaged.write_bytes(bytes(data))
    refused = subprocess.run(["rauc", "extract", f"--keyring={cert}", str(damaged), str(tmp_path / "x")],
                             capture_output=True)  # fmt: skip
    assert refused.returncode != 0


def test_verify_checks_the_bundle_s_signer_and_the_build_says_how_to_install_it(image: Built) -> None:
    project = image.output.parent / "project"
    good = imagesmith("verify", str(image.output), "--keyring", str(project / "update.cert.pem"))
    assert "ok      rpi.raucb (rauc: signed by a certificate of update.cert.pem)" in good.stdout
    other = project / "other.pem"
    argv = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(project / "o.key"),
            "-out", str(other), "-days", "1", "-subj", "/CN=other"]  # fmt: skip
    subprocess.run(argv, check=True, capture_output=True)
    refused = imagesmith("verify", str(image.output), "--keyring", str(other), check=False)
    assert refused.returncode == 1 and "FAILED  rpi.raucb: rauc refuses it with other.pem" in refused.stdout
    assert "rauc install rpi.raucb" in (image.output / "build.log").read_text()
