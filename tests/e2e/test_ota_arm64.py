"""Field updates end to end, on real arm64 packages: the qemu variant of examples/ota.yaml
on `ab-gpt` (the Pi 4 build, on `ab`, is test_ota_pi_arm64's), whose whole update cycle
runs in QEMU through U-Boot: install a good bundle,
boot the new slot and commit it, install a bundle whose health check fails, watch the
device go back to the good slot by itself, then cut the power during an install. The
qemu build is also the arm64 test of the GPT A/B layout: its table, identifiers,
filesystems, pruned modules, and a data partition that grows on the first boot while
the root stays read-only."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from imagesmith.disk import table
from imagesmith.stages import uboot

from ..test_update import key_pair
from .conftest import REPO, Built, build, check_filesystem, extract, imagesmith, kernel_modules, same_bytes

pytestmark = pytest.mark.slow
PROBE = Path(__file__).parent / "data" / "ota" / "probe"
#: the test's health check: the example's, and a file a broken update brings
BROKEN = "/usr/lib/ota-test-broken"
HEALTH = f"systemctl is-active --quiet ssh.service systemd-networkd.service && test ! -e {BROKEN}"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return examples_with_keys(tmp_path_factory.mktemp("ota"))


def examples_with_keys(work: Path) -> Path:
    """The examples, with an update key pair made as the example says."""
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
        "--set", "layout=ab-gpt",  # the Pi build has the MBR one
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


def test_the_table_is_gpt_with_the_layout_s_partitions(vm: Built) -> None:
    assert vm.table["label"] == "gpt"
    boot, root_a, root_b, data = vm.partitions
    assert boot["type"] == table.GPT_TYPES["basic-data"] and boot["name"] == "BOOT"
    assert [p["type"] for p in (root_a, root_b, data)] == [table.GPT_TYPES["linux"]] * 3
    assert [p["name"] for p in (root_a, root_b, data)] == ["rootA", "rootB", "data"]
    # the backup GPT has its room after the last partition
    end = (data["start"] + data["size"]) * 512
    assert vm.image.stat().st_size - end >= table.GPT_BACKUP


def test_the_boot_script_finds_each_slot_by_its_gpt_guid_read_only(vm: Built) -> None:
    script = subprocess.run(["mcopy", "-n", "-i", f"{vm.image}@@{vm.partition_offset(0)}", "::boot.scr", "-"],
                            capture_output=True, check=True).stdout.decode(errors="replace")  # fmt: skip
    for slot, entry in zip("AB", vm.partitions[1:3], strict=True):
        assert f"setenv root_{slot} PARTUUID={entry['uuid'].lower()}" in script
    args = next(line for line in script.splitlines() if line.startswith("setenv bootargs "))
    assert "ro" in args.strip('"').split()
    assert vm.partitions[1]["uuid"].lower() not in vm.cat("/etc/fstab").lower(), "fstab names no slot"


def test_every_filesystem_passes_its_check(vm: Built, tmp_path: Path) -> None:
    for entry, fs in zip(vm.partitions, ["vfat", "ext4", "ext4", "ext4"], strict=True):
        check_filesystem(vm.image, entry, fs, tmp_path)
    assert same_bytes(vm.image, vm.partitions[1], vm.partitions[2]), "root B is a copy of root A"


def test_modules_are_pruned_to_the_virtual_machine_s(vm: Built) -> None:
    version, modules = kernel_modules(vm)
    names = set(modules.paths)
    assert {"virtio_blk", "virtio_net", "overlay", "ext4", "vfat", "squashfs", "dm_verity"} <= names
    assert len(names) < 90 and "brcmfmac" not in names
    # Debian's device trees of every arm64 board are gone
    listing = vm.debugfs(f"ls -p /usr/lib/linux-image-{version}").splitlines()
    assert {e.split("/")[5] for e in listing if e.count("/") > 5} == {".", ".."}


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
    assert "imagesmith-data: grew partition 4 of /dev/vda" in said
    assert "imagesmith-data: / read-only, /etc kept on /dev/vda4" in said
    assert "imagesmith-growroot: " not in said, "the root slots never grow"
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
