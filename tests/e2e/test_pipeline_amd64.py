"""Every config feature end to end on a native target (qemu-amd64), built and booted."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import Built, build, deb_purl, imagesmith, installed

pytestmark = pytest.mark.slow
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
    for args in (["genpkey", "-algorithm", "ed25519", "-out", "release.pem"],
                 ["pkey", "-in", "release.pem", "-pubout", "-out", "release.pub"]):  # fmt: skip
        subprocess.run(["openssl", *args], cwd=root / "secrets", check=True, capture_output=True)
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


def test_sboms_validate_and_list_exactly_the_installed_packages(vm: Built) -> None:
    from imagesmith.outputs import sbom

    spdx_path, cdx_path = vm.output / "pipeline.spdx.json", vm.output / "pipeline.cdx.json"
    assert sbom.check_spdx_file(spdx_path) == []
    sbom.check_cyclonedx(cdx_path.read_text())
    status = installed(vm.cat("/var/lib/dpkg/status"))
    expected = {deb_purl(n, v, a) for n, (v, a) in status.items()}
    spdx = json.loads(spdx_path.read_text())
    packages = [p for p in spdx["packages"] if p["SPDXID"] != "SPDXRef-Image"]
    assert {p["name"]: p["versionInfo"] for p in packages} == {n: v for n, (v, _) in status.items()}
    assert {p["externalRefs"][0]["referenceLocator"] for p in packages} == expected
    cdx = json.loads(cdx_path.read_text())
    assert {c["purl"] for c in cdx["components"]} == expected
    image = next(p for p in spdx["packages"] if p["SPDXID"] == "SPDXRef-Image")
    from imagesmith.outputs.files import sha256

    assert (
        image["checksums"][0]["checksumValue"]
        == sha256(vm.image)
        == cdx["metadata"]["component"]["hashes"][0]["content"]
    )


def test_licences_come_from_the_images_copyright_files(vm: Built, tmp_path: Path) -> None:
    from imagesmith.outputs.licenses import NOASSERTION, from_copyright

    subprocess.run(
        ["debugfs", "-R", f"rdump /usr/share/doc {tmp_path}", vm.root()], check=True, capture_output=True
    )
    declared = {
        p["name"]: p["licenseDeclared"]
        for p in json.loads((vm.output / "pipeline.spdx.json").read_text())["packages"]
    }
    compared = 0
    for doc in sorted((tmp_path / "doc").iterdir()):
        copyright_file = doc / "copyright"
        if doc.name in declared and copyright_file.is_file():
            assert declared[doc.name] == from_copyright(copyright_file.read_text(errors="replace")).declared
            compared += 1
    assert compared > 100
    assert declared["zlib1g"] == "Zlib" and declared["tzdata"] == "LicenseRef-public-domain"
    assert "GPL-2.0-or-later" in declared["base-files"]
    mapped = [v for v in declared.values() if v != NOASSERTION]
    assert len(mapped) / len(declared) > 0.8, "most of Debian's copyright files are machine-readable"
    # the chroot script removed jq's /usr/share/doc: its licence was kept from the bootstrap
    assert not (tmp_path / "doc" / "jq").exists() and declared["jq"] != NOASSERTION


def test_manifest(vm: Built, project: Path) -> None:
    text = (vm.output / "manifest.json").read_text()
    data = json.loads(text)
    secret = (project / "secrets" / "ops.hash").read_text().strip()
    assert secret not in text and data["config"]["users"][0]["password_hash"] == "<secret>"
    assert str(project) not in text, "no path of the build host"
    assert data["config"]["signing_key"] == "secrets/release.pem"
    assert [layer["name"] for layer in data["layers"]] == ["base", "networkd", "openssh", "app"]
    assert (
        data["layers"][0]["file"] == "imagesmith:layers/base.yaml"
        and data["layers"][1]["file"] == "networkd.yaml"
    )
    table = vm.table["partitions"]
    assert isinstance(table, list)
    assert [(p["offset"], p["size"]) for p in data["partitions"]] == [
        (t["start"] * 512, t["size"] * 512) for t in table
    ]
    assert data["partitions"][1]["partuuid"] == f"{str(vm.table['id']).removeprefix('0x')}-02"
    from imagesmith.outputs.files import sha256

    outputs = {o["file"]: o for o in data["outputs"]}
    assert sorted(outputs) == ["pipeline.cdx.json", "pipeline.img", "pipeline.img.bmap", "pipeline.spdx.json"]
    assert outputs["pipeline.img"]["sha256"] == sha256(vm.image)
    assert len(data["packages"]) == len(installed(vm.cat("/var/lib/dpkg/status")))
    by_name = {p["name"]: p for p in data["packages"]}
    assert by_name["jq"]["brought_by"] == "config" and by_name["curl"]["brought_by"] == "layer app"
    assert by_name["linux-image-amd64"]["brought_by"] == "device qemu-amd64"
    assert "mmdebstrap" in data["host_tools"] and "e2fsprogs" in data["host_tools"]


def test_verify_names_what_was_tampered_with(vm: Built, project: Path, tmp_path: Path) -> None:
    public = str(project / "secrets" / "release.pub")
    good = imagesmith("verify", str(vm.output), "--key", public)
    assert "ok      pipeline.img" in good.stdout and "ok      SHA256SUMS.sig" in good.stdout
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-a", "--sparse=always", str(vm.output), str(copy)], check=True)
    with open(copy / "pipeline.img", "r+b") as handle:
        handle.seek(vm.partition_offset(1) + 4096 * 100)
        byte = handle.read(1)
        handle.seek(-1, 1)
        handle.write(bytes([byte[0] ^ 0xFF]))
    flipped = imagesmith("verify", str(copy), "--key", public, check=False)
    assert flipped.returncode == 1 and "FAILED  pipeline.img: checksum differs" in flipped.stdout
    assert "ok      pipeline.spdx.json" in flipped.stdout
    shutil.copy(vm.output / "pipeline.img", copy / "pipeline.img")
    (copy / "SHA256SUMS.sig").write_bytes(bytes(64))
    replaced = imagesmith("verify", str(copy), "--key", public, check=False)
    assert replaced.returncode == 1 and "FAILED  SHA256SUMS.sig" in replaced.stdout
    assert "pipeline.img" not in replaced.stderr.split("verification:")[-1]


def test_packages_and_diff_commands(vm: Built) -> None:
    listed = imagesmith("packages", str(vm.output)).stdout
    assert "linux-image-" in listed and "device qemu-amd64" in listed
    trim = json.loads(imagesmith("packages", str(vm.output), "--trim", "1MiB", "--json").stdout)
    assert trim["saves"] >= 1024**2 and trim["suggestions"]
    assert not any(s["what"].startswith("device") for s in trim["suggestions"])
    same = imagesmith("diff", str(vm.output), str(vm.output)).stdout
    assert "same packages, same versions" in same and "installed size: +0 B" in same
