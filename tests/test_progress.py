"""Progress read from what the tools really print, and shown while a command runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from imagesmith.host import progress, run
from imagesmith.host.run import Runner

MMDEBSTRAP = (Path(__file__).parent / "data" / "progress" / "mmdebstrap-verbose.txt").read_text().splitlines()


def fed(reader: progress.Apt, lines: list[str]) -> str:
    for line in lines:
        reader.feed(line)
    return reader.summary()


def test_mmdebstrap_phases_and_packages_counted_against_apt_s_total() -> None:
    reader = progress.Apt()
    assert fed(reader, MMDEBSTRAP[:3]) == "running apt-get update"  # index downloads are not packages
    at_download = MMDEBSTRAP.index("I: downloading packages with apt...")
    first_get = next(i for i, line in enumerate(MMDEBSTRAP) if line.startswith("Get:1 ") and "gcc" in line)
    assert fed(reader, MMDEBSTRAP[at_download : first_get + 2]) == (
        "downloading packages with apt: downloading 2/69 (libc6)"
    )
    unpacked = MMDEBSTRAP.index("Unpacking libc6:amd64 (2.41-12+deb13u5) ...")
    assert fed(reader, MMDEBSTRAP[first_get + 2 : unpacked + 1]) == (
        "installing essential packages: unpacking 2/69 (libc6)"
    )
    first_setup = next(i for i, line in enumerate(MMDEBSTRAP) if line.startswith("Setting up"))
    assert fed(reader, MMDEBSTRAP[unpacked + 1 : first_setup + 1]) == (
        "installing essential packages: setting up 1/69 (gcc-14-base)"
    )
    # the second apt run counts from zero against its own total
    assert fed(reader, MMDEBSTRAP[first_setup + 1 :]) == "installing remaining packages inside the chroot"
    assert reader.total == 3 and reader.set_up == 0


def test_kernel_hooks_name_the_hook_that_runs() -> None:
    reader = progress.Steps("kernel 6.12.48: postinst hooks")
    assert reader.summary() == "kernel 6.12.48: postinst hooks"
    reader.feed("run-parts: executing /etc/kernel/postinst.d/initramfs-tools 6.12.48 /boot/vmlinuz-6.12.48")
    assert reader.summary() == "kernel 6.12.48: postinst hooks: initramfs-tools"


def test_progress_lines_every_few_seconds_when_not_on_a_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(run, "PROGRESS_EVERY", 0.3)
    runner = Runner(log_path=tmp_path / "build.log")
    script = "echo '0 upgraded, 2 newly installed, 0 to remove'; echo 'Unpacking jq (1.7) ...'; sleep 1.5"
    with runner.stage("bootstrap"):
        runner.run(["sh", "-c", script], progress=progress.Apt())
    runner.close()
    err = capsys.readouterr().err
    assert "… starting: unpacking 1/2 (jq) [" in err
    assert "progress: starting: unpacking 1/2 (jq)" in (tmp_path / "build.log").read_text()
