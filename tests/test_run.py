from __future__ import annotations

from pathlib import Path

import pytest

from imagesmith.errors import ImagesmithError
from imagesmith.host import diagnose
from imagesmith.host.run import Runner, format_duration


def test_failure_names_the_command_and_keeps_the_last_lines(tmp_path: Path) -> None:
    runner = Runner(log_path=tmp_path / "build.log")
    with pytest.raises(ImagesmithError) as info:
        runner.run(["sh", "-c", "for i in $(seq 1 40); do echo line$i; done; exit 3"], hint="look")
    runner.close()
    exc = info.value
    assert exc.message == "sh failed with exit code 3"  # the command line is in the log, not here
    assert exc.details is not None
    lines = exc.details.splitlines()
    assert lines[-1] == "line40" and "line1" not in lines and len(lines) == 25
    assert exc.hint == f"look; its whole output and command line are in {tmp_path / 'build.log'}"
    log = (tmp_path / "build.log").read_text()
    assert "line1\n" in log and "[exit 3" in log and "$ sh -c 'for i in" in log


def test_capture_returns_stdout_only(tmp_path: Path) -> None:
    runner = Runner()
    assert runner.run(["sh", "-c", "echo out; echo err >&2"], capture=True) == "out\n"


def test_missing_program_is_a_clear_error() -> None:
    with pytest.raises(ImagesmithError, match="command not found: no-such-tool-xyz"):
        Runner().run(["no-such-tool-xyz"])


def test_a_missing_host_tool_names_its_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ImagesmithError) as info:
        Runner().run(["qemu-img", "create"])
    assert info.value.hint is not None
    assert "qemu-img is in the Debian package qemu-utils" in info.value.hint
    assert "apt-get install --no-install-recommends qemu-utils" in info.value.hint


def test_an_explained_failure_shows_the_tool_s_own_lines_and_hint(tmp_path: Path) -> None:
    runner = Runner(log_path=tmp_path / "build.log")
    script = "echo I: setting up; echo 'E: install arch-test for foreign architecture support'; exit 1"
    with pytest.raises(ImagesmithError) as info:
        runner.run(["sh", "-c", script], name="mmdebstrap", explain=diagnose.apt)
    runner.close()
    exc = info.value
    assert exc.message == "mmdebstrap failed with exit code 1"
    assert exc.details == "E: install arch-test for foreign architecture support"
    assert exc.hint is not None and "the Debian package arch-test" in exc.hint


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


def test_a_full_disk_is_said_whatever_the_tool_and_its_explainer(tmp_path: Path) -> None:
    script = "echo writing; echo 'cp: error writing out/x: No space left on device'; echo 'E: later'; exit 1"
    with pytest.raises(ImagesmithError) as info:
        Runner().run(["sh", "-c", script], explain=diagnose.apt)
    exc = info.value
    assert exc.details == "cp: error writing out/x: No space left on device"
    assert exc.hint == diagnose.NO_SPACE_HINT
    out = tmp_path / "inner.log"
    with pytest.raises(ImagesmithError) as together:
        Runner().run_together([(["sh", "-c", script], out)], hint="see both logs")
    assert together.value.hint == diagnose.NO_SPACE_HINT


def test_a_command_alongside_runs_while_the_body_runs_and_is_logged(tmp_path: Path) -> None:
    import time

    runner = Runner(log_path=tmp_path / "log")
    started = time.monotonic()
    with runner.alongside(["sh", "-c", "sleep 1; echo from the side"], tmp_path / "side.out"):
        runner.run(["sh", "-c", "sleep 1; echo in front"])
    assert time.monotonic() - started < 1.9, "at the same time, not one after the other"
    log = (tmp_path / "log").read_text()
    assert "from the side" in log and "in front" in log


def test_a_command_alongside_that_fails_fails_the_step(tmp_path: Path) -> None:
    runner = Runner(log_path=tmp_path / "log")
    side = runner.alongside(["sh", "-c", "echo broken mirror; exit 3"], tmp_path / "side.out", name="tools")
    with pytest.raises(ImagesmithError, match="tools failed with exit code 3") as raised, side:
        pass
    assert "broken mirror" in (raised.value.details or "")


def test_a_body_that_fails_stops_the_command_alongside(tmp_path: Path) -> None:
    import time

    runner = Runner(log_path=tmp_path / "log")
    started = time.monotonic()
    with (
        pytest.raises(ImagesmithError, match="front"),
        runner.alongside(["sleep", "30"], tmp_path / "side.out"),
    ):
        raise ImagesmithError("front failed")
    assert time.monotonic() - started < 5


def test_a_command_started_ahead_gets_its_input_later_and_is_logged(tmp_path: Path) -> None:
    runner = Runner(log_path=tmp_path / "log")
    ahead = runner.start(["sh", "-c", "echo loaded; read word; echo got $word; exit 1"], name="checker")
    assert runner.started == [ahead]
    code, lines = ahead.finish("secret-free\n")
    assert (code, lines) == (1, ["loaded", "got secret-free"])
    assert runner.started == []
    runner.close()
    log = (tmp_path / "log").read_text()
    assert "checker's output (started ahead)" in log and "got secret-free" in log and "[exit 1 after" in log


def test_a_command_started_ahead_and_never_fed_stops_with_the_runner(tmp_path: Path) -> None:
    runner = Runner(log_path=tmp_path / "log")
    ahead = runner.start(["sleep", "30"])
    runner.close()
    assert ahead.proc.returncode is not None and runner.started == []
