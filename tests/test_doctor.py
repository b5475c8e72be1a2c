"""Each doctor check with made-up host facts: what it says, and the exact fix."""

from __future__ import annotations

from dataclasses import replace

import pytest
from click.testing import CliRunner

from imagesmith.cli import main
from imagesmith.host import doctor, requirements
from imagesmith.host.userns import Range

ALL = {req.package: "9" for req in requirements.REQUIREMENTS}
GOOD = doctor.Facts(
    euid=0,
    user="builder",
    native="amd64",
    packages={**ALL, "mmdebstrap": "1.3.5-7", "e2fsprogs": "1.47.2-3", "util-linux": "2.41-5"},
    binfmt_mounted=True,
    binfmt={"arm64": True},
    subuid={"builder": [Range(100000, 65536)]},
    subgid={"builder": [Range(100000, 65536)]},
    sysctl={"kernel.unprivileged_userns_clone": None, "user.max_user_namespaces": 1000},
    newuidmap_setuid=True,
)


def failing(facts: doctor.Facts, arches: tuple[str, ...] = ("arm64",)) -> dict[str, doctor.Check]:
    return {c.name: c for c in doctor.checks(facts, list(arches)) if not c.ok}


def test_a_ready_host_passes_every_check() -> None:
    assert failing(GOOD) == {}
    names = [c.name for c in doctor.checks(GOOD, ["arm64"])]
    assert "/etc/subuid range for builder" in names and "arm64 programs (binfmt_misc)" in names


def test_missing_packages_are_named_with_the_install_command() -> None:
    packages = {k: v for k, v in GOOD.packages.items() if k not in ("mtools", "uidmap", "qemu-user-static")}
    found = failing(replace(GOOD, packages=packages))
    check = found["host packages"]
    assert check.detail == "missing: mtools qemu-user-static uidmap"
    assert check.fix == [
        ["apt-get", "install", "-y", "--no-install-recommends", "mtools", "qemu-user-static", "uidmap"]
    ]


def test_qemu_and_uidmap_are_only_needed_when_used() -> None:
    packages = {
        k: v
        for k, v in GOOD.packages.items()
        if k not in ("uidmap", "qemu-user-static", "binfmt-support", "arch-test", "qemu-system-arm")
    }
    as_root = replace(GOOD, user="root", packages=packages)
    assert failing(as_root, ("amd64",)) == {}


def test_a_foreign_build_needs_arch_test() -> None:
    packages = {k: v for k, v in GOOD.packages.items() if k != "arch-test"}
    check = failing(replace(GOOD, packages=packages))["host packages"]
    assert check.detail == "missing: arch-test"


def test_booting_needs_the_emulator_of_the_image_s_architecture() -> None:
    packages = {k: v for k, v in GOOD.packages.items() if not k.startswith("qemu-")}
    facts = replace(GOOD, packages=packages)
    check = {c.name: c for c in doctor.checks(facts, ["arm64"], ("boot",)) if not c.ok}["host packages"]
    assert check.detail == "missing: qemu-utils qemu-system-arm"
    # booting alone needs no build tools, no subordinate ids and no binfmt
    bare = replace(GOOD, packages=dict.fromkeys(["qemu-utils", "qemu-system-x86", "fdisk", "mtools"], "9"),
                   subuid={}, binfmt={})  # fmt: skip
    assert [c for c in doctor.checks(bare, ["amd64"], ("boot",)) if not c.ok] == []


def test_the_test_suite_needs_everything() -> None:
    wanted = requirements.packages(["test"], ["arm64"], "amd64")
    assert set(wanted) == {req.package for req in requirements.REQUIREMENTS}


def test_binfmt_not_enabled_or_not_mounted() -> None:
    check = failing(replace(GOOD, binfmt={"arm64": False}))["arm64 programs (binfmt_misc)"]
    assert check.fix == [["update-binfmts", "--enable", "qemu-aarch64"]]
    check = failing(replace(GOOD, binfmt_mounted=False, binfmt={}))["arm64 programs (binfmt_misc)"]
    assert check.fix[0] == ["mount", "-t", "binfmt_misc", "binfmt_misc", "/proc/sys/fs/binfmt_misc"]


def test_subordinate_ranges_missing_or_too_small_get_a_free_range() -> None:
    facts = replace(
        GOOD,
        subuid={"other": [Range(100000, 65536)], "builder": [Range(300000, 1000)]},
        subgid={"other": [Range(165536, 65536)]},
    )
    found = failing(facts)
    assert found["/etc/subuid range for builder"].fix == [
        ["usermod", "--add-subuids", "301000-366535", "builder"]
    ]
    assert found["/etc/subgid range for builder"].fix == [
        ["usermod", "--add-subgids", "301000-366535", "builder"]
    ]
    assert "no range of 65536 ids for builder" in found["/etc/subuid range for builder"].detail


def test_root_builds_need_no_subordinate_ids() -> None:
    assert failing(replace(GOOD, user="root", subuid={}, subgid={}, newuidmap_setuid=False)) == {}


@pytest.mark.parametrize(
    ("name", "value", "fixed"),
    [
        ("kernel.unprivileged_userns_clone", 0, 1),
        ("user.max_user_namespaces", 0, 10000),
        ("kernel.apparmor_restrict_unprivileged_userns", 1, 0),
    ],
)
def test_user_namespaces_disabled_by_sysctl(name: str, value: int, fixed: int) -> None:
    check = failing(replace(GOOD, sysctl={**GOOD.sysctl, name: value}))[f"user namespaces ({name})"]
    assert "disabled" in check.detail
    assert check.fix[0] == ["sysctl", "-w", f"{name}={fixed}"]
    assert doctor.SYSCTL_FILE in check.fix[1][2]


def test_newuidmap_without_setuid() -> None:
    check = failing(replace(GOOD, newuidmap_setuid=False))["newuidmap and newgidmap"]
    assert check.fix == [["apt-get", "install", "-y", "--reinstall", "uidmap"]]


def test_too_old_tools_are_named_with_what_they_lack() -> None:
    facts = replace(GOOD, packages={**GOOD.packages, "mmdebstrap": "0.8.4-1", "e2fsprogs": "1.44.5-1"})
    found = failing(facts)
    assert "0.8.4-1 is older than 1.0.0" in found["mmdebstrap version"].detail
    assert "root_owner" in found["e2fsprogs version"].detail
    assert found["e2fsprogs version"].fix == [["apt-get", "install", "-y", "--only-upgrade", "e2fsprogs"]]


def test_mke2fs_without_tarball_input_is_a_note_not_a_failure() -> None:
    facts = replace(GOOD, packages={**GOOD.packages, "e2fsprogs": "1.47.0-2"})
    notes = {c.name: c for c in doctor.checks(facts, ["arm64"])}
    assert notes["mke2fs tarball input"].ok and "not needed" in notes["mke2fs tarball input"].detail


def test_doctor_command_for_an_unknown_user_is_a_config_error() -> None:
    result = CliRunner().invoke(main, ["doctor", "--user", "no-such-user-here"])
    assert result.exit_code == 2
    assert "no user 'no-such-user-here'" in result.output


def test_binfmt_is_registered_through_systemd_binfmt_where_qemu_ships_only_that() -> None:
    check = failing(replace(GOOD, binfmt={"arm64": False}, binfmt_d={"arm64"}))[
        "arm64 programs (binfmt_misc)"
    ]
    assert check.fix == [["/usr/lib/systemd/systemd-binfmt", "/usr/lib/binfmt.d/qemu-aarch64.conf"]]
