from __future__ import annotations

import os
from pathlib import Path

from imagesmith.repro import reproducible

EPOCH = 1_700_000_000


def test_times_clamped_and_directories_set_to_the_epoch(tmp_path: Path) -> None:
    (tmp_path / "d" / "e").mkdir(parents=True)
    old, new = tmp_path / "d" / "old", tmp_path / "d" / "e" / "new"
    old.write_text("x")
    new.write_text("y")
    os.utime(old, (EPOCH - 100, EPOCH - 1000))
    os.utime(new, (EPOCH + 5, EPOCH + 50))
    os.symlink("/nonexistent", tmp_path / "d" / "link")  # a dangling link is not followed
    os.utime(tmp_path / "d", (EPOCH - 9999, EPOCH - 9999))
    reproducible.clamp_times(tmp_path, EPOCH)
    assert (old.stat().st_mtime, old.stat().st_atime) == (EPOCH - 1000, EPOCH - 1000)
    assert (new.stat().st_mtime, new.stat().st_atime) == (EPOCH, EPOCH)
    for directory in (tmp_path, tmp_path / "d", tmp_path / "d" / "e"):
        assert directory.stat().st_mtime == EPOCH
    assert (tmp_path / "d" / "link").lstat().st_mtime <= EPOCH


def test_password_change_dates_clamped_to_the_epoch_day(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    day = EPOCH // 86400
    (etc / "shadow").write_text(
        f"root:*:{day + 80}:0:99999:7:::\nold:*:{day - 3}:0:99999:7:::\nnew:!*::::::\n"
    )
    os.chmod(etc / "shadow", 0o640)
    reproducible.clamp_shadow(tmp_path, EPOCH)
    assert (
        etc / "shadow"
    ).read_text() == f"root:*:{day}:0:99999:7:::\nold:*:{day - 3}:0:99999:7:::\nnew:!*::::::\n"
    assert (etc / "shadow").stat().st_mode & 0o777 == 0o640
