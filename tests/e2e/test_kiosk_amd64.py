"""The kiosk layer (with networkd and timesyncd) on a native target: built, booted, page rendered."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .conftest import Built, build, imagesmith

pytestmark = pytest.mark.slow
DATA = Path(__file__).parent / "data" / "kiosk"


@pytest.fixture(scope="module")
def vm(tmp_path_factory: pytest.TempPathFactory) -> Built:
    return build(DATA / "image.yaml", tmp_path_factory.mktemp("kiosk") / "out")


def probe(console: str, name: str) -> str:
    found = re.findall(rf"probe: {re.escape(name)}=([^\r\n]*)", console)
    assert found, f"no probe line for {name}"
    return found[-1].strip()


def test_kiosk_unit_and_user(vm: Built) -> None:
    unit = vm.cat("/etc/systemd/system/imagesmith-kiosk.service")
    # the URL's % is escaped for systemd, which would read %2 as a specifier
    assert "--kiosk" in unit and "http://127.0.0.1:8000/index.html?from=kiosk%%20test" in unit
    assert "User=kiosk" in unit and "PAMName=imagesmith-kiosk" in unit
    assert "imagesmith-kiosk.service" in vm.debugfs("ls /etc/systemd/system/graphical.target.wants")
    assert re.search(r"^kiosk:\*:", vm.cat("/etc/shadow"), re.M), "the kiosk user has no password"
    assert "pam_systemd.so" in vm.cat("/etc/pam.d/common-session")
    assert "NTP=192.0.2.10" in vm.cat("/etc/systemd/timesyncd.conf.d/50-imagesmith.conf")


def test_browser_renders_the_page_at_boot(vm: Built, tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    imagesmith(
        "boot", str(vm.image), "--timeout", "900", "--expect", "probe: done", "--console-log", str(log)
    )
    console = log.read_text(errors="replace")
    assert probe(console, "imagesmith-kiosk") == "active"
    assert probe(console, "getty@tty1") == "inactive", "the kiosk took tty1 over"
    assert int(probe(console, "rendered")) >= 1, "the page's script ran in the browser"
    assert int(probe(console, "chromium")) >= 1 and probe(console, "cage") == "1"
    assert probe(console, "logind-user") in ("active", "online"), "logind knows the kiosk user's session"
    assert probe(console, "wayland") == "1"
    assert probe(console, "systemd-timesyncd") == "active"
    assert probe(console, "timesyncd-servers") == "NTP=192.0.2.10"
