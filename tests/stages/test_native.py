"""Which programs of the tools tree run natively inside the image, and the guard that
notices when one of their scripts was copied into the hooks' outputs."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from imagesmith.stages import native

LOADER = "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"


def status(root: Path, versions: dict[str, str]) -> None:
    (root / "var/lib/dpkg/info").mkdir(parents=True, exist_ok=True)
    stanzas = [f"Package: {n}\nStatus: install ok installed\nVersion: {v}\n" for n, v in versions.items()]
    (root / "var/lib/dpkg/status").write_text("\n".join(stanzas))


def install(root: Path, package: str, paths: list[str], *, listing: str | None = None) -> None:
    """``paths`` as executable files of ``package`` in ``root`` (a name ending in @ is a link)."""
    listed = []
    for path in paths:
        link = path.endswith("@")
        path = path.rstrip("@")
        host = root / path.lstrip("/")
        host.parent.mkdir(parents=True, exist_ok=True)
        if link:
            host.symlink_to("cp")
        else:
            host.write_text("#!/bin/true\n")
            host.chmod(0o755)
        listed.append(path)
    (root / "var/lib/dpkg/info" / (listing or f"{package}.list")).write_text("\n".join(listed) + "\n")


@pytest.fixture
def trees(tmp_path: Path) -> tuple[Path, Path]:
    image, tree = tmp_path / "image", tmp_path / "tools"
    versions = {"coreutils": "9.7-3", "sed": "4.9-2", "dash": "0.5.12-12", "zstd": "1.5.7+dfsg-1",
                "cpio": "2.15+dfsg-2", "findutils": "4.10.0-3"}  # fmt: skip
    status(image, versions)
    status(tree, {**versions, "sed": "4.9-2+b1", "busybox-static": "1:1.37.0-6"})
    install(tree, "busybox-static", ["/usr/bin/busybox"])
    install(
        tree,
        "coreutils",
        ["/usr/bin/cp", "/usr/bin/stdbuf", "/usr/bin/uname", "/usr/bin/realpath", "/usr/bin/copy@"],
    )
    (tree / "usr/share/doc").mkdir(parents=True)
    install(tree, "sed", ["/usr/bin/sed"])
    install(tree, "zstd", ["/usr/bin/zstd"], listing="zstd:amd64.list")
    (tree / LOADER).parent.mkdir(parents=True)
    (tree / LOADER).write_text("loader")
    (tree / "lib64").symlink_to("usr/lib/x86_64-linux-gnu")  # a link to the loader is not a second one
    return image, tree


def test_programs_of_packages_with_the_image_s_version_run_natively(trees: tuple[Path, Path]) -> None:
    image, tree = trees
    found = native.find(image, tree)
    assert found is not None
    # sed is another build (+b1) in the tree: it stays emulated; stdbuf preloads a native
    # library into what it starts, uname would name the build host's machine; a link runs
    # as what it names, so it is left to PATH
    assert found.programs == {"cp": "/usr/bin/cp", "realpath": "/usr/bin/realpath", "zstd": "/usr/bin/zstd"}
    assert found.shell == "/usr/bin/busybox" and found.loader == "/" + LOADER
    assert found.versions == {"coreutils": "9.7-3", "zstd": "1.5.7+dfsg-1"}
    assert found.summary() == "3 programs of the tools tree run natively (coreutils 9.7-3, zstd 1.5.7+dfsg-1)"


def test_a_path_dpkg_lists_under_a_merged_usr_link_is_found_where_it_is(trees: tuple[Path, Path]) -> None:
    image, tree = trees
    (tree / "bin").symlink_to("usr/bin")
    (tree / "var/lib/dpkg/info/coreutils.list").write_text("/bin/cp\n")
    found = native.find(image, tree)
    assert found is not None and found.programs["cp"] == "/usr/bin/cp"


def with_kmod(image: Path, tree: Path) -> None:
    """kmod and its links, and dracut-install, at the image's versions in the tree."""
    for root in (image, tree):
        with (root / "var/lib/dpkg/status").open("a") as status:
            status.write("\nPackage: kmod\nStatus: install ok installed\nVersion: 34.2-2\n")
            status.write("\nPackage: dracut-install\nStatus: install ok installed\nVersion: 106-6\n")
    install(tree, "kmod", ["/usr/bin/kmod"])
    listed = ["/usr/bin/kmod"]
    for name in ("depmod", "modprobe", "modinfo", "insmod", "lsmod"):
        (tree / "usr/sbin").mkdir(exist_ok=True)
        (tree / "usr/sbin" / name).symlink_to("../bin/kmod")
        listed.append(f"/usr/sbin/{name}")
    (tree / "usr/sbin/kmod-cp").symlink_to("../bin/cp")  # another package's program
    listed.append("/usr/sbin/kmod-cp")
    (tree / "var/lib/dpkg/info/kmod.list").write_text("\n".join(listed) + "\n")
    install(tree, "dracut-install", ["/usr/lib/dracut/dracut-install", "/usr/lib/dracut/skipcpio"])
    install(tree, "dash", ["/usr/bin/dash"])


