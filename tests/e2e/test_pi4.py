"""The default image (examples/minimal.yaml: Pi 4, trixie, arm64) built from real packages."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from imagesmith.outputs.files import sha256

from ..conftest import EXAMPLE_KEY
from .conftest import REPO, Built, built, deb_purl, imagesmith, installed, kernel_modules

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory, stage_cache: Path) -> tuple[Built, Built, Path]:
    """The default config built twice, each build with its own empty stage cache (only the
    downloaded .deb files are shared): the first locks it (--update-lock: a fresh
    bootstrap, then the build), the second starts as soon as the lock exists and builds
    from the lock."""
    base = tmp_path_factory.mktemp("pi4")
    project = base / "examples"
    shutil.copytree(REPO / "examples", project)
    lock_file = project / "minimal.yaml.lock"

    def start(n: int, *extra: str) -> subprocess.Popen[str]:
        command = [sys.executable, "-m", "imagesmith", "build", str(project / "minimal.yaml"), "-o",
                   str(base / f"out{n}"), "--cache-dir", str(base / f"cache{n}"), "--shared-debs",
                   str(stage_cache / "debs"), *extra]  # fmt: skip
        return subprocess.Popen(
            command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )

    runs = [start(1, "--update-lock")]
    while not lock_file.exists() and runs[0].poll() is None:
        time.sleep(5)
    runs.append(start(2))
    for run in runs:
        out, _ = run.communicate(timeout=5400)
        assert run.returncode == 0, out[-4000:]
    return built(base / "out1"), built(base / "out2"), lock_file


@pytest.fixture(scope="module")
def pi4(locked: tuple[Built, Built, Path]) -> Built:
    return locked[0]


def test_two_locked_builds_from_empty_caches_are_identical(locked: tuple[Built, Built, Path]) -> None:
    first, second, _ = locked
    names = [
        "minimal.img",
        "minimal.spdx.json",
        "minimal.cdx.json",
        "manifest.json",
        "minimal.img.bmap",
        "SHA256SUMS",
    ]
    for name in names:
        assert sha256(first.output / name) == sha256(second.output / name), name
    # each made its own bootstrap: neither took a stage from a cache
    for build_ in (first, second):
        assert "from the cache" not in (build_.output / "build.log").read_text()


def test_the_lock_holds_exactly_the_installed_packages(locked: tuple[Built, Built, Path]) -> None:
    from imagesmith.repro import lock

    first, _, lock_file = locked
    found = lock.read(lock_file)
    status = installed(first.cat("/var/lib/dpkg/status"))
    assert {(p.name, p.version, p.architecture) for p in found.packages} == {
        (name, version, arch) for name, (version, arch) in status.items()
    }
    assert all(len(p.sha256) == 64 for p in found.packages)
    assert (found.suite, found.architecture, found.snapshot) == ("trixie", "arm64", None)
    assert "minimal.yaml.lock: " in (first.output / "build.log").read_text()  # written by the first
    assert "using minimal.yaml.lock" in (locked[1].output / "build.log").read_text()  # used by the second
    created = json.loads((first.output / "manifest.json").read_text())["created"]
    assert created.startswith(
        datetime.fromtimestamp(found.source_date_epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    )


def test_outputs_and_checksums(pi4: Built) -> None:
    names = sorted(p.name for p in pi4.output.iterdir())
    assert names == ["SHA256SUMS", "build.log", "manifest.json", "minimal.cdx.json", "minimal.img",
                     "minimal.img.bmap", "minimal.spdx.json"]  # fmt: skip
    subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=pi4.output, check=True, capture_output=True)
    bmap = (pi4.output / "minimal.img.bmap").read_text()
    assert "<bmap version=" in bmap


def test_partition_table(pi4: Built) -> None:
    table = pi4.table
    assert table["label"] == "dos"
    boot, root = table["partitions"]  # type: ignore[misc]
    assert boot["type"] == "c" and boot.get("bootable") is True and boot["start"] == 8192
    assert boot["size"] * 512 == 256 * 1024 * 1024
    assert root["type"] == "83" and root["start"] % 8192 == 0


def test_filesystems_check_clean(pi4: Built, tmp_path: Path) -> None:
    for index, checker in ((0, ["fsck.vfat", "-n"]), (1, ["e2fsck", "-fn"])):
        part = pi4.table["partitions"][index]  # type: ignore[index]
        extracted = tmp_path / f"part{index}"
        with open(pi4.image, "rb") as src, open(extracted, "wb") as dst:
            dst.truncate(part["size"] * 512)
            src.seek(part["start"] * 512)
            remaining = part["size"] * 512
            while remaining:
                chunk = src.read(min(remaining, 16 * 1024 * 1024))
                dst.write(chunk)
                remaining -= len(chunk)
        result = subprocess.run([*checker, str(extracted)], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr


def test_boot_partition_holds_firmware_kernel_and_config(pi4: Built) -> None:
    listing = subprocess.run(
        ["mdir", "-b", "-i", pi4.boot(), "::/"], capture_output=True, text=True, check=True
    )
    names = {line.rstrip("/").rsplit("/", 1)[-1] for line in listing.stdout.split()}
    for required in (
        "start4.elf",
        "fixup4.dat",
        "bootcode.bin",
        "config.txt",
        "cmdline.txt",
        "bcm2711-rpi-4-b.dtb",
        "overlays",
    ):
        assert required in names, f"{required} missing from the boot partition: {sorted(names)}"
    kernel = [n for n in names if n.startswith("vmlinuz-")]
    initrd = [n for n in names if n.startswith("initrd.img-")]
    assert len(kernel) == 1 and len(initrd) == 1
    config = pi4.boot_file("config.txt")
    assert "arm_64bit=1" in config and f"kernel={kernel[0]}" in config and f"initramfs {initrd[0]}" in config
    assert config.rstrip().endswith("disable_splash=1")  # config_txt from the config
    cmdline = pi4.boot_file("cmdline.txt")
    signature = str(pi4.table["id"]).removeprefix("0x")
    assert re.search(rf"\broot=PARTUUID={signature}-02\b", cmdline), cmdline
    assert "console=ttyS1,115200" in cmdline and "fsck.repair=yes" in cmdline
    assert "cma=" not in cmdline  # a cma= setting can make a Pi 4 unbootable


def test_rootfs_contents(pi4: Built) -> None:
    assert pi4.cat("/etc/hostname").strip() == "pi"
    assert re.search(r"^admin:x:1000:1000:", pi4.cat("/etc/passwd"), re.M)
    assert (
        "sudo:x:" in pi4.cat("/etc/group")
        and "admin" in pi4.cat("/etc/group").split("sudo:x:")[1].split("\n")[0]
    )
    assert pi4.cat("/home/admin/.ssh/authorized_keys").strip() == EXAMPLE_KEY
    assert "admin ALL=(ALL) NOPASSWD:ALL" in pi4.cat("/etc/sudoers.d/90-imagesmith-admin")
    shadow = {line.split(":")[0]: line.split(":")[1] for line in pi4.cat("/etc/shadow").splitlines()}
    assert shadow["admin"] == "*", "no password is set when none is given"
    assert pi4.cat("/etc/machine-id") == "uninitialized\n"
    assert "LANG=en_GB.UTF-8" in pi4.cat("/etc/locale.conf")  # /etc/default/locale links here
    assert "Europe/Zurich" in pi4.debugfs("stat /etc/localtime")
    assert "PARTUUID=" in pi4.cat("/etc/fstab")
    # the initramfs was made once, at the end, and the diversions are gone
    assert ".imagesmith-deferred" not in pi4.cat("/var/lib/dpkg/diversions")
    # build-time apt and dpkg options are gone; Debian's own configuration is untouched
    assert "99mmdebstrap" not in pi4.debugfs("ls /etc/apt/apt.conf.d") + pi4.debugfs(
        "ls /etc/dpkg/dpkg.cfg.d"
    )
    assert "dpkg-preconfigure" in pi4.cat("/etc/apt/apt.conf.d/70debconf")
    assert "imagesmith" not in pi4.cat("/usr/sbin/update-initramfs")


def test_no_ssh_host_key_in_the_image(pi4: Built) -> None:
    listing = pi4.debugfs("ls -l /etc/ssh")
    assert "sshd_config" in listing
    assert "ssh_host_" not in listing


def test_boots_to_a_login_prompt(pi4: Built, tmp_path: Path) -> None:
    if shutil.which("qemu-system-aarch64") is None:
        pytest.fail("qemu-system-aarch64 is required (./dev test installs it)")
    console = tmp_path / "console.log"
    imagesmith("boot", str(pi4.image), "--timeout", "900", "--console-log", str(console))
    text = console.read_text(errors="replace")
    assert re.search(r"\bpi login:", text)
    assert "root: clean" in text or "fsck.ext4" in text, "the initramfs checked the root filesystem"
    assert "imagesmith-growroot: /dev/vda2 now" in text, "the root partition grew on first boot"
    assert "imagesmith-ssh-keygen" in text, "host keys are made on first boot"


def test_arch_independent_jobs_ran_natively_once(pi4: Built) -> None:
    log = (pi4.output / "build.log").read_text()
    # depmod, the hwdb, locale-gen and the certificate store ran in the native tools tree,
    # with the image's versions, once each
    assert log.count("imagesmith-tools") >= 4
    assert "running it emulated" not in log
    # the image's own bootstrap made no certificate store (the tools tree's made its own);
    # customize made it once
    image_bootstrap = log[: log.index("mmdebstrap --mode=unshare --verbose --arch=amd64")]
    customize = log[log.index("==> customize") : log.index("==> filesystems")]
    assert "Updating certificates" not in image_bootstrap
    assert customize.count("Updating certificates in /etc/ssl/certs") == 1
    # and their results are in the image
    modules = pi4.debugfs("ls /usr/lib/modules")
    version = next(word for word in modules.split() if word.endswith("-arm64"))
    assert "modules.dep.bin" in pi4.debugfs(f"ls /usr/lib/modules/{version}")
    assert "Type: regular" in pi4.debugfs("stat /usr/lib/udev/hwdb.bin")
    assert "Type: regular" in pi4.debugfs("stat /usr/lib/locale/locale-archive")
    # the store names the image's own files: each certificate the configuration enables
    # has its link to /usr/share/ca-certificates and is in the bundle
    enabled = [n for n in pi4.cat("/etc/ca-certificates.conf").splitlines() if n and n[0] not in "#!"]
    links = pi4.debugfs("ls -l /etc/ssl/certs")
    for name in enabled:
        link = f"/etc/ssl/certs/{Path(name).stem}.pem"
        fast = re.search(r'Fast link dest: "(.*)"', pi4.debugfs(f"stat {link}"))
        target = fast.group(1) if fast else pi4.cat(link)  # debugfs cat gives a slow link's target
        assert target == f"/usr/share/ca-certificates/{name}", (link, target)
    bundle = pi4.cat("/etc/ssl/certs/ca-certificates.crt")
    assert bundle.count("BEGIN CERTIFICATE") == len(enabled) > 100
    assert "/target" not in links
    # the initramfs was made once: one mkinitramfs run in the whole build, with the tools
    # tree's coreutils, sed, findutils, dash, zstd, cpio, kmod (depmod, modprobe, modinfo)
    # and dracut-install run natively (stages/native.py)
    assert log.count("update-initramfs: Generating /boot/initrd.img-") == 1
    hooks = re.search(r"postinst hooks with (\d+) programs of the tools tree run natively \((.*)\)", log)
    assert hooks is not None and int(hooks.group(1)) > 100
    assert [p.split()[0] for p in hooks.group(2).split(", ")] == [
        "coreutils", "cpio", "dash", "dracut-install", "findutils", "kmod", "sed", "zstd"
    ]  # fmt: skip
    assert "running the hooks again, emulated" not in log


def test_sboms_of_the_pi_image(pi4: Built) -> None:
    from imagesmith.outputs import sbom

    assert sbom.check_spdx_file(pi4.output / "minimal.spdx.json") == []
    cdx = (pi4.output / "minimal.cdx.json").read_text()
    sbom.check_cyclonedx(cdx)
    status = installed(pi4.cat("/var/lib/dpkg/status"))
    purls = {c["purl"] for c in json.loads(cdx)["components"]}
    assert purls == {deb_purl(n, v, a) for n, (v, a) in status.items()}
    assert any("?arch=arm64&" in p for p in purls) and "linux-image-arm64" in status
    top = json.loads(cdx)["metadata"]["component"]
    assert top["hashes"][0]["content"] == sha256(pi4.image)


def test_the_pi_boards_module_lists_name_modules_of_debian_s_kernel(pi4: Built) -> None:
    """slim.modules keeps a board's catalog list: each name must be a module (or built in)
    of the kernel the boards run, else a typo would prune the driver it meant."""
    from imagesmith.config import catalog
    from imagesmith.config.model import Device
    from imagesmith.config.nodes import load_yaml
    from imagesmith.config.validate import validate

    modules = kernel_modules(pi4)[1]
    assert len(modules.paths) > 3000
    for name in ("pi3", "pi4", "zero2w", "cm4"):  # Debian's kernel has no Pi 5 (RP1) drivers
        path = catalog.find("devices", name)
        assert path is not None
        device = validate(Device, load_yaml(path), name)
        assert [m for m in device.modules if not modules.known(m)] == [], name
    # and the default image keeps them all (slim.modules is off): the Pi 4's Ethernet driver is there
    assert modules.resolve("genet") and modules.paths["genet"].startswith("kernel/drivers/net/")
