"""Field updates end to end, on real arm64 packages: examples/ota.yaml built for the Pi 4
(U-Boot for the Pi runs the boot script) and its qemu variant, whose whole update cycle
runs in QEMU through U-Boot: install a good bundle, boot the new slot and commit it,
install a bundle whose health check fails, watch the device go back to the good slot by
itself, then cut the power during an install."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from imagesmith.stages import uboot

from ..test_update import key_pair
from .conftest import REPO, Built, build, extract, imagesmith

pytestmark = pytest.mark.slow
PROBE = Path(__file__).parent / "data" / "ota" / "probe"
#: the test's health check: the example's, and a file a broken update brings
BROKEN = "/usr/lib/ota-test-broken"
HEALTH = f"systemctl is-active --quiet ssh.service systemd-networkd.service && test ! -e {BROKEN}"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The examples, with an update key pair made as the example says."""
    work = tmp_path_factory.mktemp("ota")
    examples = work / "examples"
    shutil.copytree(REPO / "examples", examples, ignore=shutil.ignore_patterns("update.*.pem"))
    key, cert = key_pair(examples / "keys", "update")
    assert (key.name, cert.name) == ("update.key.pem", "update.cert.pem")
    return examples


@pytest.fixture(scope="module")
def vm(project: Path) -> Built:
    probe = json.dumps([{"source": str(PROBE), "target": "/"}])
    return build(
        project / "ota.yaml",
        project.parent / "out-qemu",
        "--variant", "qemu",
        "--set", f"files={probe}",
        "--set", "services={enable: [ota-probe.service]}",
        "--set", "update.attempts=2",
        "--set", f"update.health={json.dumps(HEALTH)}",
    )  # fmt: skip


def boot_files(built: Built) -> list[str]:
    return [line.split()[-1] for line in subprocess.run(
        ["mdir", "-b", "-i", f"{built.image}@@{built.partition_offset(0)}", "::"],
        capture_output=True, text=True, check=True,
    ).stdout.split()]  # fmt: skip


def test_the_boot_partition_holds_u_boot_its_script_and_two_copies_of_the_state(vm: Built) -> None:
    names = {Path(n).name for n in boot_files(vm)}
    assert {"u-boot.bin", "boot.scr", "uboot.env", "uboot-redund.env"} <= names
    assert not any(n.startswith(("vmlinuz", "initrd")) for n in names), "each slot boots its own kernel"
    for name, counter in zip(uboot.ENV_FILES, (1, 0), strict=True):
        raw = subprocess.run(["mcopy", "-n", "-i", f"{vm.image}@@{vm.partition_offset(0)}", f"::{name}", "-"],
                             capture_output=True, check=True).stdout  # fmt: skip
        assert uboot.read_copy(raw) == (counter, uboot.initial_state(2))
    assert vm.cat("/etc/fw_env.config").splitlines()[1:] == [
        "/boot/firmware/uboot.env 0x0000 0x4000",
        "/boot/firmware/uboot-redund.env 0x0000 0x4000",
    ]
    conf = vm.cat("/etc/rauc/system.conf")
    assert "bootloader=uboot\n" in conf and "boot-attempts-primary=2\n" in conf
    assert "RuntimeWatchdogSec=30s" in vm.cat("/etc/systemd/system.conf.d/imagesmith-watchdog.conf")
    assert HEALTH in vm.cat("/usr/lib/imagesmith/health")


def bundle_disk(bundle: Path, work: Path) -> Path:
    """An ext4 image holding ``bundle`` as update.raucb, to attach to the guest."""
    tree = work / "tree"
    tree.mkdir(parents=True)
    shutil.copyfile(bundle, tree / "update.raucb")
    disk = work / "bundle.ext4"
    size = bundle.stat().st_size // 1024 // 1024 + 64
    subprocess.run(["mke2fs", "-q", "-t", "ext4", "-d", str(tree), str(disk), f"{size}M"], check=True)
    shutil.rmtree(tree)
    return disk


