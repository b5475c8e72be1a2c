"""The kernel hooks' results kept in the cache by what they read (no build: a fake job)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from imagesmith.cache.store import Cache
from imagesmith.host.run import Runner
from imagesmith.stages import jobs

VERSION = "6.12.0-test"


def tree(path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
        os.utime(path / name, ns=(10**18, 10**18))  # both trees alike, as two bootstraps are
    return path


def rootfs(path: Path) -> Path:
    return tree(
        path,
        {
            f"boot/vmlinuz-{VERSION}": "kernel",
            "boot/firmware/old.txt": "left by the bootstrap",
            f"usr/lib/modules/{VERSION}/modules.dep": "kernel/a.ko:\n",
            "etc/initramfs-tools/modules": "# none\n",
            "etc/app/app.conf": "unrelated\n",
            "var/lib/dpkg/status": "Package: linux-image\n",
        },
    )


def hooks(root: Path, runs: list[int]) -> None:
    """What the kernel hooks do: make an initramfs, lay out boot files, remove one."""
    runs.append(1)
    initrd = root / f"boot/initrd.img-{VERSION}"
    initrd.write_bytes(b"initramfs of " + (root / "etc/initramfs-tools/modules").read_bytes())
    os.chmod(initrd, 0o600)
    os.utime(initrd, ns=(1_000_000_000, 1_000_000_000))
    (root / "boot/firmware/overlays").mkdir()
    (root / "boot/firmware/overlays/a.dtbo").write_text("overlay")
    os.symlink(f"initrd.img-{VERSION}", root / "boot/initrd.img")
    (root / "boot/firmware/old.txt").unlink()
    (root / "var/lib/initramfs-tools").mkdir(parents=True, exist_ok=True)
    (root / f"var/lib/initramfs-tools/{VERSION}").write_text("sha1")


def snapshot(root: Path) -> dict[str, tuple[str, int, int]]:
    found = {}
    for top in ("boot", "var/lib/initramfs-tools"):
        for path in sorted((root / top).rglob("*")):
            info = path.lstat()
            body = os.readlink(path) if path.is_symlink() else (path.read_text() if path.is_file() else "dir")
            mtime = info.st_mtime_ns if path.is_file() and not path.is_symlink() else 0
            found[str(path.relative_to(root))] = (body, info.st_mode, mtime)
    return found


@pytest.fixture()
def cache(tmp_path: Path) -> Cache:
    return Cache(tmp_path / "cache")


def run(cache: Cache, root: Path, runs: list[int], tmp_path: Path) -> bool:
    inputs = jobs.hook_inputs(root, VERSION, 1700000000, True)
    job = jobs.JobCache(Runner(log_path=tmp_path / "log"), cache)
    return job.run("hooks", root, inputs, lambda: hooks(root, runs))


def test_the_result_is_put_back_as_the_hooks_left_it(cache: Cache, tmp_path: Path) -> None:
    runs: list[int] = []
    first = rootfs(tmp_path / "a")
    assert run(cache, first, runs, tmp_path) and runs == [1]
    second = rootfs(tmp_path / "b")
    assert not run(cache, second, runs, tmp_path) and runs == [1], "restored, not run"
    assert snapshot(second) == snapshot(first)
    assert not (second / "boot/firmware/old.txt").exists(), "what the hooks removed is removed"
    assert "hooks: from the cache" in (tmp_path / "log").read_text()


def test_a_file_the_hooks_do_not_read_does_not_run_them_again(cache: Cache, tmp_path: Path) -> None:
    runs: list[int] = []
    run(cache, rootfs(tmp_path / "a"), runs, tmp_path)
    other = rootfs(tmp_path / "b")
    (other / "etc/app/app.conf").write_text("changed\n")
    (other / "etc/motd").write_text("hello\n")
    assert not run(cache, other, runs, tmp_path) and runs == [1]


@pytest.mark.parametrize(
    "path",
    ["etc/initramfs-tools/modules", "etc/modprobe.d/x.conf", "etc/udev/rules.d/9.rules",
     "usr/lib/firmware/f.bin", f"usr/lib/modules/{VERSION}/modules.dep", "var/lib/dpkg/status",
     "etc/default/raspi-firmware", "boot/firmware/cmdline.txt", "etc/modules-load.d/m.conf",
     f"usr/lib/linux-image-{VERSION}/b/x.dtb"],
)  # fmt: skip
def test_each_input_runs_them_again(cache: Cache, tmp_path: Path, path: str) -> None:
    runs: list[int] = []
    run(cache, rootfs(tmp_path / "a"), runs, tmp_path)
    other = rootfs(tmp_path / "b")
    (other / path).parent.mkdir(parents=True, exist_ok=True)
    (other / path).write_text("changed\n")
    assert run(cache, other, runs, tmp_path) and runs == [1, 1]
    assert jobs.hook_inputs(other, VERSION, 1, True) != jobs.hook_inputs(other, VERSION, 2, True), "the epoch"


def test_a_link_in_the_image_is_never_followed_out_of_it(cache: Cache, tmp_path: Path) -> None:
    runs: list[int] = []
    run(cache, rootfs(tmp_path / "a"), runs, tmp_path)
    outside = tmp_path / "host"
    outside.mkdir()
    other = rootfs(tmp_path / "b")
    # where the result puts a directory (initramfs-tools' state is written, not read)
    (other / "var/lib").mkdir(parents=True, exist_ok=True)
    os.symlink(str(outside), other / "var/lib/initramfs-tools")
    assert not run(cache, other, runs, tmp_path)
    assert list(outside.iterdir()) == []
    assert (other / f"var/lib/initramfs-tools/{VERSION}").read_text() == "sha1"
    assert not (other / "var/lib/initramfs-tools").is_symlink()


def test_without_a_cache_the_hooks_just_run(tmp_path: Path) -> None:
    runs: list[int] = []
    root = rootfs(tmp_path / "a")
    job = jobs.JobCache(Runner(log_path=tmp_path / "log"), None)
    assert job.run("hooks", root, {}, lambda: hooks(root, runs)) and runs == [1]


def depmod(root: Path, runs: list[int]) -> None:
    """What depmod and slim's pruning do: describe the modules, remove one no one keeps."""
    runs.append(1)
    modules = root / f"usr/lib/modules/{VERSION}"
    (modules / "kernel/b.ko").unlink()
    (modules / "modules.dep").write_text("kernel/a.ko:\n")
    (modules / "modules.dep.bin").write_bytes(b"\x00binary")


