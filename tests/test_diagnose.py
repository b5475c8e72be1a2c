"""Each cause of a failed bootstrap, read from the text mmdebstrap and apt really print."""

from __future__ import annotations

from pathlib import Path

from imagesmith.host import diagnose

DATA = Path(__file__).parent / "data" / "diagnose"


def explain(name: str) -> diagnose.Explanation:
    found = diagnose.apt((DATA / name).read_text().splitlines(), "http://deb.debian.org/debian", "trixie")
    assert found is not None
    return found


def test_a_missing_arch_test_names_the_package_to_install() -> None:
    found = explain("arch-test.txt")
    assert found.lines == ["E: install arch-test for foreign architecture support"]
    assert "apt-get install --no-install-recommends arch-test" in found.hint
    assert "mirror" not in found.hint and "package names" not in found.hint


def test_an_unknown_package_is_named_without_the_command_line() -> None:
    found = explain("unknown-package.txt")
    assert found.lines == ["E: Unable to locate package nosuchpkg-xyz"]
    assert found.hint.startswith("no package named nosuchpkg-xyz in trixie on http://deb.debian.org/debian")


def test_unmet_dependencies_show_apt_s_lines() -> None:
    found = explain("unmet-dependencies.txt")
    assert found.lines[0] == "The following packages have unmet dependencies:"
    assert " systemd-sysv : Conflicts: sysvinit-core but 3.14-4 is to be installed" in found.lines
    assert not any("setup failed" in line for line in found.lines)
    assert "cannot be installed together" in found.hint


def test_an_unreachable_mirror() -> None:
    found = explain("unreachable-mirror.txt")
    assert any("Connection refused" in line for line in found.lines)
    assert "cannot be reached" in found.hint and "distribution.mirror" in found.hint


def test_a_suite_the_mirror_does_not_have() -> None:
    found = explain("no-suite.txt")
    assert found.lines == ["E: The repository 'http://deb.debian.org/debian nosuchsuite Release' does not "
                           "have a Release file."]  # fmt: skip
    assert "distribution.suite" in found.hint


def test_other_errors_are_shown_without_mmdebstrap_s_wrappers() -> None:
    lines = ["I: x", "E: something new went wrong", "E: setup failed: E: apt-get -o A=1 … failed",
             "E: mmdebstrap failed to run"]  # fmt: skip
    found = diagnose.apt(lines)
    assert found is not None and found.lines == ["E: something new went wrong"]
    assert diagnose.apt(["no errors here"]) is None


def test_a_script_s_missing_command_names_its_package() -> None:
    found = diagnose.shell(["+ mkfs.vfat -n BOOT x", "sh: 1: mkfs.vfat: not found"])
    assert found is not None and "the Debian package dosfstools" in found.hint
    assert diagnose.shell(["all fine"]) is None


def test_a_tool_the_wrapper_cannot_start_names_its_package() -> None:
    found = diagnose.apt(["unshare: failed to execute mmdebstrap: No such file or directory"])
    assert found is not None and found.lines == [
        "unshare: failed to execute mmdebstrap: No such file or directory"
    ]
    assert "mmdebstrap is in the Debian package mmdebstrap" in found.hint


def test_an_extra_source_signed_by_another_key_is_named() -> None:
    from imagesmith.host.diagnose import apt

    lines = [
        "W: GPG error: file:/srv/vendor trixie InRelease: The following signatures couldn't be verified "
        "because the public key is not available: NO_PUBKEY 0123456789ABCDEF",
        "E: The repository 'file:/srv/vendor trixie InRelease' is not signed.",
    ]
    found = apt(lines, "http://deb.debian.org/debian", "trixie", [("vendor", "file:///srv/vendor")])
    assert found is not None and "extra source 'vendor'" in found.hint
    debian = apt(lines, "http://deb.debian.org/debian", "trixie", [("other", "https://apt.example.com")])
    assert debian is not None and "debian-archive-keyring" in debian.hint
    copied = [line.replace("file:", "copy:") for line in lines]  # how the bootstrap reads file:// archives
    found = apt(copied, "http://deb.debian.org/debian", "trixie", [("vendor", "file:///srv/vendor")])
    assert found is not None and "extra source 'vendor'" in found.hint
