"""Hardening on a real build: links from the image to the host, secrets, damaged cache
entries, two builds into one output, editor and VCS files in overlays."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO, Built, built

pytestmark = pytest.mark.slow
DATA = Path(__file__).parent / "data" / "hardening"
MIRROR_PASSWORD = "mirror-pa55word-x7"
PASSPHRASE = "signing-passphrase-q9"
TOKEN = "ci-token-value-k3"  # a secret of the builder's environment that no script may see


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hardening") / "p"
    shutil.copytree(DATA, root)
    host = root.parent / "host"
    (host / "ssh").mkdir(parents=True)
    (host / "ssh" / "ssh_host_ed25519_key").write_text("the host's own key\n")
    (root / "scripts" / "links.sh").write_text(
        "#!/bin/sh\nset -e\n"
        f"rm -rf /etc/ssh && ln -s {host / 'ssh'} /etc/ssh\n"  # hygiene deletes keys there
        "mkdir -p /boot/firmware && ln -s /etc/hostname /boot/firmware/hostname.txt\n"
    )
    (root / "overlay" / "etc" / "app" / "app.conf~").write_text("an editor's backup\n")
    (root / "overlay" / "etc" / "app" / ".git").mkdir()
    (root / "overlay" / "etc" / "app" / ".git" / "config").write_text("[core]\n")
    (root / "secrets").mkdir()
    subprocess.run(
        ["openssl", "genpkey", "-algorithm", "ed25519", "-aes-256-cbc", "-pass", f"pass:{PASSPHRASE}",
         "-out", str(root / "secrets" / "release.pem")],
        check=True, capture_output=True,
    )  # fmt: skip
    return root


def env_for_build() -> dict[str, str]:
    return {
        **os.environ,
        "HARDENING_MIRROR": f"http://imagesmith:{MIRROR_PASSWORD}@deb.debian.org/debian",
        "IMAGESMITH_SIGNING_KEY_PASSPHRASE": PASSPHRASE,
        "CI_TOKEN": TOKEN,
    }


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "imagesmith", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env_for_build(),
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"imagesmith {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
        )
    return proc


@pytest.fixture(scope="module")
def first(project: Path) -> tuple[Built, str]:
    proc = run("build", str(project / "image.yaml"), "-o", str(project / "out"), "--update-lock")
    return built(project / "out"), proc.stderr


def test_links_in_the_image_never_reach_the_host(first: tuple[Built, str], project: Path) -> None:
    vm, _ = first
    assert (project.parent / "host" / "ssh" / "ssh_host_ed25519_key").read_text() == "the host's own key\n"
    # the FAT partition holds what the link means in the image, not the host's /etc/hostname
    assert vm.boot_file("hostname.txt") == "hardened\n"


def test_secrets_reach_no_output_log_or_lock(first: tuple[Built, str], project: Path) -> None:
    _, printed = first
    files = [*project.joinpath("out").iterdir(), project / "image.yaml.lock"]
    assert project / "out" / "build.log" in files and (project / "image.yaml.lock").is_file()
    for path in files:
        if path.is_file():
            data = path.read_bytes()
            for secret in (MIRROR_PASSWORD, PASSPHRASE, TOKEN):
                assert secret.encode() not in data, f"{secret} in {path.name}"
    assert MIRROR_PASSWORD not in printed and PASSPHRASE not in printed
    assert "http://deb.debian.org/debian" in (project / "image.yaml.lock").read_text()
    assert (project / "out" / "SHA256SUMS.sig").is_file()  # the encrypted key was used


def test_scripts_see_an_allow_listed_environment(first: tuple[Built, str], project: Path) -> None:
    env = dict(
        line.split("=", 1)
        for line in (project / "scripts" / "env.txt").read_text().splitlines()
        if "=" in line
    )
    assert (
        "IMAGESMITH_SIGNING_KEY_PASSPHRASE" not in env
        and "CI_TOKEN" not in env
        and "HARDENING_MIRROR" not in env
    )
    assert Path(env["ROOTFS"]).is_absolute() and env["IMAGESMITH_NAME"] == "hardened"


def test_editor_and_vcs_files_stay_out_of_overlays(first: tuple[Built, str]) -> None:
    vm, printed = first
    listing = vm.debugfs("ls /etc/app")
    assert "app.conf" in listing and "app.conf~" not in listing and ".git" not in listing
    assert "not copied, as `ignore:` says: etc/app/.git/, etc/app/app.conf~" in printed


def test_a_damaged_cache_entry_is_discarded_and_rebuilt(first: tuple[Built, str], project: Path) -> None:
    cache = Path(os.environ["XDG_CACHE_HOME"]) / "imagesmith" / "entries"
    config = str(project / "image.yaml")  # this build's entry, among the other modules' ones
    entry = next(
        p
        for p in cache.iterdir()
        if p.name.startswith("filesystems-")
        and config in json.loads((p / "meta.json").read_text())["configs"]
    )
    target = next(entry.glob("*.ext4"))
    with open(target, "r+b") as handle:  # a flipped byte in the cached root partition
        handle.seek(1024 + 100)
        byte = handle.read(1)
        handle.seek(1024 + 100)
        handle.write(bytes([byte[0] ^ 0xFF]))
    # into another directory: in the first one the outputs are current and nothing is read
    out = project / "out-after-damage"
    proc = run("build", str(project / "image.yaml"), "-o", str(out))
    assert "is damaged (its files changed since it was made): discarded" in proc.stderr
    assert run("verify", str(out)).returncode == 0
    # the rebuilt image is the first one, byte for byte
    assert first[0].image.read_bytes() == built(out).image.read_bytes()


def test_two_builds_into_one_output_never_mix(first: tuple[Built, str], project: Path) -> None:
    args = [
        sys.executable,
        "-m",
        "imagesmith",
        "build",
        str(project / "image.yaml"),
        "-o",
        str(project / "out"),
        "--rebuild-from",  # both publish (the outputs there are current: without it, neither would)
        "disk",
    ]
    procs = [
        subprocess.Popen(args, cwd=REPO, env=env_for_build(), stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [proc.communicate(timeout=900)[1] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    assert any("waiting: another build is writing to" in out for out in outputs)
    log = (project / "out" / "build.log").read_text()
    assert log.count("building hardened for") == 1  # one build's log, not two interleaved
    assert run("verify", str(project / "out")).returncode == 0


def test_a_misspelt_package_is_found_in_the_mirror_s_index_before_the_bootstrap(project: Path) -> None:
    """Against the real mirror (through the credentials in its URL): no bootstrap runs. (A
    variant of its own: the first build's lock file would refuse the changed packages.)"""
    out = project / "typo"
    args = ["--variant", "typo", "--set", "packages=[openssh-servr]"]
    proc = run("build", str(project / "image.yaml"), "-o", str(out), *args, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "no package 'openssh-servr' in trixie (amd64) on http://deb.debian.org/debian" in proc.stderr
    assert "did you mean openssh-server" in proc.stderr
    assert "mmdebstrap --mode" not in (out / "build.log").read_text()  # caught before mmdebstrap ran
    assert MIRROR_PASSWORD not in proc.stderr