def modules_tree(path: Path) -> Path:
    root = rootfs(path)
    for name in ("kernel/a.ko", "kernel/b.ko"):
        (root / f"usr/lib/modules/{VERSION}/{name}").parent.mkdir(parents=True, exist_ok=True)
        (root / f"usr/lib/modules/{VERSION}/{name}").write_bytes(name.encode())
    return root


def run_depmod(cache: Cache, root: Path, runs: list[int], tmp_path: Path, pruning: str = "p1") -> bool:
    inputs = jobs.module_inputs(root, VERSION, pruning)
    job = jobs.JobCache(Runner(log_path=tmp_path / "log"), cache)
    return job.run("depmod", root, inputs, lambda: depmod(root, runs), [f"/usr/lib/modules/{VERSION}"])


def test_depmod_and_pruning_are_put_back_when_the_modules_are_unchanged(cache: Cache, tmp_path: Path) -> None:
    runs: list[int] = []
    first = modules_tree(tmp_path / "a")
    assert run_depmod(cache, first, runs, tmp_path) and runs == [1]
    second = modules_tree(tmp_path / "b")
    (second / "etc/app/app.conf").write_text("an unrelated change\n")
    assert not run_depmod(cache, second, runs, tmp_path) and runs == [1], "restored, not run"
    modules = second / f"usr/lib/modules/{VERSION}"
    assert not (modules / "kernel/b.ko").exists(), "the pruned module is removed again"
    assert (modules / "modules.dep.bin").read_bytes() == b"\x00binary"
    assert (modules / "kernel/a.ko").read_bytes() == b"kernel/a.ko"
    assert not (second / "boot/initrd.img").exists(), "only the modules are the job's result"


