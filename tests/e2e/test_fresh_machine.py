"""The README's set-up on a machine that has never seen the project.

A fresh Debian root is made with mmdebstrap (minbase: not even python3), gets only what
any user's machine has of its own (DNS, CA certificates, apt's and pip's settings) and
a clean copy of the checkout; then the README's commands run in it exactly as a user
types them. Each step is timed (printed with -s, and kept in the test's report).

Everything after `./dev setup` checks what the host *can do*, not the list it installed
from: a package missing from the set-up list fails a command here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .conftest import REPO

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.geteuid() != 0, reason="makes and enters a root filesystem: run as root, as ./dev test does"
    ),
]
MIRROR = "http://deb.debian.org/debian"
CHECKOUT = "/home/user/imagesmith"
#: what a user's machine has of its own, copied from this host when it has it
OWN = [
    "etc/resolv.conf",
    "usr/local/share/ca-certificates",  # a site's own CAs (a proxy's, say); the set-up installs the rest
    "etc/apt/apt.conf",
    "etc/apt/apt.conf.d",
    "etc/apt/auth.conf.d",
    "etc/pip.conf",
    "etc/xdg/pip",
    "root/.config/pip",
]
#: the root is entered with private mount and PID namespaces, and becomes the root of its
#: mount namespace (pivot_root, not chroot: a chrooted process may not make a user
#: namespace, which a rootless build needs); nothing is left mounted
ENTER = r"""
set -e
root=$1; shift
mount --bind "$root" "$root"  # a machine's / is a mount point (unshare --propagation needs one)
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
mount --rbind /sys "$root/sys"
mount -t tmpfs tmpfs "$root/run"
mount -t tmpfs tmpfs "$root/tmp"
# systemd mounts it at every boot of a real machine
mount -t binfmt_misc binfmt_misc "$root/proc/sys/fs/binfmt_misc"
cd "$root"
pivot_root . .
umount -l .
cd /
exec /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  HOME=/root LANG=C.UTF-8 TERM=dumb bash -euo pipefail -c "$1"
"""


@dataclass
class Machine:
    root: Path
    log: Path
    times: dict[str, float] = field(default_factory=dict)

    def run(self, label: str, script: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
        """Run ``script`` (bash) in the fresh root; fail with the end of its output."""
        start = time.monotonic()
        proc = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--kill-child",
             "sh", "-c", ENTER, "enter", str(self.root), script],
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        self.times[label] = time.monotonic() - start
        with self.log.open("a") as out:
            out.write(f"==> {label}: {script}\n{proc.stdout}{proc.stderr}[exit {proc.returncode}]\n")
        if proc.returncode != 0:
            raise AssertionError(
                f"{label} failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-5000:]}"
            )
        return proc


def fresh_root(tmp_path: Path, suite: str) -> Machine:
    root = tmp_path / suite
    start = time.monotonic()
    subprocess.run(
        ["mmdebstrap", "--mode=unshare", "--variant=minbase", suite, str(root), MIRROR],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    host_suite = Path("/etc/os-release").read_text()
    for rel in OWN:
        source = Path("/") / rel
        if not source.exists():
            continue
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, symlinks=True, dirs_exist_ok=True)
        else:
            target.unlink(missing_ok=True)
            shutil.copy2(source, target)
    if f"VERSION_CODENAME={suite}" in host_suite:  # the host's own package sources fit this suite
        shutil.copytree("/etc/apt/sources.list.d", root / "etc/apt/sources.list.d", dirs_exist_ok=True)
        if Path("/etc/apt/sources.list").exists():
            shutil.copy2("/etc/apt/sources.list", root / "etc/apt/sources.list")
    # a clean copy of the checkout: what git knows (committed or not), nothing built
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, check=True, capture_output=True,
    ).stdout.split(b"\0")  # fmt: skip
    for rel in filter(None, files):
        source = REPO / rel.decode()
        if not source.exists() and not source.is_symlink():
            continue  # deleted in the work tree
        target = root / CHECKOUT.lstrip("/") / rel.decode()
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target, follow_symlinks=False)
    machine = Machine(root, tmp_path / f"{suite}.log")
    machine.times["mmdebstrap a fresh root"] = time.monotonic() - start
    return machine


def report(machine: Machine, suite: str) -> None:
    print(f"\nfresh Debian {suite}:")
    for label, seconds in machine.times.items():
        print(f"  {seconds:7.1f} s  {label}")


CAPABILITIES = {
    # what each package of the set-up list is for, shown by using it (not by asking dpkg)
    "arm64 programs run (qemu-user-static, arch-test)": "arch-test arm64",
    "time zones and locales are checked before a bootstrap (tzdata, locales)": (
        "cd /srv && for bad in timezone=Mars/Olympus locale=xx_YY.UTF-8; do "
        f"{CHECKOUT}/.venv/bin/imagesmith build --set device=qemu-amd64 --set $bad > out.txt 2>&1 "
        "&& exit 1; [ $? -eq 2 ] && grep -q unknown out.txt && ! grep -q bootstrap out.txt "
        "|| { cat out.txt; exit 1; }; done"
    ),
    # the set-up itself installs newuidmap (doctor --fix would install it too, and hide a gap)
    "an ordinary user enters a user namespace (uidmap)": (
        "command -v newuidmap && useradd -m builder && "
        f"{CHECKOUT}/.venv/bin/imagesmith doctor --fix --user builder >/dev/null "
        f"&& runuser -u builder -- {CHECKOUT}/.venv/bin/imagesmith cache clear"
    ),
    "an arm64 virtual machine starts (qemu-system-arm)": (
        "timeout 3 qemu-system-aarch64 -M virt -cpu cortex-a72 -display none -monitor none -serial none "
        "-nodefaults || [ $? -eq 124 ]"
    ),
    "the tests make signing keys (openssl)": "openssl genpkey -algorithm ed25519 -out /tmp/key.pem",
}


def set_up(machine: Machine, capabilities: dict[str, str]) -> None:
    """The README's set-up, then the doctor, then each capability it promised."""
    assert not (machine.root / "usr/bin/python3").exists(), "a fresh minbase root has no python3"
    machine.run("./dev setup", f"cd {CHECKOUT} && ./dev setup")
    doctor = machine.run(
        "imagesmith doctor", f"{CHECKOUT}/.venv/bin/imagesmith doctor --arch arm64 --for test"
    )
    assert "✗" not in doctor.stdout and "packages installed" in doctor.stdout
    for label, script in capabilities.items():
        machine.run(label, script)


