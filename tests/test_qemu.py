from __future__ import annotations

from pathlib import Path

import pytest

from imagesmith.boot.qemu import LOGIN, PANIC, _config_txt, _watch, guest_cmdline
from imagesmith.errors import ImagesmithError
from imagesmith.host.run import Runner


def test_guest_cmdline_replaces_consoles() -> None:
    line = "console=tty0 console=ttyS1,115200 root=PARTUUID=abcd-02 rw fsck.repair=yes rootwait"
    assert guest_cmdline(line, "ttyAMA0") == (
        "root=PARTUUID=abcd-02 rw fsck.repair=yes rootwait console=ttyAMA0,115200"
    )


def test_config_txt_names_kernel_and_initrd() -> None:
    text = "arm_64bit=1\nkernel=vmlinuz-6.12-arm64\n# c\ninitramfs initrd.img-6.12-arm64 followkernel\n"
    assert _config_txt(text) == ("vmlinuz-6.12-arm64", "initrd.img-6.12-arm64")
    assert _config_txt("") == (None, None)


def test_console_patterns() -> None:
    assert LOGIN.search(b"\r\nDebian GNU/Linux 13 pi ttyAMA0\r\n\r\npi login: ")
    assert not LOGIN.search(b"Started systemd-logind.service - User Login Management.")
    assert PANIC.search(b"[ 1.0] Kernel panic - not syncing: VFS: Unable to mount root fs\r\n")


def _fake_console(tmp_path: Path, script: str) -> list[str]:
    path = tmp_path / "fake-qemu"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)
    return [str(path)]


def test_watch_reports_a_panic_with_the_last_console_lines(tmp_path: Path) -> None:
    argv = _fake_console(
        tmp_path,
        'for i in $(seq 1 50); do echo "[ $i.0] booting line $i"; done\n'
        'echo "[ 51.0] Kernel panic - not syncing: VFS: Unable to mount root fs"\nsleep 30\n',
    )
    log = tmp_path / "console.log"
    with pytest.raises(ImagesmithError) as info:
        _watch(argv, Runner(), 20, log, None)
    exc = info.value
    assert "kernel panicked" in exc.message and exc.exit_code == 1
    assert exc.details is not None and "Unable to mount root fs" in exc.details
    assert "booting line 50" in exc.details and "booting line 1\n" not in exc.details
    assert "booting line 1" in log.read_text()


def test_watch_times_out_and_succeeds_on_login(tmp_path: Path) -> None:
    with pytest.raises(ImagesmithError, match="no login prompt within 2s"):
        _watch(_fake_console(tmp_path, "echo starting\nsleep 30\n"), Runner(), 2, None, None)
    text = _watch(
        _fake_console(tmp_path, "echo 'Debian GNU/Linux 13 pi ttyAMA0'\nprintf 'pi login: '\nsleep 30\n"),
        Runner(),
        20,
        None,
        None,
    )
    assert "pi login:" in text


def test_watch_waits_for_expected_text_past_the_login_prompt(tmp_path: Path) -> None:
    script = "printf 'pi login: '\nsleep 1\necho 'probe: ready'\nsleep 30\n"
    text = _watch(_fake_console(tmp_path, script), Runner(), 20, None, "probe: ready")
    assert text.rstrip().endswith("probe: ready")
    with pytest.raises(ImagesmithError, match="no 'probe: never' within 1s"):
        _watch(_fake_console(tmp_path, script), Runner(), 1, None, "probe: never")


def test_kvm_only_for_the_host_architecture(monkeypatch: pytest.MonkeyPatch) -> None:
    from imagesmith.boot import qemu

    monkeypatch.setattr(qemu.host, "native_arch", lambda: "amd64")
    monkeypatch.setattr(qemu.os, "access", lambda path, mode: True)
    # x86 emulation: without 5-level paging, which the guest panics seen under emulation had on
    tcg = ["-accel", "tcg", "-cpu", "max,la57=off"]
    assert qemu.accelerators("amd64") == [["-accel", "kvm", "-cpu", "host"], tcg]
    assert qemu.accelerators("arm64") == [["-accel", "tcg", "-cpu", "cortex-a72"]]
    monkeypatch.setattr(qemu.os, "access", lambda path, mode: False)
    assert qemu.accelerators("amd64") == [tcg]


def test_a_kvm_failure_is_told_apart(tmp_path: Path) -> None:
    from imagesmith.boot.qemu import KvmFailed

    script = "echo 'KVM internal error. Suberror: 1'\necho 'emulation failure'\nsleep 30\n"
    with pytest.raises(KvmFailed, match="KVM stopped"):
        _watch(_fake_console(tmp_path, script), Runner(), 20, None, None)


