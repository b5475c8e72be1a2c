"""What brought each package in, what trimming would save, and what changed between builds."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from imagesmith.cli import main
from imagesmith.outputs import report
from imagesmith.outputs.inventory import BOOTSTRAP, Package, attribute, read_status, removable

STATUS = """\
Package: libc6
Status: install ok installed
Priority: required
Architecture: amd64
Source: glibc (2.41-12)
Version: 2.41-12
Installed-Size: 10000
Maintainer: GNU Libc Maintainers <debian-glibc@lists.debian.org>
Description: GNU C Library
 more text

Package: bash
Essential: yes
Status: install ok installed
Architecture: amd64
Version: 5.2-1
Installed-Size: 7000
Pre-Depends: libc6 (>= 2.36)
Description: shell

Package: app
Status: install ok installed
Architecture: amd64
Version: 1.0
Installed-Size: 100
Depends: libbig | libsmall, mail-transport-agent, libc6
Description: an app

Package: libsmall
Status: install ok installed
Architecture: amd64
Version: 2
Installed-Size: 50000
Description: a library

Package: postfix
Status: install ok installed
Architecture: amd64
Version: 3
Installed-Size: 3000
Provides: mail-transport-agent
Depends: libc6
Description: mail

Package: gone
Status: deinstall ok config-files
Architecture: amd64
Version: 1
Description: removed, config files left
"""


def test_status_is_read_with_alternatives_and_virtual_packages(tmp_path: Path) -> None:
    (tmp_path / "var/lib/dpkg").mkdir(parents=True)
    (tmp_path / "var/lib/dpkg/status").write_text(STATUS)
    packages = {p.name: p for p in read_status(tmp_path)}
    assert sorted(packages) == ["app", "bash", "libc6", "libsmall", "postfix"]  # not the removed one
    libc = packages["libc6"]
    assert (libc.source, libc.source_version, libc.installed_size) == ("glibc", "2.41-12", 10000 * 1024)
    assert libc.summary == "GNU C Library" and packages["bash"].essential
    # libbig is not installed, libsmall is; the virtual mail-transport-agent is postfix
    assert packages["app"].depends == ["libsmall", "postfix", "libc6"]


def pkg(name: str, size: int, depends: list[str], essential: bool = False) -> Package:
    return Package(name, "1", "amd64", name, "1", size, "", "", "", essential, depends)


def world() -> tuple[list[Package], dict[str, str]]:
    packages = [
        pkg("libc6", 10, []),
        pkg("bash", 7, ["libc6"], essential=True),
        pkg("app", 1, ["libui", "libc6"]),
        pkg("libui", 50, ["libc6"]),
        pkg("tool", 2, ["libui"]),
        pkg("htop", 3, ["libc6"]),
        pkg("linux-image", 100, []),
    ]
    origin = {"linux-image": "device pi4", "app": "layer kiosk", "tool": "layer kiosk", "htop": "config"}
    attribute(packages, origin)
    return packages, origin


def test_attribution_and_what_removal_frees() -> None:
    packages, origin = world()
    by = {p.name: p.brought_by for p in packages}
    assert by == {"libc6": "layer kiosk", "bash": BOOTSTRAP, "app": "layer kiosk", "libui": "layer kiosk",
                  "tool": "layer kiosk", "htop": "config", "linux-image": "device pi4"}  # fmt: skip
    assert removable(packages, origin, {"app"}) == {"app"}  # libui is still needed by tool
    assert removable(packages, origin, {"app", "tool"}) == {"app", "tool", "libui"}
    assert removable(packages, origin, {"htop"}) == {"htop"}  # libc6 stays: bash needs it


def manifest(
    packages: list[Package], origin: dict[str, str], boot: int = 256, root: int = 900
) -> dict[str, Any]:
    return {
        "format": 1,
        "roots": origin,
        "packages": [p.to_json() for p in packages],
        "partitions": [{"name": "boot", "size": boot}, {"name": "root", "size": root}],
    }


def test_trim_suggests_the_biggest_saving_first() -> None:
    packages, origin = world()
    chosen, saved = report.trim(manifest(packages, origin), 40)
    assert [c.what for c in chosen] == ["layer kiosk"] and chosen[0].removes == ["app", "libui", "tool"]
    assert saved == 53
    chosen, saved = report.trim(manifest(packages, origin), 10**6)
    assert [c.what for c in chosen] == ["layer kiosk", "package htop"] and saved == 56  # never the kernel


def test_diff() -> None:
    packages, origin = world()
    newer = [replace(p, version="2") if p.name == "libc6" else p for p in packages if p.name != "htop"]
    newer.append(pkg("jq", 5, []))
    change = report.diff(manifest(packages, origin), manifest(newer, origin, root=1000))
    assert change.added == [("jq:amd64", "1")] and change.removed == [("htop:amd64", "1")]
    assert change.changed == [("libc6:amd64", "1", "2")]
    assert change.partitions == [("boot", 256, 256), ("root", 900, 1000)] and change.size_change == 2


def test_packages_and_diff_commands(tmp_path: Path) -> None:
    import json

    packages, origin = world()
    for name, data in (("a", manifest(packages, origin)), ("b", manifest(packages[:-1], origin))):
        (tmp_path / name).mkdir()
        (tmp_path / name / "manifest.json").write_text(json.dumps(data))
    listed = CliRunner().invoke(main, ["packages", str(tmp_path / "a")])
    assert listed.exit_code == 0 and listed.output.index("linux-image") < listed.output.index("libui")
    assert "7 packages" in listed.output
    trimmed = CliRunner().invoke(main, ["packages", str(tmp_path / "a"), "--trim", "40B"])
    assert trimmed.exit_code == 0 and "layer kiosk" in trimmed.output and "enough" in trimmed.output
    changed = CliRunner().invoke(main, ["diff", str(tmp_path / "a"), str(tmp_path / "b")])
    assert changed.exit_code == 0 and "- linux-image:amd64 1" in changed.output
    missing = CliRunner().invoke(main, ["packages", str(tmp_path)])
    assert missing.exit_code == 2 and "no manifest.json" in missing.output
