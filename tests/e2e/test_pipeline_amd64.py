"""Every config feature end to end on a native target (qemu-amd64), built and booted."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from .conftest import Built, build, imagesmith, needs_root

pytestmark = [pytest.mark.slow, needs_root]
DATA = Path(__file__).parent / "data" / "amd64"
# a variant file over the config, and a variable's value from the command line
OPTIONS = ("--variant", "test", "--set", "variables.site=pipeline")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test project, with the modes git cannot store."""
    root = tmp_path_factory.mktemp("project") / "p"
    shutil.copytree(DATA, root, symlinks=True)
    (root / "overlay/usr/local/bin/app-tool").chmod(0o4755)
    (root / "overlay/etc/app/app.conf").chmod(0o640)
    (root / "scripts/host.sh").chmod(0o755)
    return root


@pytest.fixture(scope="module")
def vm(project: Path) -> Built:
    return build(project / "image.yaml", project / "out", *OPTIONS)


def test_settings(vm: Built) -> None:
    # hostname: "{{ site }}-vm", with site given by --set; the time zone from an included file
    assert vm.cat("/etc/hostname") == "pipeline-vm\n"
    assert "127.0.1.1\tpipeline-vm" in vm.cat("/etc/hosts")
    assert vm.cat("/etc/timezone") == "America/New_York\n"
    assert "LANG=de_CH.UTF-8" in vm.cat("/etc/locale.conf")  # /etc/default/locale links here
    assert "de_CH.UTF-8 UTF-8" in vm.cat("/etc/locale.gen")
    assert "de_CH.utf8" in vm.debugfs("ls -l /usr/lib/locale") or "locale-archive" in vm.debugfs(
        "ls -l /usr/lib/locale"
    )


def test_project_layer_replaces_the_builtin_one(vm: Built) -> None:
    network = vm.debugfs("ls /etc/systemd/network")
    assert "10-project.network" in network and "20-wired.network" not in network
    assert "from the project's networkd layer" in vm.cat("/etc/systemd/network/10-project.network")


def test_packages_added_and_removed(vm: Built) -> None:
    status = vm.cat("/var/lib/dpkg/status")
    installed = set(re.findall(r"^Package: (\S+)\nStatus: install ok installed", status, re.M))
    assert {"jq", "curl", "openssh-server", "linux-image-amd64"} <= {
        p.split(":")[0] for p in installed
    } | installed
    assert "less" not in installed


def test_user_with_hash_groups_and_key(vm: Built, project: Path) -> None:
    passwd = vm.cat("/etc/passwd")
    assert re.search(r"^ops:x:1200:\d+::/home/ops:/bin/bash$", passwd, re.M)
    shadow = {line.split(":")[0]: line.split(":")[1] for line in vm.cat("/etc/shadow").splitlines()}
    secret = (project / "secrets" / "ops.hash").read_text().strip()
    assert shadow["ops"] == secret
    assert secret not in (vm.output / "build.log").read_text(), "secrets never reach the log"
    groups = {line.split(":")[0]: line.split(":")[3] for line in vm.cat("/etc/group").splitlines()}
    assert "ops" in groups["adm"].split(",") and "ops" in groups["sudo"].split(",")
    # a user with a password uses it for sudo: no NOPASSWD rule
    assert "ops" not in vm.debugfs("ls /etc/sudoers.d")
    keys = vm.debugfs("stat /home/ops/.ssh/authorized_keys")
    assert "Mode:  0600" in keys and "User:  1200" in keys


def test_overlay_files_keep_modes_and_owners(vm: Built) -> None:
    tool = vm.debugfs("stat /usr/local/bin/app-tool")
    assert "Mode:  04755" in tool and "User:     0" in tool
    conf = vm.debugfs("stat /etc/app/app.conf")
    assert "Mode:  0640" in conf
    owned = vm.debugfs("stat /etc/app/owned.conf")
    assert "User:  1200" in owned and "Group:     4" in owned  # ops:adm


def test_scripts_ran_on_host_and_in_target(vm: Built) -> None:
    assert vm.cat("/etc/host-script") == "host script for pipeline (qemu-amd64, amd64)\n"
    assert vm.cat("/etc/chroot-script") == "amd64\n"
    assert "imagesmith-script" not in vm.debugfs("ls /tmp")


def test_services(vm: Built) -> None:
    wants = vm.debugfs("ls /etc/systemd/system/multi-user.target.wants")
    assert "app.service" in wants and "ssh.service" in wants and "systemd-networkd.service" in wants
    assert "systemd-firstboot.service" in vm.debugfs("ls -l /etc/systemd/system")
    # e2fsprogs enables e2scrub_reap.service; the config disables it
    assert "e2scrub_reap.service" not in vm.debugfs("ls /etc/systemd/system/default.target.wants")


def test_cmdline_and_boot(vm: Built, tmp_path: Path) -> None:
    cmdline = vm.boot_file("cmdline.txt")
    assert cmdline.rstrip().endswith("quiet loglevel=4")  # from the `test` variant file
    signature = str(vm.table["id"]).removeprefix("0x")
    assert f"root=PARTUUID={signature}-02" in cmdline
    console = tmp_path / "console.log"
    imagesmith("boot", str(vm.image), "--timeout", "300", "--console-log", str(console))
    text = console.read_text(errors="replace")
    assert re.search(r"pipeline-vm login:", text)
    assert "app-tool ran as root" in text, "the enabled app.service ran at boot"


def test_failed_build_leaves_nothing_that_looks_finished(project: Path, vm: Built, tmp_path: Path) -> None:
    broken = project / "broken.yaml"
    broken.write_text((project / "image.yaml").read_text().replace("scripts/chroot.sh", "scripts/fail.sh"))
    (project / "scripts" / "fail.sh").write_text("#!/bin/sh\necho about to fail\nexit 7\n")
    out = tmp_path / "out"
    result = imagesmith("build", str(broken), "-o", str(out), *OPTIONS[2:], check=False)
    assert result.returncode == 1
    assert "exit code 7" in result.stderr and "about to fail" in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["build.log"]
    assert "about to fail" in (out / "build.log").read_text()
