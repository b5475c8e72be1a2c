from __future__ import annotations

from imagesmith.qemu import LOGIN, PANIC, _config_txt, guest_cmdline


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
