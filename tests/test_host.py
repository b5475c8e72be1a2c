from __future__ import annotations

from pathlib import Path

import pytest

from imagesmith.errors import ImagesmithError
from imagesmith.host import binfmt as host


def test_native_arch_needs_no_binfmt(tmp_path: Path) -> None:
    host.require_arch(host.native_arch(), tmp_path)


def test_enabled_binfmt_entry_passes(tmp_path: Path) -> None:
    (tmp_path / "status").write_text("enabled\n")
    (tmp_path / "qemu-aarch64").write_text("enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\n")
    host.require_arch("arm64", tmp_path)


def test_disabled_binfmt_says_how_to_enable_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "status").write_text("enabled\n")
    (tmp_path / "qemu-aarch64").write_text("disabled\n")
    monkeypatch.setattr(host, "systemd_binfmt", lambda arch: None)  # Debian 12 without systemd-binfmt
    with pytest.raises(ImagesmithError) as info:
        host.require_arch("arm64", tmp_path)
    assert "qemu-aarch64" in info.value.message
    assert "update-binfmts --enable qemu-aarch64" in (info.value.hint or "")
    assert "mount -t binfmt_misc" not in (info.value.hint or "")
    # where qemu ships a binfmt.d file (Debian 13: only that), systemd-binfmt loads it
    monkeypatch.setattr(host, "systemd_binfmt", lambda arch: Path("/usr/lib/binfmt.d/qemu-aarch64.conf"))
    with pytest.raises(ImagesmithError) as info:
        host.require_arch("arm64", tmp_path)
    assert "/usr/lib/systemd/systemd-binfmt /usr/lib/binfmt.d/qemu-aarch64.conf" in (info.value.hint or "")


def test_unmounted_binfmt_says_to_mount_it(tmp_path: Path) -> None:
    with pytest.raises(ImagesmithError) as info:
        host.require_arch("arm64", tmp_path / "missing")
    assert "mount -t binfmt_misc" in (info.value.hint or "")