@pytest.mark.timeout(3000)
def test_debian_12_set_up_build_and_boot_as_the_readme_says(tmp_path: Path) -> None:
    machine = fresh_root(tmp_path, "bookworm")
    # Debian 12's qemu-user-static registers with binfmt-support (Debian 13's does not)
    set_up(
        machine,
        {**CAPABILITIES, "qemu-user is registered (binfmt-support)": "update-binfmts --display qemu-aarch64"},
    )
    # the README's build command (on the native device: minutes less than the Pi), with the
    # default output: relative to the checkout
    machine.run(
        "./dev build (qemu-amd64)",
        f"cd {CHECKOUT} && ./dev build --set device=qemu-amd64 && test -s out/minimal/minimal.img",
    )
    # from another working directory: the default output and a relative -o are below it
    machine.run(
        "build from another directory (cached)",
        f"mkdir -p /srv/elsewhere && cd /srv/elsewhere && {CHECKOUT}/.venv/bin/imagesmith build "
        f"--set device=qemu-amd64 && {CHECKOUT}/.venv/bin/imagesmith build --set device=qemu-amd64 -o rel/x "
        "&& test -s out/minimal/minimal.img && test -s rel/x/minimal.img "
        f"&& {CHECKOUT}/.venv/bin/imagesmith verify rel/x",
    )
    boot = machine.run(
        "imagesmith boot", f"cd {CHECKOUT} && .venv/bin/imagesmith boot out/minimal/minimal.img --timeout 900"
    )
    assert "a login prompt after" in boot.stderr
    report(machine, "bookworm (Debian 12)")


@pytest.mark.timeout(1800)
def test_debian_13_set_up(tmp_path: Path) -> None:
    machine = fresh_root(tmp_path, "trixie")
    set_up(machine, CAPABILITIES)
    report(machine, "trixie (Debian 13)")
