from __future__ import annotations

import errno
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from imagesmith.cli import main

Write = Callable[[str, str], Path]


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def test_bad_config_is_one_located_line_and_a_hint_exit_2(write: Write) -> None:
    path = write("img.yaml", "name: x\ndevice: pi44\n")
    code, out = invoke("build", str(path))
    assert code == 2
    assert f"error: {path}:2:9: unknown device 'pi44'" in out
    assert "hint: did you mean 'pi4'?" in out
    assert "Traceback" not in out


def test_yaml_syntax_error_exit_2_no_traceback(write: Write) -> None:
    path = write("img.yaml", "name: [x\n")
    code, out = invoke("build", str(path))
    assert code == 2 and "YAML syntax error" in out and "Traceback" not in out


def test_missing_config_file_exit_2(tmp_path: Path) -> None:
    code, out = invoke("build", str(tmp_path / "none.yaml"))
    assert code == 2 and "file not found" in out


def test_boot_of_missing_image_is_an_error(tmp_path: Path) -> None:
    code, out = invoke("boot", str(tmp_path / "none.img"))
    assert code == 2 and "no such image" in out


def test_devices_lists_the_catalog_with_limits() -> None:
    code, out = invoke("devices")
    assert code == 0
    for name in ("pi3", "pi4", "pi5", "zero2w", "cm4", "cm5", "qemu-arm64", "qemu-amd64"):
        assert name in out
    assert "RP1" in out  # pi5/cm5 say what Debian's kernel lacks


def test_help_lists_commands() -> None:
    code, out = invoke("--help")
    assert code == 0 and "build" in out and "boot" in out


def test_a_full_disk_is_told_plainly_not_as_an_internal_error(capsys: pytest.CaptureFixture[str]) -> None:
    from imagesmith.cli.app import handled

    @handled
    def writes() -> None:
        raise OSError(errno.ENOSPC, "No space left on device", "/srv/out/image.img")

    with pytest.raises(SystemExit) as stopped:
        writes()
    said = capsys.readouterr()
    text = said.out + said.err
    assert stopped.value.code == 1 and "internal error" not in text
    assert (
        "no space left on a disk the build writes to (/srv/out/image.img)" in text and "--cache-dir" in text
    )
