"""Several builds in one command: the pool, the display, and what stops them before they start."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from imagesmith.build import many
from imagesmith.errors import ImagesmithError
from imagesmith.host.run import Runner
from tests.test_cli import invoke

Write = Callable[[str, str], Path]


def job(tmp_path: Path, name: str, script: str) -> many.Job:
    return many.Job(name, tmp_path / f"{name}.yaml", tmp_path / "out" / name, ["sh", "-c", script])


def test_at_most_j_builds_run_at_once_and_each_is_shown(tmp_path: Path, runner: Runner) -> None:
    record = tmp_path / "record"
    step = f"echo start >> {record}; echo '▶ bootstrap: debian'; sleep 0.5; echo end >> {record}"
    many.run(runner, [job(tmp_path, n, step) for n in ("a", "b", "c")], 2)
    running, most = 0, 0
    for line in record.read_text().split():
        running += 1 if line == "start" else -1
        most = max(most, running)
    assert most == 2
    log = (tmp_path / "test.log").read_text()
    assert "building 3 configs, 2 at a time" in log
    assert len(re.findall(r"^✓ [abc] ", log, re.M)) == 3


def test_a_failed_build_lets_the_others_finish_and_is_named(tmp_path: Path, runner: Runner) -> None:
    jobs = [job(tmp_path, "bad", "echo 'error: the mirror is down'; exit 1"),
            job(tmp_path, "good", f"sleep 0.3; touch {tmp_path / 'good-done'}")]  # fmt: skip
    with pytest.raises(ImagesmithError) as info:
        many.run(runner, jobs, 2)
    assert info.value.message == "1 of 2 builds failed: bad"
    assert info.value.details == "error: the mirror is down"
    assert (tmp_path / "good-done").exists()


def test_configs_with_one_name_are_refused_before_anything_runs(write: Write) -> None:
    a = write("a.yaml", "name: same\ndevice: qemu-amd64\n")
    b = write("b.yaml", "name: same\ndevice: qemu-amd64\n")
    code, out = invoke("build", str(a), str(b))
    assert code == 2 and "are both named same" in out


def test_a_bad_config_among_several_stops_all(write: Write) -> None:
    a = write("a.yaml", "name: a\ndevice: qemu-amd64\n")
    b = write("b.yaml", "name: b\ndevice: pi44\n")
    code, out = invoke("build", str(a), str(b))
    assert code == 2 and "unknown device 'pi44'" in out and "building 2 configs" not in out


def test_the_reproducibility_check_takes_one_config(write: Write) -> None:
    a = write("a.yaml", "name: a\ndevice: qemu-amd64\n")
    b = write("b.yaml", "name: b\ndevice: qemu-amd64\n")
    code, out = invoke("build", str(a), str(b), "--check-reproducible")
    assert code == 2 and "one config at a time" in out
