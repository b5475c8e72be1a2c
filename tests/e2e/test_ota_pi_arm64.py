"""examples/ota.yaml built for the Pi 4 on its `ab` layout (an MBR): the firmware runs
U-Boot for the Pi, whose boot script boots slot A's kernel (run on QEMU's Raspberry Pi 3
machine, the same U-Boot build). A module of its own, so that it runs beside the qemu
variant's update cycle (test_ota_arm64) instead of after it."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pytest

from .conftest import Built, build
from .test_ota_arm64 import boot_files, examples_with_keys

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pi(tmp_path_factory: pytest.TempPathFactory) -> Built:
    project = examples_with_keys(tmp_path_factory.mktemp("ota-pi"))
    return build(project / "ota.yaml", project.parent / "out-pi")


def test_on_the_pi_the_firmware_runs_u_boot_which_boots_the_slot_s_kernel(pi: Built) -> None:
    names = {Path(n).name for n in boot_files(pi)}
    assert {"u-boot.bin", "boot.scr", "uboot.env", "uboot-redund.env", "bcm2711-rpi-4-b.dtb"} <= names
    assert not any(n.startswith(("vmlinuz", "initrd", "kernel8")) for n in names)
    config = pi.boot_file("config.txt").splitlines()
    assert "kernel=u-boot.bin" in config and "arm_64bit=1" in config
    assert not any(line.startswith(("initramfs", "kernel=vmlinuz")) for line in config)
    shipped = pi.debugfs("stat /usr/lib/u-boot/rpi_arm64/u-boot.bin")
    assert "Type: regular" in shipped
    assert pi.debugfs("stat /boot/vmlinuz").count("Type: symlink") == 1
    assert "bootloader=uboot\n" in pi.cat("/etc/rauc/system.conf")
    assert (pi.output / "ota.raucb").is_file()


def test_the_pi_s_u_boot_runs_the_boot_script_and_starts_slot_a_s_kernel(pi: Built, tmp_path: Path) -> None:
    """QEMU's Raspberry Pi 3 machine runs the image's U-Boot for the Pi (the same build
    runs on the Pi 4) from the card, as the firmware would: the boot script picks slot A
    and boots its kernel."""
    uboot_bin, dtb = tmp_path / "u-boot.bin", tmp_path / "board.dtb"
    boot = f"{pi.image}@@{pi.partition_offset(0)}"
    subprocess.run(["mcopy", "-n", "-i", boot, "::u-boot.bin", str(uboot_bin)], check=True)
    trees = [line.split()[-1] for line in pi.debugfs("ls -l /usr/lib").splitlines() if "linux-image-" in line]
    tree = f"/usr/lib/{trees[-1]}/broadcom/bcm2837-rpi-3-b.dtb"
    read = subprocess.run(["debugfs", "-R", f"cat {tree}", pi.root()], capture_output=True, check=True)
    dtb.write_bytes(read.stdout)
    card = tmp_path / "card.qcow2"  # QEMU's SD card wants a power-of-two size
    size = 1 << (pi.image.stat().st_size - 1).bit_length()
    overlay = ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(pi.image), str(card)]
    subprocess.run([*overlay, str(size)], check=True)
    argv = ["qemu-system-aarch64", "-M", "raspi3b", "-kernel", str(uboot_bin), "-dtb", str(dtb), "-drive",
            f"if=sd,format=qcow2,file={card}", "-nographic", "-serial", "null", "-serial", "stdio",
            "-monitor", "none", "-no-reboot"]  # fmt: skip
    console = run_until(argv, "Starting kernel", 600)
    assert "imagesmith-boot: slot A (order A B, attempts left A 2 B 3)" in console
    assert "Starting kernel" in console and "did not boot" not in console


def run_until(argv: list[str], text: str, timeout: float) -> str:
    """Run ``argv`` until its output shows ``text``, or for ``timeout`` seconds; its output."""
    import pexpect

    seen = io.BytesIO()
    child = pexpect.spawn(argv[0], argv[1:], timeout=timeout, logfile=None)
    child.logfile_read = seen
    try:
        child.expect_exact(text)
    except (pexpect.TIMEOUT, pexpect.EOF):
        pass
    finally:
        child.close(force=True)
    return seen.getvalue().decode(errors="replace")