def test_a_link_runs_its_program_by_its_name_where_the_package_acts_by_name(
    trees: tuple[Path, Path],
) -> None:
    image, tree = trees
    with_kmod(image, tree)
    found = native.find(image, tree)
    assert found is not None
    # kmod is depmod, modprobe, modinfo by the name it was started as; insmod and lsmod
    # would act on the build host's kernel; a link to another package's program is not kmod's
    kmod = {name: path for name, path in found.programs.items() if path == "/usr/bin/kmod"}
    assert kmod == {n: "/usr/bin/kmod" for n in ("kmod", "depmod", "modprobe", "modinfo")}
    assert "kmod-cp" not in found.programs
    assert native.wrapper(found, "modprobe").endswith(f'--argv0 modprobe {native.TREE}/usr/bin/kmod "$@"\n')
    # dracut-install is started by its path: its script is bound over it; skipcpio is not;
    # dash runs the #!/bin/sh scripts: bound over it, and first in PATH as any program
    assert found.bound == ("/usr/bin/dash", "/usr/lib/dracut/dracut-install")
    assert "dracut-install" not in found.programs and "skipcpio" not in found.programs
    assert found.programs["dash"] == "/usr/bin/dash"
    assert found.versions["kmod"] == "34.2-2" and found.versions["dracut-install"] == "106-6"
    # each program counted once: cp, realpath, zstd, kmod and its 3 names, dash, dracut-install
    assert found.summary().startswith("9 programs of the tools tree run natively (coreutils 9.7-3, dash ")


def test_dash_and_dracut_install_have_their_script_bound_over_them_unless_a_link_is_on_the_way(
    trees: tuple[Path, Path], tmp_path: Path
) -> None:
    image, tree = trees
    with_kmod(image, tree)
    found = native.find(image, tree)
    assert found is not None
    (image / "usr/lib/dracut").mkdir(parents=True)
    (image / "usr/lib/dracut/dracut-install").write_text("arm64 program")
    where = tmp_path / "native"
    (image / "usr/bin").mkdir(parents=True)
    (image / "usr/bin/dash").write_text("arm64 program")
    binds = native.prepare(found, image, where)
    assert [b.target for b in binds[2:]] == ["/usr/bin/dash", "/usr/lib/dracut/dracut-install"]
    assert binds[-1].read_only
    # started as the path it was started by: /bin/sh for a #!/bin/sh script
    assert binds[-2].source.read_text().endswith(f' --argv0 "$0" {native.TREE}/usr/bin/dash "$@"\n')
    script = binds[-1].source.read_text()
    assert script == native.wrapper(found, "", "/usr/lib/dracut/dracut-install")
    assert binds[-1].source.stat().st_mode & 0o777 == 0o755
    # the image's dracut-install through a link (e.g. /usr/lib → elsewhere): not bound
    (image / "usr/lib/dracut/dracut-install").unlink()
    (image / "usr/lib/dracut/dracut-install").symlink_to("/usr/bin/true")
    targets = [b.target for b in native.prepare(found, image, tmp_path / "again")]
    assert "/usr/lib/dracut/dracut-install" not in targets


def test_nothing_runs_natively_without_a_tree_a_static_shell_or_one_loader(trees: tuple[Path, Path]) -> None:
    image, tree = trees
    assert native.find(image, None) is None
    (tree / "usr/lib/aarch64-linux-gnu").mkdir()
    (tree / "usr/lib/aarch64-linux-gnu/ld-linux-aarch64.so.1").write_text("another")
    assert native.find(image, tree) is None
    (tree / "usr/lib/aarch64-linux-gnu/ld-linux-aarch64.so.1").unlink()
    assert native.find(image, tree) is not None
    (tree / "usr/bin/busybox").unlink()
    assert native.find(image, tree) is None