def test_kernel_architecture_from_its_header(tmp_path: Path) -> None:
    from imagesmith.boot.qemu import _arch_of

    arm = tmp_path / "arm"
    arm.write_bytes(b"MZ" + b"\0" * 0x36 + b"ARM\x64" + b"\0" * 0x400)
    x86 = tmp_path / "x86"
    x86.write_bytes(b"MZ" + b"\0" * 0x200 + b"HdrS" + b"\0" * 0x400)
    other = tmp_path / "other"
    other.write_bytes(b"MZ" + b"\0" * 0x400)  # a PE stub alone says nothing about the CPU
    assert _arch_of(arm) == "arm64" and _arch_of(x86) == "amd64"
    with pytest.raises(ImagesmithError, match="cannot tell"):
        _arch_of(other)


def test_kvm_that_cannot_start_a_guest_falls_back_to_tcg_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The nested-virtualisation form seen on a real host: qemu aborts before the guest runs."""
    from imagesmith.boot import qemu

    monkeypatch.setattr(qemu, "_kvm_broken", False)
    calls = tmp_path / "calls"
    argv = _fake_console(
        tmp_path,
        f'echo "$*" >> {calls}\n'
        'case "$*" in *kvm*)\n'
        '  echo "qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69"\n'
        '  echo "qemu-system-x86_64: ../../target/i386/kvm/kvm.c:3285: kvm_buf_set_msrs: Assertion '
        "\\`ret == cpu->kvm_msr_buf->nmsrs' failed.\"\n"
        "  kill -ABRT $$ ;;\n"
        "esac\n"
        "echo 'Linux version 6.12.48'\nprintf 'vm login: '\nsleep 30\n",
    )
    attempts = [["-accel", "kvm", "-cpu", "host"], ["-accel", "tcg", "-cpu", "max"]]
    text = qemu.run_guest(argv, attempts, Runner(), 20, None, None)
    assert "vm login:" in text
    err = capsys.readouterr().err
    assert err.count("KVM does not work on this host") == 1
    assert "failed to set MSR 0x10a" in err and "booting with TCG" in err
    # found out once: the next boot goes straight to TCG
    qemu.run_guest(argv, attempts, Runner(), 20, None, None)
    assert [line.split()[1] for line in calls.read_text().splitlines()] == ["kvm", "tcg", "tcg"]


def test_a_guest_that_started_under_kvm_and_failed_is_not_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from imagesmith.boot import qemu

    monkeypatch.setattr(qemu, "_kvm_broken", False)
    argv = _fake_console(tmp_path, "echo 'Linux version 6.12.48'\necho 'oops'\nexit 1\n")
    attempts = [["-accel", "kvm", "-cpu", "host"], ["-accel", "tcg", "-cpu", "max"]]
    with pytest.raises(ImagesmithError, match="qemu exited before a login prompt") as info:
        qemu.run_guest(argv, attempts, Runner(), 20, None, None)
    assert not isinstance(info.value, qemu.KvmFailed)


def test_a_panic_under_emulation_is_booted_once_more(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An emulator fault (seen with qemu 7.2 on x86) panics one boot; the image's own panic
    panics every boot, and is reported."""
    from imagesmith.boot import qemu

    monkeypatch.setattr(qemu, "_kvm_broken", False)
    runs = tmp_path / "runs"
    flaky = _fake_console(
        tmp_path,
        f'echo "run $*" >> {runs}\n'
        f'if [ "$(wc -l < {runs})" -eq 1 ]; then echo "Kernel panic - not syncing: Fatal exception"; '
        "sleep 30; fi\n"
        "echo 'Linux version 6.12.48'\nprintf 'vm login: '\nsleep 30\n",
    )
    tcg = [["-accel", "tcg", "-cpu", "max"]]
    assert "vm login:" in qemu.run_guest([*flaky, "-smp", "2", "-m", "1024"], tcg, Runner(), 20, None, None)
    assert "booting once more, on one CPU" in capsys.readouterr().err
    # the second boot has one CPU: the emulator fault seen needs two
    assert runs.read_text().splitlines() == [
        "run -accel tcg -cpu max -smp 2 -m 1024",
        "run -accel tcg -cpu max -smp 1 -m 1024",
    ]
    (tmp_path / "always").mkdir()
    always = _fake_console(
        tmp_path / "always", "echo 'Kernel panic - not syncing: VFS: Unable to mount root fs'\nsleep 30\n"
    )
    with pytest.raises(qemu.Panicked, match="kernel panicked"):
        qemu.run_guest(always, tcg, Runner(), 20, None, None)
    # under KVM the emulator is not in the way: a panic is the image's at once
    runs.unlink()
    with pytest.raises(qemu.Panicked):
        qemu.run_guest(flaky, [["-accel", "kvm", "-cpu", "host"]], Runner(), 20, None, None)
    assert runs.read_text().count("run") == 1
