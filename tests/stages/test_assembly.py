"""filesystems + disk on a small hand-made rootfs, with the real mkfs, sfdisk and fsck tools."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from imagesmith.config.load import load_spec
from imagesmith.disk import ids
from imagesmith.errors import ImagesmithError
from imagesmith.host.run import Runner
from imagesmith.stages import customize, disk, filesystems
from imagesmith.stages.context import Context

Write = Callable[[str, str], Path]
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="file ownership in the image needs root")


@pytest.fixture
def ctx(write: Write, tmp_path: Path) -> Context:
    overlay = tmp_path / "overlay"
    (overlay / "usr" / "local" / "bin").mkdir(parents=True)
    tool = overlay / "usr" / "local" / "bin" / "tool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o4755)
    (overlay / "lib" / "app").mkdir(parents=True)
    (overlay / "lib" / "app" / "data").write_text("x")
    os.symlink("/usr/local/bin/tool", overlay / "usr" / "local" / "bin" / "alias")
    spec = load_spec(
        write("img.yaml", "name: t\ndevice: qemu-amd64\nfiles: [{source: overlay/, owner: 'app:app'}]\n")
    )
    context = Context(spec=spec, runner=Runner(), work=tmp_path / "work")
    context.set_epoch(1)  # as the customize stage sets it
    root = context.rootfs
    for d in ("etc", "usr/lib", "boot/firmware", "usr/bin"):
        (root / d).mkdir(parents=True)
    os.symlink("usr/lib", root / "lib")
    (root / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\napp:x:1001:1002::/:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\napp:x:1002:\n")
    (root / "boot" / "firmware" / "cmdline.txt").write_text("root=x\n")
    (root / "usr" / "bin" / "big").write_bytes(os.urandom(3 * 1024 * 1024))
    return context


def test_overlay_keeps_modes_links_and_sets_owner(ctx: Context) -> None:
    customize.copy_overlay(ctx, 0, ctx.spec.config.files[0])
    tool = ctx.rootfs / "usr/local/bin/tool"
    assert stat.S_IMODE(tool.stat().st_mode) == 0o4755
    assert (tool.stat().st_uid, tool.stat().st_gid) == (1001, 1002)
    assert os.readlink(ctx.rootfs / "usr/local/bin/alias") == "/usr/local/bin/tool"
    # /lib is a symlink in the image: the file lands in /usr/lib, the link survives
    assert (ctx.rootfs / "usr/lib/app/data").read_text() == "x"
    assert (ctx.rootfs / "lib").is_symlink()


def test_overlay_with_unknown_owner_is_located(ctx: Context, write: Write) -> None:
    entry = ctx.spec.config.files[0].model_copy(update={"owner": "nobody"})
    with pytest.raises(ImagesmithError) as info:
        customize.copy_overlay(ctx, 0, entry)
    assert info.value.location is not None and info.value.location.file.name == "img.yaml"


def test_partitions_and_disk(ctx: Context) -> None:
    ctx.work.mkdir(exist_ok=True)
    customize.copy_overlay(ctx, 0, ctx.spec.config.files[0])
    filesystems.run(ctx)
    assert [p.name for p in ctx.partitions] == ["boot", "root"]
    assert not any((ctx.rootfs / "boot" / "firmware").iterdir()), "the mount point is left empty"
    image = ctx.work / "t.img"
    disk.run(ctx, image)
    table = json.loads(
        subprocess.run(["sfdisk", "--json", str(image)], capture_output=True, check=True).stdout
    )
    table = table["partitiontable"]
    assert table["label"] == "dos" and table["id"] == f"0x{ids.disk_signature(ctx.spec.identity)}"
    boot, root = table["partitions"]
    assert (boot["type"], boot.get("bootable"), boot["start"]) == ("c", True, 8192)
    assert root["type"] == "83" and root["start"] % 8192 == 0
    assert image.stat().st_size == (root["start"] + root["size"]) * 512
    # the partitions in the image are the filesystems, and they check clean
    offset = root["start"] * 512
    out = subprocess.run(
        ["debugfs", "-R", "stat /usr/local/bin/tool", f"{image}?offset={offset}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "Mode:  04755" in out and "User:  1001" in out and "Group:  1002" in out
    listing = subprocess.run(
        ["mdir", "-b", "-i", f"{image}@@{boot['start'] * 512}", "::/"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "::/cmdline.txt" in listing
    # sparse: copying wrote only data extents
    assert os.stat(image).st_blocks * 512 < image.stat().st_size


def test_copies_leave_holes_for_zero_blocks_however_the_source_was_written(tmp_path: Path) -> None:
    from imagesmith.disk.sparse import copy_data

    written = tmp_path / "written"  # zeros written out: data on disk
    with open(written, "wb") as out:
        out.write(b"a" * 4096 + bytes(64 * 4096) + b"b" * 100)
    holey = tmp_path / "holey"  # the same bytes, the zeros left as a hole
    with open(holey, "wb") as out:
        out.write(b"a" * 4096)
        out.seek(65 * 4096)
        out.write(b"b" * 100)
    copies = []
    for source in (written, holey):
        target = tmp_path / f"{source.name}.copy"
        with open(target, "wb") as out:
            out.truncate(1024 * 1024)
            copy_data(source, out.fileno(), 8192)
        copies.append(target)
    assert copies[0].read_bytes() == copies[1].read_bytes()
    assert copies[0].read_bytes()[8192 : 8192 + 65 * 4096 + 100] == written.read_bytes()
    for copy in copies:
        assert copy.stat().st_blocks * 512 <= 3 * 4096  # only the two data blocks


def test_a_partition_image_is_kept_by_a_second_name_or_copied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from imagesmith.stages import filesystems

    image = tmp_path / "root.ext4"
    with open(image, "wb") as out:
        out.write(b"x" * 4096)
        out.truncate(8 * 1024 * 1024)
    filesystems.keep(image, tmp_path / "linked")
    assert os.stat(tmp_path / "linked").st_ino == image.stat().st_ino  # no copy on one filesystem

    def cross_device(source: object, target: object) -> None:
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(filesystems.os, "link", cross_device)
    filesystems.keep(image, tmp_path / "copied")
    copied = tmp_path / "copied"
    assert copied.stat().st_ino != image.stat().st_ino and copied.read_bytes() == image.read_bytes()
    assert copied.stat().st_blocks * 512 < copied.stat().st_size  # a sparse copy