def test_the_scripts_start_the_tree_s_program_with_the_tree_s_loader(trees: tuple[Path, Path]) -> None:
    found = native.find(*trees)
    assert found is not None
    tools = native.TREE
    assert native.wrapper(found, "cp") == (
        f"#!{tools}/usr/bin/busybox sh\n"
        f"exec {tools}/{LOADER} --inhibit-cache --library-path {tools}/usr/lib/x86_64-linux-gnu "
        f'--argv0 cp {tools}/usr/bin/cp "$@"\n'
    )
    # cpio looks for the scripts in the tree it archives, then runs the image's own cpio
    # (the tree has none here)
    guard = native.cpio_guard(found)
    assert (
        f"-exec {native.TREE}/usr/bin/busybox grep -lsF {native.HOME} {{}} + >> {native.STATE}/copied"
        in guard
    )
    assert guard.endswith('exec /usr/bin/cpio "$@"\n')


def test_the_cpio_guard_marks_a_copied_script_and_passes_its_arguments_on(tmp_path: Path) -> None:
    """The guard's shell logic, run by the build host's sh with its paths moved to tmp_path."""
    found = native.Native(Path("/"), "/bin/busybox", "/" + LOADER, {}, {})
    staged, state = tmp_path / "staged", tmp_path / "state"
    staged.mkdir()
    state.mkdir()
    script = native.cpio_guard(found).split("\n", 1)[1]
    script = script.replace(f"{native.TREE}/bin/busybox ", "").replace(native.STATE, str(state))
    script = script.replace("exec /usr/bin/cpio", "echo")

    def cpio(*args: str) -> str:
        return subprocess.run(
            ["sh", "-c", script, "cpio", *args], capture_output=True, text=True, check=True
        ).stdout

    assert cpio("--quiet", "-o", "-H", "newc", "-D", str(staged)) == f"--quiet -o -H newc -D {staged}\n"
    assert (state / "copied").read_text() == ""
    (staged / "etc").mkdir()
    (staged / "etc/mtab").symlink_to(tmp_path / "mounts")  # a link is not followed
    (tmp_path / "mounts").write_text(f"tmpfs {native.HOME} tmpfs rw 0 0\n")
    cpio("-o", "-D", str(staged))
    assert (state / "copied").read_text() == ""
    (staged / "usr/bin").mkdir(parents=True)
    (staged / "usr/bin/sed").write_text(
        native.wrapper(native.Native(Path("/"), "/b", "/l", {"sed": "/s"}, {}), "sed")
    )
    cpio("-o", "-D", str(staged))
    assert (state / "copied").read_text() == f"{staged}/usr/bin/sed\n"


def test_mkinitramfs_finds_the_scripts_first_in_its_own_path(trees: tuple[Path, Path]) -> None:
    found = native.find(*trees)
    assert found is not None
    text = "#!/bin/sh\n\numask 0022\nexport PATH='/usr/bin:/sbin:/bin'\n\nkeep=n\n"
    patched = native.patched_mkinitramfs(text, found)
    assert patched == f"#!/bin/sh\n\numask 0022\nexport PATH='{native.BIN}:/usr/bin:/sbin:/bin'\n\nkeep=n\n"
    with_dash = native.Native(
        found.tree, found.shell, found.loader, {**found.programs, "dash": "/usr/bin/dash"}, {}
    )
    assert (native.patched_mkinitramfs(text, with_dash) or "").startswith(f"#!{native.BIN}/dash\n")
    # another mkinitramfs: left alone (its programs then run emulated)
    assert native.patched_mkinitramfs(text.replace("/sbin:/bin'", "/bin'"), found) is None
    assert native.patched_mkinitramfs(text + "export PATH='/usr/bin:/sbin:/bin'\n", found) is None
    assert native.patched_mkinitramfs("#!/bin/bash\n" + text[10:], found) is None