@pytest.mark.parametrize(
    "path",
    [f"usr/lib/modules/{VERSION}/kernel/c.ko", "etc/depmod.d/x.conf", "etc/modules-load.d/m.conf",
     "etc/modules", f"boot/System.map-{VERSION}", "usr/lib/depmod.d/y.conf"],
)  # fmt: skip
def test_each_input_of_depmod_runs_it_again(cache: Cache, tmp_path: Path, path: str) -> None:
    runs: list[int] = []
    run_depmod(cache, modules_tree(tmp_path / "a"), runs, tmp_path)
    other = modules_tree(tmp_path / "b")
    (other / path).parent.mkdir(parents=True, exist_ok=True)
    (other / path).write_text("changed\n")
    assert run_depmod(cache, other, runs, tmp_path) and runs == [1, 1]


def status(*packages: tuple[str, str]) -> str:
    return "".join(f"Package: {n}\nStatus: install ok installed\nVersion: {v}\n\n" for n, v in packages)


def test_depmod_runs_again_for_a_new_kmod_not_for_another_package(cache: Cache, tmp_path: Path) -> None:
    runs: list[int] = []
    first = modules_tree(tmp_path / "a")
    (first / "var/lib/dpkg/status").write_text(status(("kmod", "34-1")))
    run_depmod(cache, first, runs, tmp_path)
    more = modules_tree(tmp_path / "b")
    (more / "var/lib/dpkg/status").write_text(status(("jq", "1.7"), ("kmod", "34-1")))
    assert not run_depmod(cache, more, runs, tmp_path) and runs == [1]
    upgraded = modules_tree(tmp_path / "c")
    (upgraded / "var/lib/dpkg/status").write_text(status(("kmod", "34-2")))
    assert run_depmod(cache, upgraded, runs, tmp_path) and runs == [1, 1]


def test_what_slim_keeps_is_an_input_of_depmod(cache: Cache, tmp_path: Path) -> None:
    runs: list[int] = []
    run_depmod(cache, modules_tree(tmp_path / "a"), runs, tmp_path, pruning="p1")
    assert run_depmod(cache, modules_tree(tmp_path / "b"), runs, tmp_path, pruning="p2") and runs == [1, 1]


def data_tree(path: Path) -> Path:
    return tree(
        path,
        {
            "usr/lib/udev/hwdb.d/20-usb.hwdb": "usb:v1D6B*\n ID_VENDOR_FROM_DATABASE=Linux Foundation\n",
            "usr/lib/udev/rules.d/50-udev.rules": "# rules\n",
            "usr/share/ca-certificates/mozilla/A.crt": "cert A\n",
            "etc/ca-certificates.conf": "mozilla/A.crt\n",
            "etc/ssl/certs/.keep": "",
            "etc/locale.gen": "en_GB.UTF-8 UTF-8\n",
            "usr/share/i18n/locales/en_GB": "LC_CTYPE\n",
            "usr/lib/locale/C.utf8/LC_CTYPE": "c",
            "etc/app/app.conf": "unrelated\n",
            "var/lib/dpkg/status": status(("udev", "257"), ("locales", "2.41"), ("openssl", "3.5")),
        },
    )


DATA_WRITES = {
    "udev hwdb": ("usr/lib/udev/hwdb.bin", "usr/lib/udev/hwdb.d/20-usb.hwdb"),
    "certificate store": ("etc/ssl/certs/ca-certificates.crt", "usr/share/ca-certificates/mozilla/A.crt"),
    "locale-gen": ("usr/lib/locale/locale-archive", "etc/locale.gen"),
}


