"""imagesmith-tryboot against a real disk image: a GPT whose first partition is the FAT
common boot partition with autoboot.txt, as the ab-tryboot layout makes it; the firmware's
/chosen/bootloader stood in for by files (no build, no mount)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from imagesmith.stages import storage

TOOL = storage.FILES / "tryboot" / "imagesmith-tryboot"
MiB = 1024 * 1024


def make_disk(disk: Path, work: Path) -> None:
    """A GPT image whose first partition is a FAT with autoboot.txt, as the layout makes it."""
    with open(disk, "wb") as handle:
        handle.truncate(72 * MiB)
    subprocess.run(["sfdisk", "--quiet", str(disk)], input="label: gpt\nstart=2048, size=64MiB\n",
                   text=True, check=True)  # fmt: skip
    part = work / "p1.img"
    with open(part, "wb") as handle:
        handle.truncate(64 * MiB)
    subprocess.run(["mkfs.vfat", "-F", "32", "-n", "AUTOBOOT", str(part)], check=True, capture_output=True)
    (work / "autoboot.txt").write_text(sections(2, 3))
    subprocess.run(["mcopy", "-i", str(part), str(work / "autoboot.txt"), "::autoboot.txt"], check=True)
    with open(disk, "r+b") as handle:
        handle.seek(MiB)
        handle.write(part.read_bytes())


class Device:
    """The disk image, the firmware's view of the boot, and the tool's settings."""

    def __init__(self, root: Path, template: Path) -> None:
        self.root = root
        self.disk = root / "disk.img"
        subprocess.run(["cp", "--sparse=always", str(template), str(self.disk)], check=True)
        self.chosen = root / "chosen"
        self.chosen.mkdir()
        self.boot(2, tryboot=False)
        (root / "tryboot.env").write_text(
            f"AUTOBOOT={self.disk}@@{MiB}\nBOOT_A=2\nBOOT_B=3\nSTATE={root}/data/tryboot.state\n"
            f"CHOSEN={self.chosen}\nREBOOT_PARAM={root}/run/reboot-param\n"
        )

    def boot(self, partition: int, tryboot: bool) -> None:
        """What the firmware tells the system it booted (big-endian u32 properties)."""
        (self.chosen / "partition").write_bytes(partition.to_bytes(4, "big"))
        (self.chosen / "tryboot").write_bytes(int(tryboot).to_bytes(4, "big"))

    def run(self, *args: str, ok: bool = True) -> str:
        env = {"PATH": "/usr/bin:/bin", "IMAGESMITH_TRYBOOT_ENV": str(self.root / "tryboot.env")}
        proc = subprocess.run(["sh", str(TOOL), *args], capture_output=True, text=True, env=env)
        assert (proc.returncode == 0) == ok, proc.stdout + proc.stderr
        return proc.stdout + proc.stderr

    def autoboot(self) -> str:
        return subprocess.run(["mtype", "-i", f"{self.disk}@@{MiB}", "::autoboot.txt"], capture_output=True,
                              text=True, check=True).stdout  # fmt: skip


def sections(primary: int, tryboot: int) -> str:
    return f"[all]\ntryboot_a_b=1\nboot_partition={primary}\n[tryboot]\nboot_partition={tryboot}\n"


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("tryboot-disk")
    make_disk(work / "disk.img", work)
    return work / "disk.img"


@pytest.fixture
def device(tmp_path: Path, template: Path) -> Device:
    return Device(tmp_path, template)


def test_try_then_commit_makes_the_new_slot_primary(device: Device) -> None:
    assert device.run("status").splitlines() == ["primary: A", "booted: A", "A: good", "B: good"]
    assert "the next reboot boots slot B once" in device.run("try", "B")
    assert device.autoboot() == sections(2, 3)  # A stays primary: a failed B falls back
    assert (device.root / "run" / "reboot-param").read_text() == "0 tryboot\n"
    device.boot(3, tryboot=True)  # the firmware booted B once
    assert device.run("status").splitlines()[:2] == ["primary: A", "booted: B (tryboot)"]
    assert "slot B is the primary one" in device.run("commit")
    assert device.autoboot() == sections(3, 2)


def test_a_slot_that_was_not_tried_cannot_be_committed(device: Device) -> None:
    device.boot(3, tryboot=False)
    assert "was not booted by a tryboot" in device.run("commit", ok=False)
    assert device.autoboot() == sections(2, 3)


def test_rauc_s_custom_backend_calls(device: Device) -> None:
    assert device.run("get-primary").strip() == "A" and device.run("get-current").strip() == "A"
    device.run("set-state", "B", "bad")  # RAUC marks the slot it writes bad first
    assert device.run("get-state", "B").strip() == "bad"
    device.run("set-primary", "B")  # written: try it once
    assert device.run("get-state", "B").strip() == "good" and device.autoboot() == sections(2, 3)
    device.boot(3, tryboot=True)
    device.run("set-state", "B", "good")  # healthy: RAUC marks the booted slot good
    assert device.run("get-primary").strip() == "B" and device.autoboot() == sections(3, 2)
    # the next update into A does not come up: the firmware boots B again, by itself
    device.run("set-primary", "A")
    device.boot(3, tryboot=False)
    device.run("set-state", "B", "good")
    device.run("set-state", "A", "bad")
    assert device.run("get-primary").strip() == "B" and device.run("get-state", "A").strip() == "bad"
    assert device.autoboot() == sections(3, 2)


def test_marking_the_primary_slot_bad_makes_the_other_one_primary(device: Device) -> None:
    device.run("mark-bad", "A")
    assert device.autoboot() == sections(3, 2) and device.run("get-state", "A").strip() == "bad"


def test_mistakes_are_refused_with_a_reason(device: Device) -> None:
    assert "no slot C" in device.run("try", "C", ok=False)
    assert "unknown command" in device.run("reset", ok=False)
    assert device.autoboot() == sections(2, 3)