def test_prepare_writes_the_scripts_and_binds_the_tree_read_only(
    trees: tuple[Path, Path], tmp_path: Path
) -> None:
    image, tree = trees
    found = native.find(image, tree)
    assert found is not None
    (image / "usr/sbin").mkdir(parents=True)
    (image / "usr/sbin/mkinitramfs").write_text("#!/bin/sh\nexport PATH='/usr/bin:/sbin:/bin'\n")
    where = tmp_path / "native"
    binds = native.prepare(found, image, where)
    assert sorted(p.name for p in (where / "bin").iterdir()) == ["cp", "cpio", "realpath", "zstd"]
    assert all(p.stat().st_mode & 0o777 == 0o755 for p in (where / "bin").iterdir())
    assert [(b.source, b.target, b.read_only) for b in binds] == [
        (where, native.HOME, False),
        (tree, native.TREE, True),
        (where / "mkinitramfs", native.MKINITRAMFS, True),
    ]
    # a link where mkinitramfs is: never bound over (the mount would follow it on the host)
    (image / "usr/sbin/mkinitramfs").unlink()
    (image / "usr/sbin/mkinitramfs").symlink_to("/usr/sbin/other")
    assert native.MKINITRAMFS not in [b.target for b in native.prepare(found, image, tmp_path / "again")]


def test_a_script_in_an_output_is_found_even_across_read_chunks(tmp_path: Path) -> None:
    image, where = tmp_path / "image", tmp_path / "native"
    (where / "state").mkdir(parents=True)
    (image / "boot/firmware").mkdir(parents=True)
    (image / "boot/firmware/initrd.img").write_bytes(b"\0" * (1 << 20))
    assert native.copied(where, image, ["/boot", "/var/lib/initramfs-tools"]) is None
    # the marker split by the 1 MiB read
    (image / "boot/firmware/kernel8.img").write_bytes(b"x" * ((1 << 20) - 5) + native.HOME.encode())
    assert native.copied(where, image, ["/boot"]) == "/boot/firmware/kernel8.img"
    (image / "boot/firmware/kernel8.img").unlink()
    (where / "state/copied").write_text("")  # cpio's guard ran and found nothing
    assert native.copied(where, image, ["/boot"]) is None
    (where / "state/copied").write_text("/var/tmp/mkinitramfs_x/usr/bin/sed\n")
    found = native.copied(where, image, ["/boot"])
    assert found == "/var/tmp/mkinitramfs_x/usr/bin/sed in the tree mkinitramfs packed"


def test_a_run_that_copied_a_script_is_undone_and_run_again_emulated(
    trees: tuple[Path, Path], tmp_path: Path
) -> None:
    from imagesmith.host.rootfs import CHROOT_ENV
    from imagesmith.host.run import Runner

    image, tree = trees
    found = native.find(image, tree)
    assert found is not None
    (image / "boot").mkdir()
    (image / "boot/vmlinuz").write_text("kernel")
    (image / "boot/old").write_text("before the hooks")
    runs: list[tuple[list[str], str]] = []

    def hooks(binds: object, path: str) -> None:
        targets = [b.target for b in binds]  # type: ignore[attr-defined]
        runs.append((targets, path))
        if targets:  # what only the first run does is undone
            (image / "boot/old").write_text("changed by the hooks")
            (image / "boot/made").write_text("made by the hooks")
        initrd = native.wrapper(found, "cp") if targets else "the image's own cp"
        (image / "boot/initrd.img").write_text(initrd)
        (image / "var/lib/initramfs-tools").mkdir(parents=True, exist_ok=True)
        (image / "var/lib/initramfs-tools/state").write_text(path)

    native.run(Runner(), found, image, ["/boot", "/var/lib/initramfs-tools"], hooks)
    # first with the scripts first in PATH, then, as one was copied, emulated
    assert runs == [([native.HOME, native.TREE], native.PATH), ([], CHROOT_ENV["PATH"])]
    assert (image / "boot/initrd.img").read_text() == "the image's own cp"
    assert (image / "boot/vmlinuz").read_text() == "kernel"
    assert (image / "boot/old").read_text() == "before the hooks" and not (image / "boot/made").exists()
    assert (image / "var/lib/initramfs-tools/state").read_text() == CHROOT_ENV["PATH"]
    assert not list(image.parent.glob(".imagesmith-native-*"))  # its scratch directory is gone

    runs.clear()
    native.run(Runner(), None, image, ["/boot"], hooks)  # nothing native: emulated once
    assert runs == [([], CHROOT_ENV["PATH"])]