@pytest.mark.parametrize("job", list(jobs.DATA_JOBS))
def test_a_data_job_is_put_back_until_what_it_reads_changes(cache: Cache, tmp_path: Path, job: str) -> None:
    """The hwdb, the certificate store and the locale archive: the same bytes put back
    from the cache while their sources are unchanged; a change to a source, or to the
    packages whose programs it runs, runs the job again; an unrelated file or package does
    not (but for the certificate store, whose hooks may be any package's programs)."""
    output, source = DATA_WRITES[job]
    runs: list[int] = []

    def make(root: Path) -> None:
        runs.append(1)
        (root / output).write_bytes(b"made from " + (root / source).read_bytes())

    def build(root: Path) -> bytes:
        jobs.JobCache(Runner(), cache).data(job, root, lambda: make(root))
        return (root / output).read_bytes()

    first = build(data_tree(tmp_path / "one"))
    assert build(data_tree(tmp_path / "two")) == first and len(runs) == 1
    other = data_tree(tmp_path / "three")
    (other / "etc/app/app.conf").write_text("changed\n")
    assert build(other) == first and len(runs) == 1
    changed = data_tree(tmp_path / "four")
    (changed / source).write_text("another source\n")
    assert build(changed) == b"made from another source\n" and len(runs) == 2
    more = data_tree(tmp_path / "five")  # a package whose programs the job does not run
    (more / "var/lib/dpkg/status").write_text(
        status(("jq", "1.7"), ("udev", "257"), ("locales", "2.41"), ("openssl", "3.5"))
    )
    build(more)
    assert len(runs) == (3 if job == "certificate store" else 2), "only the certificate store: its hooks"
    upgraded = data_tree(tmp_path / "six")  # its own program upgraded
    (upgraded / "var/lib/dpkg/status").write_text(
        status(("udev", "258"), ("locales", "2.42"), ("openssl", "3.6"))
    )
    build(upgraded)
    assert len(runs) == (4 if job == "certificate store" else 3)


def test_certificate_hooks_are_never_put_back(tmp_path: Path, cache: Cache) -> None:
    """A hook in update.d may write anywhere: with one, update-ca-certificates always runs."""
    from imagesmith.stages import deferred

    root = data_tree(tmp_path / "root")
    (root / "usr/sbin").mkdir(parents=True)
    (root / "usr/sbin/update-ca-certificates").write_text("#!/bin/sh\n")
    runs: list[int] = []

    class Tools:
        def certificates(self) -> None:
            runs.append(1)

    calls: list[list[str]] = []

    class Quiet(Runner):
        def run(self, argv: list[str], **kwargs: object) -> str:  # type: ignore[override]
            calls.append(argv)
            return ""

    for _ in range(2):
        deferred.certificates(Quiet(), root, Tools(), jobs.JobCache(Runner(), cache))  # type: ignore[arg-type]
    assert len(runs) == 1  # the second from the cache
    (root / "etc/ca-certificates/update.d").mkdir(parents=True)
    (root / "etc/ca-certificates/update.d/java").write_text("#!/bin/sh\n")
    for _ in range(2):
        deferred.certificates(Quiet(), root, Tools(), jobs.JobCache(Runner(), cache))  # type: ignore[arg-type]
    assert len(runs) == 3


def test_after_depmod_the_hooks_are_keyed_by_its_fingerprint_not_the_modules_again(tmp_path: Path) -> None:
    root = rootfs(tmp_path / "a")
    before = jobs.hook_inputs(root, VERSION, 1, True, modules="depmod-1")
    (root / f"usr/lib/modules/{VERSION}/modules.dep").write_text("what depmod-1 wrote\n")
    assert jobs.hook_inputs(root, VERSION, 1, True, modules="depmod-1") == before
    assert jobs.hook_inputs(root, VERSION, 1, True, modules="depmod-2") != before


def test_a_tree_the_build_left_as_the_cache_entry_has_it_is_read_once_per_entry(
    cache: Cache, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = rootfs(tmp_path / "rootfs")  # stands for the merged view of an overlay
    upper = tmp_path / "rootfs.upper"
    (upper / "etc").mkdir(parents=True)
    read: list[Path] = []
    from imagesmith.stages.base import tree_digest as real

    def counted(path: Path, ignore: tuple[str, ...] = ()) -> str:
        read.append(path)
        return real(path, ignore)

    monkeypatch.setattr(jobs, "tree_digest", counted)
    job = jobs.JobCache(Runner(), cache, layers=(upper, "entry-1"))
    modules = root / f"usr/lib/modules/{VERSION}"
    first = job.tree(root, modules)
    assert job.tree(root, modules) == first == real(modules) and read == [modules], "remembered"
    assert jobs.JobCache(Runner(), cache, layers=(upper, "entry-2")).tree(root, modules) == first
    assert read == [modules, modules], "another entry: read again"
    (upper / "etc/initramfs-tools").mkdir()  # the build changed something there
    job.tree(root, root / "etc/initramfs-tools")
    job.tree(root, root / "etc/initramfs-tools")
    assert read[2:] == [root / "etc/initramfs-tools"] * 2, "a changed tree is always read"
