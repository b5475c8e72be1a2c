from __future__ import annotations

from pathlib import Path

import pytest

from imagesmith.errors import ImagesmithError
from imagesmith.run import Runner, format_duration


def test_failure_names_the_command_and_keeps_the_last_lines(tmp_path: Path) -> None:
    runner = Runner(log_path=tmp_path / "build.log")
    with pytest.raises(ImagesmithError) as info:
        runner.run(["sh", "-c", "for i in $(seq 1 40); do echo line$i; done; exit 3"], hint="look")
    runner.close()
    exc = info.value
    assert "exit code 3" in exc.message and "sh -c" in exc.message
    assert exc.details is not None
    lines = exc.details.splitlines()
    assert lines[-1] == "line40" and "line1" not in lines and len(lines) == 25
    assert exc.hint == "look"
    log = (tmp_path / "build.log").read_text()
    assert "line1\n" in log and "[exit 3" in log


def test_capture_returns_stdout_only(tmp_path: Path) -> None:
    runner = Runner()
    assert runner.run(["sh", "-c", "echo out; echo err >&2"], capture=True) == "out\n"


def test_missing_program_is_a_clear_error() -> None:
    with pytest.raises(ImagesmithError, match="command not found: no-such-tool-xyz"):
        Runner().run(["no-such-tool-xyz"])


def test_input_is_passed_but_not_logged(tmp_path: Path) -> None:
    runner = Runner(log_path=tmp_path / "log")
    assert runner.run(["cat"], input="private\n", capture=True) == "private\n"
    runner.close()
    assert "private" not in (tmp_path / "log").read_text()


def test_stage_records_timing(tmp_path: Path) -> None:
    runner = Runner(log_path=tmp_path / "log")
    with runner.stage("demo"):
        pass
    with pytest.raises(RuntimeError), runner.stage("broken"):
        raise RuntimeError("x")
    runner.close()
    assert [name for name, _ in runner.timings] == ["demo", "broken"]
    assert "<== broken FAILED" in (tmp_path / "log").read_text()


def test_format_duration() -> None:
    assert format_duration(3.21) == "3.2s"
    assert format_duration(125) == "2m05s"


def test_log_has_no_markup_and_tool_output_is_not_read_as_markup(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runner = Runner(verbose=True, log_path=tmp_path / "log")
    runner.info("[green]done[/green] in 3s")
    runner.detail("console: [  OK  ] Started [bold]x[/bold]")  # a console line, shown as it is
    runner.close()
    log = (tmp_path / "log").read_text()
    assert "done in 3s\n" in log and "[green]" not in log
    assert "[  OK  ] Started [bold]x[/bold]" in capsys.readouterr().err
