"""A/B layouts, the data partition and the read-only root: layouts, fstab, command lines,
autoboot.txt, config checks and the /etc update rule (no build)."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from imagesmith.config import catalog
from imagesmith.config.facts import packages
from imagesmith.config.load import load_spec
from imagesmith.config.model import Layout
from imagesmith.config.nodes import load_yaml
from imagesmith.config.validate import validate
from imagesmith.disk import ids
from imagesmith.errors import ImagesmithError
from imagesmith.stages import bootfiles, storage

Write = Callable[[str, str], Path]


def layout(name: str) -> Layout:
    path = catalog.find("layouts", name)
    assert path is not None
    return validate(Layout, load_yaml(path), f"layout {name}")


def test_the_catalog_s_a_b_layouts() -> None:
    ab, gpt, tryboot = layout("ab"), layout("ab-gpt"), layout("ab-tryboot")
    assert (ab.table, gpt.table, tryboot.table) == ("dos", "gpt", "gpt")
    for each in (ab, gpt):
        assert [p.role for p in each.partitions] == ["boot", "root-a", "root-b", "data"]
        assert each.root.name == "root-a" and each.grows.name == "data" and each.slotted
    assert [p.role for p in tryboot.partitions] == ["boot", "boot-a", "boot-b", "root-a", "root-b", "data"]
    assert [p.slot for p in tryboot.partitions] == [None, "a", "b", "a", "b", None]
    simple = layout("simple")
    assert simple.grows is simple.root and not simple.slotted and simple.data is None


AB = "{name: a, role: root-a, fs: ext4, label: a, mount: /}, {name: b, role: root-b, fs: ext4, label: b"


@pytest.mark.parametrize(
    ("partitions", "said"),
    [
        ("[{name: r, fs: ext4, label: r, mount: /}, {name: b, role: root-b, fs: ext4, label: b}]",
         "exactly one root partition"),
        (f"[{AB}, mount: /b}}]", "a slot B partition has no mount"),
        (f"[{AB}}}, {{name: x, role: boot-a, fs: vfat, label: x, mount: /boot/firmware}}]",
         "boot slots come in pairs"),
        (f"[{AB}}}, {{name: d, role: data, fs: ext4, label: d, mount: /srv}}]", "mounted at /data"),
        ("[{name: x, fs: vfat, label: x}, {name: r, fs: ext4, label: r, mount: /}]",
         "the tryboot common boot partition, which needs boot-a and boot-b"),
    ],
)  # fmt: skip
def test_roles_that_do_not_fit_together(write: Write, partitions: str, said: str) -> None:
    path = write("layouts/bad.yaml", f"layout: bad\ndescription: d\npartitions: {partitions}\n")
    with pytest.raises(ImagesmithError, match=said) as caught:
        validate(Layout, load_yaml(path), "layout bad")
    assert caught.value.exit_code == 2


def test_a_b_slots_are_not_found_by_label(write: Write) -> None:
    path = write("layouts/bad.yaml", f"layout: bad\ndescription: d\nroot_by: label\npartitions: [{AB}}}]\n")
    with pytest.raises(ImagesmithError, match="a label would name both slots") as caught:
        validate(Layout, load_yaml(path), "layout bad")
    assert caught.value.exit_code == 2


def test_fstab_names_no_slot_and_the_command_line_names_slot_a(write: Write) -> None:
    spec = load_spec(write("i.yaml", "name: i\ndevice: qemu-amd64\nlayout: ab-gpt\nread_only: true\n"))
    fstab = ids.fstab(spec.identity, data_mounted_early=True).splitlines()[1:]
    assert [line.split()[1:] for line in fstab] == [
        ["/boot/firmware", "vfat", "defaults,noatime,umask=0077", "0", "2"],
        ["/data", "ext4", "defaults,noatime", "0", "0"],  # the initramfs checks it
    ]
    root_a = f"PARTUUID={ids.partuuid(spec.identity, 2)}"
    assert f" root={root_a} ro " in bootfiles.cmdline(spec)
    assert ids.root_device(spec.identity, "b") == f"PARTUUID={ids.partuuid(spec.identity, 3)}"
    assert {"busybox", "e2fsprogs", "fdisk"} <= set(packages(spec))
    env = storage.environment(spec)
    assert f"DATA_DEVICE=/dev/disk/by-partuuid/{ids.partuuid(spec.identity, 4)}\n" in env
    assert 'READ_ONLY=yes\nPERSIST=""\n' in env


def test_tryboot_slots_autoboot_and_boot_slot_b(write: Write, tmp_path: Path) -> None:
    spec = load_spec(write("t.yaml", "name: t\ndevice: pi5\nkernel: raspberrypi\nlayout: ab-tryboot\n"))
    storage.check(spec)
    assert (
        storage.autoboot_txt(spec) == "[all]\ntryboot_a_b=1\nboot_partition=2\n[tryboot]\nboot_partition=3\n"
    )
    tree_a = tmp_path / "a"
    tree_a.mkdir()
    (tree_a / "cmdline.txt").write_text(bootfiles.cmdline(spec))
    (tree_a / "kernel_2712.img").write_text("kernel")
    storage.slot_b_boot(spec, tree_a, tmp_path / "b")
    cmdline_b = (tmp_path / "b" / "cmdline.txt").read_text()
    assert f"root=PARTUUID={ids.partuuid(spec.identity, 5)} " in cmdline_b
    assert (
        cmdline_b.replace(ids.partuuid(spec.identity, 5), ids.partuuid(spec.identity, 4))
        == (tree_a / "cmdline.txt").read_text()
    )
    assert (tmp_path / "b" / "kernel_2712.img").read_text() == "kernel"
    assert ids.fs_id(spec.identity, "root-b") == ids.fs_id(spec.identity, "root-a")  # a copy, byte for byte
    env = storage.tryboot_environment(spec)
    assert f"AUTOBOOT=/dev/disk/by-partuuid/{ids.partuuid(spec.identity, 1)}\nBOOT_A=2\nBOOT_B=3\n" in env
    assert "mtools" in packages(spec)


@pytest.mark.parametrize(
    ("config", "said", "line"),
    [
        ("device: qemu-amd64\nread_only: true\n", "read_only needs a data partition", 3),
        (
            "device: qemu-amd64\nlayout: ab\npersist: [/var/log]\n",
            "persist keeps directories of a read-only",
            4,
        ),
        ("device: pi4\nlayout: ab-tryboot\n", "the debian kernel of device pi4 cannot", 3),
        ("device: pi3\nkernel: raspberrypi\nlayout: ab-tryboot\n", "the raspberrypi kernel of device pi3", 4),
        ("device: qemu-arm64\nlayout: ab-tryboot\n", "device qemu-arm64 does not boot with it", 3),
    ],
)
def test_what_the_layout_and_device_cannot_give_is_a_config_error(
    write: Write, config: str, said: str, line: int
) -> None:
    spec = load_spec(write("c.yaml", f"name: c\n{config}"))
    with pytest.raises(ImagesmithError, match=said) as caught:
        storage.check(spec)
    assert caught.value.exit_code == 2 and f"c.yaml:{line}" in str(caught.value.location)


def test_persisted_paths_are_plain_absolute_directories(write: Write) -> None:
    for bad in ("/etc", "/var/../etc", "var/log", "/var/a b", "/var/log/"):
        with pytest.raises(ImagesmithError) as caught:
            load_spec(
                write(
                    "p.yaml",
                    f"name: p\ndevice: qemu-amd64\nlayout: ab\nread_only: true\npersist: ['{bad}']\n",
                )
            )
        assert caught.value.exit_code == 2, bad


def test_etc_sums_list_files_and_links(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    (etc / "ssh").mkdir(parents=True)
    (etc / "hostname").write_text("pi\n")
    (etc / "ssh" / "sshd_config").write_text("Port 22\n")
    (etc / "localtime").symlink_to("/usr/share/zoneinfo/Etc/UTC")
    lines = storage.etc_sums(tmp_path).splitlines()
    assert [line.split("  ", 1)[1] for line in lines] == ["hostname", "localtime", "ssh/sshd_config"]
    assert lines[0].split()[0] == hashlib.sha256(b"pi\n").hexdigest()
    assert lines[1].split()[0] == hashlib.sha256(b"link:/usr/share/zoneinfo/Etc/UTC").hexdigest()


def rule(old: str, new: str, upper: Path) -> list[str]:
    (upper.parent / "old").write_text(old)
    (upper.parent / "new").write_text(new)
    proc = subprocess.run(
        ["sh", str(storage.FILES / "etc-update-rule"), str(upper.parent / "old"), str(upper.parent / "new"),
         str(upper)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return proc.stdout.splitlines()


def test_an_update_wins_for_the_files_it_changed_and_local_changes_stay(tmp_path: Path) -> None:
    upper = tmp_path / "upper"
    (upper / "ssh").mkdir(parents=True)
    for name in ("hostname", "motd", "ssh/sshd_config", "ssh/ssh_host_ed25519_key"):
        (upper / name).write_text("local\n")
    (upper / "issue").symlink_to("/nonexistent")  # like a whiteout: an entry that is no file
    old = "aaaa  hostname\nbbbb  motd\ncccc  ssh/sshd_config\ndddd  issue\n"
    new = "aaaa  hostname\nbbbb  motd\nffff  ssh/sshd_config\neeee  issue\n1111  new file\n"
    dropped = rule(old, new, upper)
    assert dropped == [
        "/etc/ssh/sshd_config: the new root's version replaces the local one",
        "/etc/issue: the new root's version replaces the local one",
    ]
    assert sorted(str(p.relative_to(upper)) for p in upper.rglob("*")) == [
        "hostname", "motd", "ssh", "ssh/ssh_host_ed25519_key"
    ]  # fmt: skip
    assert rule(new, new, upper) == []  # the same root again: nothing dropped


def test_the_first_boot_drops_nothing(tmp_path: Path) -> None:
    upper = tmp_path / "upper"
    upper.mkdir()
    (upper / "hostname").write_text("local\n")
    new = tmp_path / "new"
    new.write_text("ffff  hostname\n")
    script = str(storage.FILES / "etc-update-rule")
    subprocess.run(["sh", script, str(tmp_path / "none"), str(new), str(upper)], check=True)
    assert (upper / "hostname").exists()


def test_a_data_partition_elsewhere_than_data_stays_an_ordinary_one(write: Write) -> None:
    path = write(
        "layouts/srv.yaml",
        "layout: srv\ndescription: d\npartitions:\n"
        "  - {name: boot, fs: vfat, label: BOOT, mount: /boot/firmware}\n"
        "  - {name: root, fs: ext4, label: root, mount: /}\n"
        "  - {name: srv, fs: ext4, label: srv, mount: /srv}\n",
    )
    srv = validate(Layout, load_yaml(path), "layout srv")
    assert srv.partitions[2].role == "data" and srv.data is None and srv.grows is srv.root
