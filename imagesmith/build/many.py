"""`imagesmith build A.yaml B.yaml …`: several builds at once, each stage made once.

Each config is built by its own `imagesmith build` process, at most ``-j`` at a time, into
its own output directory. They share the stage cache, whose one lock per key makes a
stage that two configs share (a bootstrap, say) run once: the second build waits for it
and takes it from the cache. One display shows them all: a line as each starts and ends,
and while they run, the stage each is in. A failed build does not stop the others; the
command fails at the end, naming each failed build and the end of its output.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from imagesmith.errors import ImagesmithError
from imagesmith.host.rootfs import remove_tree
from imagesmith.host.run import PROGRESS_EVERY, Runner, format_duration, output_tail

#: the line a build prints as a stage starts
_STAGE = re.compile(r"^▶ (\S+?):? ")


@dataclass(frozen=True)
class Job:
    name: str  # the config's name
    config: Path
    output: Path
    argv: list[str]  # the `imagesmith build` command line that makes it


def default_jobs() -> int:
    """Builds at a time when -j is not given: one per two cores (each build runs tools that
    use several)."""
    return max(1, (os.cpu_count() or 1) // 2)


def run(runner: Runner, jobs: list[Job], parallel: int) -> None:
    scratch = Path(tempfile.mkdtemp(prefix="imagesmith-builds-"))
    consoles = [scratch / f"{n}-{job.name}.console" for n, job in enumerate(jobs)]
    began: dict[int, float] = {}
    last_report = time.monotonic()
    failed: list[tuple[Job, int, Path]] = []

    def started(index: int) -> None:
        began[index] = time.monotonic()
        runner.info(f"[bold]▶ {jobs[index].name}[/bold]: {jobs[index].config} → {jobs[index].output}")

    def ended(index: int, code: int) -> None:
        took = format_duration(time.monotonic() - began.pop(index))
        job = jobs[index]
        if code == 0:
            runner.info(f"[green]✓[/green] {job.name:<16} {took:>8}  {job.output}")
        else:
            runner.info(f"[red]✗[/red] {job.name:<16} {took:>8}  see {job.output / 'build.log'}")
            failed.append((job, code, consoles[index]))

    def tick() -> None:
        nonlocal last_report
        if time.monotonic() - last_report < PROGRESS_EVERY or not began:
            return
        last_report = time.monotonic()
        states = [f"{jobs[i].name} ({_stage(consoles[i])})" for i in sorted(began)]
        runner.info(f"  … building {', '.join(states)}")

    parallel = max(1, min(parallel, len(jobs)))
    runner.info(f"building {len(jobs)} configs, {parallel} at a time")
    try:
        runner.run_pool([(job.argv, console) for job, console in zip(jobs, consoles, strict=True)],
                        parallel, started=started, ended=ended, tick=tick)  # fmt: skip
        if failed:
            job, code, console = failed[0]
            names = ", ".join(j.name for j, _, _ in failed)
            raise ImagesmithError(
                f"{len(failed)} of {len(jobs)} builds failed: {names}",
                hint=f"each build's whole log is build.log in its output directory; the end of {job.name}'s "
                f"output (exit code {code}) is above",
                details="\n".join(output_tail(console)),
            )
    finally:
        remove_tree(scratch)


def _stage(console: Path) -> str:
    """The stage a build is in: the last one its output started."""
    try:
        lines = console.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return "starting"
    found = [m.group(1) for line in lines if (m := _STAGE.match(line))]
    return found[-1] if found else "starting"
