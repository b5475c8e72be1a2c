"""The Raspberry Pi archive layer and the kernel choice: merged sources, keys, fingerprints,
the packages a kernel brings and the boot files it gets (no build)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from imagesmith.cli import main
from imagesmith.config.facts import packages
from imagesmith.config.load import load_spec
from imagesmith.errors import ImagesmithError
from imagesmith.host.run import Runner
from imagesmith.repro import sources
from imagesmith.stages import bootfiles

from .e2e.aptrepo import make_key, stop_agent

Write = Callable[[str, str], Path]
VERSION = "6.12.47+rpt-rpi-v8"


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    public = make_key(tmp_path_factory.mktemp("gpg") / "home", "archive")
    yield public
    stop_agent(public.parent)


def pi4(write: Write, extra: str = "", device: str = "pi4") -> Path:
    return write("pi.yaml", f"name: pi\ndevice: {device}\nlayers: [raspberrypi-archive]\n{extra}")


def test_the_config_gives_the_key_of_the_layer_s_source(write: Write, key: Path) -> None:
    write("keys/rpi.asc", key.read_text())
    spec = load_spec(
        pi4(write, "sources:\n  - {name: raspberrypi, key: keys/rpi.asc, packages: [rpi-extra]}\n")
    )
    (source,) = spec.config.sources
    assert source.url == "http://archive.raspberrypi.com/debian/"  # the layer's
    assert source.key == str((spec.config_path.parent / "keys" / "rpi.asc").resolve())  # the config's
    assert "raspi-firmware" in source.packages and "rpi-extra" in source.packages  # both
    assert spec.kernel_name == "raspberrypi" and spec.console == "ttyS0,115200"
    wanted = packages(spec)
    assert "linux-image-rpi-v8" in wanted and "linux-image-arm64" not in wanted
    assert "raspi-firmware" in wanted  # the device's own packages stay


def test_a_source_without_a_key_says_how_to_give_it(write: Write) -> None:
    with pytest.raises(ImagesmithError, match="source 'raspberrypi' has no key") as caught:
        load_spec(pi4(write))
    assert caught.value.exit_code == 2
    assert "raspberrypi-archive.yaml" in str(caught.value.location)
    assert "sources: [{name: raspberrypi, key: FILE}]" in (caught.value.hint or "")


def test_a_kernel_the_device_lacks_is_a_config_error(write: Write, key: Path) -> None:
    config = write("vm.yaml", "name: vm\ndevice: qemu-arm64\nkernel: raspberrypi\n")
    with pytest.raises(ImagesmithError, match="device qemu-arm64 has no kernel 'raspberrypi'") as caught:
        load_spec(config)
    assert caught.value.exit_code == 2 and "vm.yaml:3" in str(caught.value.location)
    assert "its kernels: debian" in (caught.value.hint or "")


def test_the_default_kernel_is_the_device_s_first(write: Write) -> None:
    spec = load_spec(write("p5.yaml", "name: p\ndevice: pi5\n"))
    assert spec.kernel_name == "debian" and spec.console == "ttyAMA0,115200"
    assert "linux-image-arm64" in packages(spec)
    assert (
        load_spec(write("p5r.yaml", "name: p\ndevice: pi5\nkernel: raspberrypi\n")).console
        == "ttyAMA10,115200"
    )


def test_a_key_with_another_fingerprint_is_refused(write: Write, key: Path) -> None:
    spec = load_spec(pi4(write, f"sources:\n  - {{name: raspberrypi, key: {key}}}\n"))
    with pytest.raises(ImagesmithError, match=r"the key in .* is [0-9A-F]{40}, not CF8A1AF502A2") as caught:
        sources.check_keys(Runner(), spec)
    assert caught.value.exit_code == 2 and "pi.yaml:5" in str(caught.value.location)
    assert "raspberrypi-archive.yaml" in (caught.value.hint or "")


def test_the_right_fingerprint_is_accepted(write: Write, key: Path) -> None:
    fingerprint = subprocess.run(
        ["gpg", "--homedir", str(key.parent), "--with-colons", "--fingerprint"],
        capture_output=True, text=True, check=True,
    ).stdout.split("fpr:::::::::")[1].split(":")[0]  # fmt: skip
    spaced = " ".join(fingerprint[i : i + 4] for i in range(0, 40, 4)).lower()
    spec = load_spec(pi4(write, f"sources:\n  - {{name: raspberrypi, key: {key}, fingerprint: {spaced}}}\n"))
    sources.check_keys(Runner(), spec)  # no error


def rootfs_with_rpi_kernel(root: Path) -> Path:
    for path, text in {
        f"boot/vmlinuz-{VERSION}": "rpi kernel",
        f"boot/initrd.img-{VERSION}": "rpi initrd",
        f"usr/lib/modules/{VERSION}/modules.order": "",
        f"usr/lib/linux-image-{VERSION}/broadcom/bcm2711-rpi-4-b.dtb": "dtb pi4",
        f"usr/lib/linux-image-{VERSION}/broadcom/bcm2711-rpi-400.dtb": "dtb pi400",
        f"usr/lib/linux-image-{VERSION}/overlays/disable-bt.dtbo": "overlay",
        f"boot/firmware/vmlinuz-{VERSION}": "left by Debian's hook",
        "boot/firmware/start4.elf": "firmware",
    }.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    return root


def test_the_raspberry_pi_kernel_gets_raspberry_pi_os_boot_files(
    write: Write, key: Path, tmp_path: Path
) -> None:
    spec = load_spec(
        pi4(
            write,
            f"sources:\n  - {{name: raspberrypi, key: {key}}}\n"
            "cmdline: [quiet]\nconfig_txt: [dtoverlay=disable-bt]\n",
        )
    )
    rootfs = rootfs_with_rpi_kernel(tmp_path / "rootfs")
    outside = tmp_path / "outside"
    outside.mkdir()
    (rootfs / "boot" / "firmware" / "overlays").symlink_to(outside)  # never written through
    bootfiles.after_hooks(spec, rootfs, 0)
    firmware = rootfs / "boot" / "firmware"
    assert sorted(p.name for p in firmware.iterdir()) == [
        "bcm2711-rpi-4-b.dtb", "bcm2711-rpi-400.dtb", "cmdline.txt", "config.txt", "initramfs8",
        "kernel8.img", "overlays", "start4.elf",
    ]  # fmt: skip
    assert (firmware / "kernel8.img").read_text() == "rpi kernel"
    assert (firmware / "initramfs8").read_text() == "rpi initrd"
    assert (firmware / "overlays" / "disable-bt.dtbo").read_text() == "overlay"
    assert list(outside.iterdir()) == []
    config = (firmware / "config.txt").read_text().splitlines()
    assert config[1:] == ["arm_64bit=1", "enable_uart=1", "kernel=kernel8.img",
                          "initramfs initramfs8 followkernel", "dtoverlay=disable-bt"]  # fmt: skip
    assert "upstream_kernel" not in "".join(config)
    cmdline = (firmware / "cmdline.txt").read_text()
    assert cmdline.startswith("console=tty0 console=ttyS0,115200 root=PARTUUID=") and cmdline.endswith(
        " quiet\n"
    )
    assert cmdline.count("\n") == 1


def test_a_kernel_package_without_device_trees_is_an_error(write: Write, key: Path, tmp_path: Path) -> None:
    spec = load_spec(pi4(write, f"sources:\n  - {{name: raspberrypi, key: {key}}}\n"))
    rootfs = rootfs_with_rpi_kernel(tmp_path / "rootfs")
    for dtb in (rootfs / "usr" / "lib" / f"linux-image-{VERSION}" / "broadcom").iterdir():
        dtb.unlink()
    with pytest.raises(ImagesmithError, match="ships no device trees") as caught:
        bootfiles.after_hooks(spec, rootfs, 0)
    assert "linux-image-rpi-v8" in (caught.value.hint or "")


def test_devices_lists_each_kernel_and_what_it_gives() -> None:
    result = CliRunner().invoke(main, ["devices"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if "raspberrypi" in line and "RP1 drivers" in line]
    assert any("Ethernet" in row and "tryboot A/B" in row for row in rows), result.output
    assert any(
        line.startswith("│ pi5 ") and "debian (default)" in line for line in result.output.splitlines()
    )
