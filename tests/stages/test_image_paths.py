"""Host-side work on an image never follows the image's links onto the build host.

Each case puts a link in a fake root filesystem that points at a directory or file of the
"host" (a separate temporary directory) and checks that the host's copy is untouched."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from imagesmith.config.load import load_spec
from imagesmith.errors import ImagesmithError
from imagesmith.host.rootfs import inside, read_ids
from imagesmith.host.run import Runner
from imagesmith.stages import bootfiles, customize, filesystems
from imagesmith.stages.context import Context

Write = Callable[[str, str], Path]


@pytest.fixture
def host(tmp_path: Path) -> Path:
    """Stands for the build host's files."""
    path = tmp_path / "host"
    (path / "ssh").mkdir(parents=True)
    (path / "ssh" / "ssh_host_ed25519_key").write_text("the host's own key")
    (path / "shadow").write_text("root:HOSTHASH:19000:0:99999:7:::\n")
    (path / "passwd").write_text("hostuser:x:4242:4242::/home/hostuser:/bin/sh\n")
    (path / "secret.txt").write_text("host secret")
    return path


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    for sub in ("etc", "boot", "usr/lib/modules/6.1.0", "var/lib/dbus", "usr/sbin"):
        (root / sub).mkdir(parents=True)
    return root


def test_first_boot_hygiene_does_not_delete_host_keys(rootfs: Path, host: Path) -> None:
    (rootfs / "etc" / "ssh").symlink_to(host / "ssh")
    customize.first_boot_hygiene(rootfs)
    assert (host / "ssh" / "ssh_host_ed25519_key").read_text() == "the host's own key"
    assert (rootfs / "etc" / "machine-id").read_text() == "uninitialized\n"


def test_a_script_is_staged_inside_the_image_even_when_tmp_is_a_link(rootfs: Path, tmp_path: Path) -> None:
    (rootfs / "tmp").symlink_to("/var/tmp")  # a directory the build host has too
    script = tmp_path / "s.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    staged = customize.stage_script(rootfs, 0, script)
    assert staged == rootfs / "var/tmp/imagesmith-script-0" and staged.read_text() == script.read_text()
    assert not Path("/var/tmp/imagesmith-script-0").exists()
    assert staged.stat().st_mode & 0o777 == 0o755


def test_the_shadow_file_and_user_ids_are_the_image_s(rootfs: Path, host: Path) -> None:
    (rootfs / "etc" / "shadow").symlink_to(host / "shadow")
    (rootfs / "etc" / "passwd").symlink_to(host / "passwd")
    with pytest.raises(FileNotFoundError):  # the link names a file the image does not have
        customize._set_shadow_password(rootfs, "root", "$6$x$y")
    assert (host / "shadow").read_text() == "root:HOSTHASH:19000:0:99999:7:::\n"
    assert read_ids(rootfs, "passwd") == {}


def test_direct_kernel_files_stay_in_the_image(rootfs: Path, host: Path) -> None:
    (rootfs / "boot" / "vmlinuz-6.1.0").write_text("kernel")
    (rootfs / "boot" / "initrd.img-6.1.0").write_text("initrd")
    (rootfs / "boot" / "firmware").symlink_to(host)
    bootfiles.direct_kernel_files(rootfs)
    assert not (host / "vmlinuz").exists()
    assert inside(rootfs, "/boot/firmware/vmlinuz").read_text() == "kernel"


def test_fat_partitions_take_what_a_link_means_inside_the_image(
    write: Write, rootfs: Path, host: Path, tmp_path: Path
) -> None:
    spec = load_spec(write("img.yaml", "name: x\ndevice: pi4\n"))
    boot = next(p for p in spec.layout.partitions if p.fs == "vfat")
    firmware = inside(rootfs, boot.mount)
    firmware.mkdir(parents=True)
    (rootfs / "etc" / "image.txt").write_text("the image's file")
    (firmware / "good.txt").symlink_to("/etc/image.txt")
    (firmware / "host.txt").symlink_to(host / "secret.txt")
    ctx = Context(spec=spec, runner=Runner(), work=tmp_path)
    with pytest.raises(ImagesmithError, match=r"host\.txt is a symbolic link") as info:
        filesystems.resolve_links(ctx, boot)
    assert "cannot hold it" in info.value.message
    (firmware / "host.txt").unlink()
    filesystems.resolve_links(ctx, boot)
    good = firmware / "good.txt"
    assert not good.is_symlink() and good.read_text() == "the image's file"
    assert (host / "secret.txt").read_text() == "host secret"
