"""The catalog's layers built together on a native target, checked in the image and booted."""

from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path

import pytest

from .conftest import Built, build, imagesmith

pytestmark = pytest.mark.slow
DATA = Path(__file__).parent / "data" / "catalog"
SSID = 'Büro "5G"; 2'
PASSPHRASE = (DATA / "secrets" / "wifi.psk").read_text().strip()


@pytest.fixture(scope="module")
def vm(tmp_path_factory: pytest.TempPathFactory) -> Built:
    return build(DATA / "image.yaml", tmp_path_factory.mktemp("catalog") / "out")


@pytest.fixture(scope="module")
def console(vm: Built, tmp_path_factory: pytest.TempPathFactory) -> str:
    log = tmp_path_factory.mktemp("console") / "console.log"
    imagesmith(
        "boot", str(vm.image), "--timeout", "600", "--expect", "probe: done", "--console-log", str(log)
    )
    return log.read_text(errors="replace")


def probe(console: str, name: str) -> str:
    found = re.findall(rf"probe: {re.escape(name)}=([^\r\n]*)", console)
    assert found, f"no probe line for {name}"
    return found[-1].strip()


def mode_of(vm: Built, path: str) -> int:
    return int(re.search(r"Mode:\s+(\d+)", vm.debugfs(f"stat {path}")).group(1), 8)  # type: ignore[union-attr]


def test_wifi_files_hold_the_derived_key_only(vm: Built, tmp_path: Path) -> None:
    key = hashlib.pbkdf2_hmac("sha1", PASSPHRASE.encode(), SSID.encode(), 4096, 32).hex()
    wpa = vm.cat("/etc/wpa_supplicant/wpa_supplicant-wlan0.conf")
    assert f"psk={key}" in wpa and f"ssid={SSID.encode().hex()}" in wpa and "country=CH" in wpa
    nm = vm.cat("/etc/NetworkManager/system-connections/imagesmith-wifi.nmconnection")
    assert f"psk={key}" in nm and "ssid=" + ";".join(str(b) for b in SSID.encode()) + ";" in nm
    for path in (
        "/etc/wpa_supplicant/wpa_supplicant-wlan0.conf",
        "/etc/NetworkManager/system-connections/imagesmith-wifi.nmconnection",
    ):
        assert mode_of(vm, path) == 0o600, path
    # the passphrase itself is nowhere in /etc, nor in the build log
    subprocess.run(["debugfs", "-R", f"rdump /etc {tmp_path}", vm.root()], check=True, capture_output=True)
    leaked = subprocess.run(["grep", "-rlF", PASSPHRASE, str(tmp_path)], capture_output=True, text=True)
    assert leaked.stdout == ""
    assert PASSPHRASE not in (vm.output / "build.log").read_text()
    # the regulatory domain reaches the kernel; wpa_supplicant starts when wlan0 appears
    assert "cfg80211.ieee80211_regdom=CH" in vm.boot_file("cmdline.txt")
    wants = vm.debugfs("ls /etc/systemd/system/sys-subsystem-net-devices-wlan0.device.wants")
    assert "wpa_supplicant@wlan0.service" in wants


def test_config_show_masks_the_passphrase() -> None:
    shown = imagesmith("config", "show", str(DATA / "image.yaml")).stdout
    assert PASSPHRASE not in shown and "wifi_psk: <secret>" in shown
    explain = imagesmith("config", "explain", str(DATA / "image.yaml"), "files[3].content").stdout
    assert "<secret>" in explain and "psk=" not in explain


def test_time_servers_and_debug_settings(vm: Built) -> None:
    sources = vm.cat("/etc/chrony/sources.d/imagesmith.sources")
    assert "server 192.0.2.10 iburst\nserver 192.0.2.11 iburst\n" in sources
    assert "Storage=persistent" in vm.cat("/etc/systemd/journald.conf.d/50-imagesmith-debug.conf")
    status = vm.cat("/var/lib/dpkg/status")
    for package in ("network-manager", "chrony", "avahi-daemon", "libnss-mdns", "strace", "tcpdump"):
        assert f"Package: {package}\nStatus: install ok installed" in status, package
    assert "Package: systemd-timesyncd\nStatus: install ok installed" not in status


def test_sudo_user(vm: Built) -> None:
    assert re.search(r"^ops:[^:]*:\d+:\d+::/home/ops:/bin/bash$", vm.cat("/etc/passwd"), re.M)
    assert re.search(r"^ops:\*:", vm.cat("/etc/shadow"), re.M), "no password: locked"
    assert "AAAAC3NzaC1lZDI1NTE5AAAAIPq3l4me" in vm.cat("/home/ops/.ssh/authorized_keys")
    assert "ops ALL=(ALL) NOPASSWD:ALL" in vm.cat("/etc/sudoers.d/90-imagesmith-ops")
    groups = vm.cat("/etc/group")
    for group in ("sudo", "adm", "systemd-journal"):
        assert re.search(rf"^{group}:[^:]*:\d+:.*\bops\b", groups, re.M), group


def test_services_run_on_the_booted_device(vm: Built, console: str) -> None:
    # systemd's first boot enables no unit the build did not (Debian's presets would)
    assert "disable *" in vm.cat("/etc/systemd/system-preset/00-imagesmith.preset")
    for unit in ("NetworkManager", "chrony", "avahi-daemon", "ssh"):
        assert probe(console, unit) == "active", unit
    # NetworkManager runs the network: networkd and the wpa_supplicant@wlan0 unit stay out
    assert probe(console, "systemd-networkd") == "inactive"
    assert probe(console, "wpa_supplicant@wlan0") == "inactive"
    assert probe(console, "nm") == "connected"
    assert "imagesmith-wifi" in probe(console, "nm-connections")  # NM accepted the keyfile
    assert probe(console, "chrony-sources").split() == ["192.0.2.10", "192.0.2.11"]
    assert probe(console, "mdns").startswith("10.0.2."), "catalog.local resolves via Avahi"
    assert probe(console, "sudo") == "1"
    assert probe(console, "journal") != "0", "the journal is on /var/log/journal"