def broken_bundle(vm: Built, project: Path, work: Path) -> Path:
    """A signed bundle of the same root with the marker the health check refuses."""
    content = work / "broken"
    content.mkdir(parents=True)
    root = extract(vm.image, vm.partitions[1], content / "rootfs.ext4")
    empty = work / "empty"
    empty.write_text("")
    command = ["debugfs", "-w", "-R", f"write {empty} {BROKEN}", str(root)]
    subprocess.run(command, check=True, capture_output=True)
    (content / "manifest.raucm").write_text(
        "[update]\ncompatible=ota-qemu-arm64\nversion=broken\n\n[bundle]\nformat=verity\n\n"
        "[image.rootfs]\nfilename=rootfs.ext4\n"
    )
    target = work / "broken.raucb"
    keys = project / "keys"
    command = ["rauc", "bundle", f"--cert={keys / 'update.cert.pem'}", f"--key={keys / 'update.key.pem'}"]
    subprocess.run([*command, str(content), str(target)], check=True, capture_output=True)
    shutil.rmtree(content)
    return target


def boot(vm: Built, disk: Path, log: Path, expect: str, attach: Path | None = None) -> str:
    args = ["boot", str(vm.image), "--disk", str(disk), "--console-log", str(log), "--timeout", "1200",
            "--expect", expect, *(["--attach", str(attach)] if attach else [])]  # fmt: skip
    imagesmith(*args, timeout=1500)
    return log.read_text(errors="replace")


def test_an_update_is_committed_a_broken_one_rolled_back_and_a_power_cut_harmless(
    vm: Built, project: Path, tmp_path: Path
) -> None:
    good = bundle_disk(vm.output / "ota.raucb", tmp_path / "good")
    broken = bundle_disk(broken_bundle(vm, project, tmp_path), tmp_path / "bad")
    disk = tmp_path / "device.qcow2"  # the device's card across reboots

    # factory state: slot A boots, is healthy and committed, and installs the update
    said = boot(vm, disk, tmp_path / "1.log", "reboot: ", attach=good)
    assert "imagesmith-boot: slot A (order A B, attempts left A 1 B 2)" in said
    assert "imagesmith-mark-good: slot A is marked good" in said
    assert "ota-probe: booted A" in said and "ota-probe: installed" in said

    # the update: slot B boots first, is healthy and committed; it installs the broken one
    said = boot(vm, disk, tmp_path / "2.log", "reboot: ", attach=broken)
    assert "imagesmith-boot: slot B (order B A," in said
    assert "imagesmith-mark-good: slot B is marked good" in said
    assert "ota-probe: booted B" in said and "ota-probe: slot B good" in said
    assert "ota-probe: installed" in said

    # the broken update in slot A: unhealthy, not committed, a reboot, twice (attempts: 2)
    for attempt, left in ((3, 1), (4, 0)):
        said = boot(vm, disk, tmp_path / f"{attempt}.log", "reboot: ")
        assert f"imagesmith-boot: slot A (order A B, attempts left A {left} B " in said
        assert "imagesmith-mark-good: slot A is not marked good: the health check failed" in said

    # no attempts left for A: back on B by itself, which RAUC shows, with A bad
    said = boot(vm, disk, tmp_path / "5.log", "60% Copying image to rootfs.0", attach=good)
    assert "imagesmith-boot: slot B (order A B, attempts left A 0 B " in said
    assert "ota-probe: booted B" in said and "ota-probe: slot A bad" in said
    assert "imagesmith-mark-good: slot B is marked good" in said

    # the power cut while that install wrote slot A (qemu was stopped): still slot B
    said = boot(vm, disk, tmp_path / "6.log", "ota-probe: done")
    assert "ota-probe: booted B" in said and "ota-probe: slot B good" in said


@pytest.fixture(scope="module")
def pi(project: Path) -> Built:
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
