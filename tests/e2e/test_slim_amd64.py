"""examples/slim.yaml's twin on the native target: what slim leaves out, what it keeps (the
copyright files, so every licence of the SBOM), and a boot to a login."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from .conftest import REPO, Built, build, imagesmith, kernel_modules

pytestmark = pytest.mark.slow
PROBE = Path(__file__).parent / "data" / "slim" / "probe"


@pytest.fixture(scope="module")
def vm(tmp_path_factory: pytest.TempPathFactory) -> Built:
    # the example, and a probe unit that says on the console what runs once it is up
    probe = json.dumps([{"source": str(PROBE), "target": "/"}])
    out = tmp_path_factory.mktemp("slim") / "out"
    return build(REPO / "examples" / "slim.yaml", out, "--variant", "qemu", "--set", f"files={probe}")


def listing(vm: Built, directory: str) -> list[str]:
    return [line.split()[-1] for line in vm.debugfs(f"ls -l {directory}").splitlines() if line.strip()]


def test_docs_man_pages_and_translations_are_left_out(vm: Built, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    subprocess.run(
        ["debugfs", "-R", f"rdump /usr/share/doc {docs}", vm.root()], check=True, capture_output=True
    )
    files = [p for p in (docs / "doc").rglob("*") if p.is_file() and not p.is_symlink()]
    assert len(files) > 50 and all(p.name == "copyright" for p in files), [
        p for p in files if p.name != "copyright"
    ]
    assert "man1" not in vm.debugfs("ls /usr/share/man")
    # the slim config's locale is C.UTF-8: no translation stays
    assert set(listing(vm, "/usr/share/locale")) <= {".", "..", "locale.alias"}
    rules = vm.cat("/etc/dpkg/dpkg.cfg.d/imagesmith-slim")
    assert "path-exclude=/usr/share/doc/*\npath-include=/usr/share/doc/*/copyright\n" in rules


def test_every_package_keeps_its_licence(vm: Built, tmp_path: Path) -> None:
    full = build(REPO / "examples" / "slim.yaml", tmp_path / "full", "--variant", "qemu",
                 "--set", "slim={docs: false, locales: false, modules: false}")  # fmt: skip

    def licences(built: Built) -> dict[str, str]:
        manifest = json.loads((built.output / "manifest.json").read_text())
        return {p["name"]: p["license"] for p in manifest["packages"]}

    assert licences(vm) == licences(full)
    assert "man1" in full.debugfs("ls /usr/share/man")
    assert vm.image.stat().st_size <= full.image.stat().st_size
    slim_root, full_root = (
        json.loads((b.output / "manifest.json").read_text())["sizes"]["rootfs"] for b in (vm, full)
    )
    assert slim_root < full_root


def test_only_the_device_s_modules_and_their_dependencies_are_left(vm: Built, tmp_path: Path) -> None:
    version, modules = kernel_modules(vm)
    listed, names = list(modules.paths.values()), set(modules.paths)
    # the catalog's virtio drivers, the filesystems (vfat with its code pages), systemd's own
    assert {"virtio_blk", "virtio_net", "ext4", "jbd2", "vfat", "fat", "nls_cp437", "dm_mod"} <= names
    assert "crc32c_intel" in names or "crc32c_generic" in names, "ext4's soft dependency, by alias"
    assert len(names) < 60 and "e1000" not in names and not any("drm/amd" in p for p in listed)
    # modules.dep lists exactly the files that are there
    tree = tmp_path / "modules"
    tree.mkdir()
    subprocess.run(["debugfs", "-R", f"rdump /usr/lib/modules/{version}/kernel {tree}", vm.root()],
                   check=True, capture_output=True)  # fmt: skip
    present = sorted(p.relative_to(tree).as_posix() for p in tree.rglob("*.ko*"))
    assert present == sorted(listed)
    assert "slim.modules: kernel" in (vm.output / "build.log").read_text()


def test_boots_to_a_login_with_networking_and_ssh(vm: Built, tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    # systemd stops showing unit status once the serial login owns the console: the probe
    # unit (after ssh and networkd) says what runs
    imagesmith("boot", str(vm.image), "--console-log", str(log), "--timeout", "900",
               "--expect", "slim-probe: done", timeout=1200)  # fmt: skip
    console = log.read_text(errors="replace")
    for unit in ("systemd-networkd.service", "ssh.service", "serial-getty@ttyS0.service"):
        assert f"slim-probe: {unit} active" in console, unit
    assert re.search(r"slim-probe: address \S+ 10\.0\.2\.\d+/24", console), "DHCP from QEMU's network"
    assert "slim-probe: failed units 0" in console  # the serial getty above is the login
    # slim.huge_pages: the kernel keeps its default reserve (about 4 MiB with 1 GiB), not the
    # 44 MiB it raises it to for making transparent huge pages
    assert "slim-probe: huge pages always madvise [never]" in console
    reserve = int(re.search(r"slim-probe: min_free_kbytes (\d+)", console).group(1))  # type: ignore[union-attr]
    assert reserve < 16384, reserve
