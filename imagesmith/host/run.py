"""The one subprocess wrapper: every external command imagesmith runs goes through here.

Each command is written to the build log with its output; with ``--verbose`` it is also
shown on the terminal. A failing command raises ``ImagesmithError`` naming the program,
with the lines of its output that say what went wrong (found by an ``explain`` function
of ``diagnose``, else its last lines) and a hint; the full command line stays in the log.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from rich.console import Console
from rich.markup import escape
from rich.status import Status
from rich.text import Text

from imagesmith.errors import ImagesmithError
from imagesmith.host.diagnose import Explanation, missing_tool, no_space
from imagesmith.host.progress import Progress
from imagesmith.redact import environment, redact

TAIL_LINES = 25
#: how much of a failed command's output its ``explain`` function reads
EXPLAIN_LINES = 400
Explain = Callable[[Sequence[str]], Explanation | None]
#: seconds between progress lines when the output is not a terminal (a CI log, say)
PROGRESS_EVERY = 10.0


def format_command(argv: Sequence[str | os.PathLike[str]]) -> str:
    return shlex.join(str(a) for a in argv)


def format_duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s"


def output_tail(path: Path, lines: int = TAIL_LINES) -> list[str]:
    """The last lines of a command's output file."""
    return path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]


class Runner:
    """Runs commands, logs them, and shows progress for people."""

    def __init__(
        self,
        *,
        console: Console | None = None,
        verbose: bool = False,
        log_path: Path | None = None,
    ) -> None:
        self.console = console or Console(stderr=True, highlight=False, soft_wrap=True)
        self.verbose = verbose
        self._log: IO[str] | None = None
        self.log_path = log_path
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(log_path, "w", encoding="utf-8")  # noqa: SIM115 (closed in close())
        self.timings: list[tuple[str, float]] = []
        self._status: Status | None = None  # the spinner of the running stage, on a terminal
        self._label = ""
        #: SOURCE_DATE_EPOCH of the build, once known: every program it runs sees it
        self.epoch: int | None = None
        #: commands started ahead of their input and not finished yet (``start``)
        self.started: list[Started] = []

    def environment(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """What a command sees: the allow-listed environment, the epoch, ``extra``."""
        epoch = {"SOURCE_DATE_EPOCH": str(self.epoch)} if self.epoch is not None else {}
        return environment({**epoch, **(extra or {})})

    def close(self) -> None:
        """The end of the build: a command started ahead and never given its input stops."""
        for ahead in list(self.started):
            ahead.stop()
        if self._log is not None:
            self._log.close()
            self._log = None

    def log(self, text: str) -> None:
        if self._log is not None:
            text = redact(text)
            self._log.write(text if text.endswith("\n") else text + "\n")
            self._log.flush()

    def info(self, text: str) -> None:
        """A line for people (rich markup allowed); the log gets it without the markup."""
        self.console.print(redact(text))
        self.log(Text.from_markup(text).plain)

    def note(self, text: str) -> None:
        """Something people should know that does not stop the build."""
        self.info(f"[yellow]note:[/yellow] {text}")

    def detail(self, text: str) -> None:
        """A line shown only with --verbose (always logged)."""
        if self.verbose:
            self.console.print(Text(redact(text), style="dim"), highlight=False)  # no markup: tool output
        self.log(text)

    @contextmanager
    def stage(self, name: str, what: str = "") -> Iterator[None]:
        """A named, timed step of the build, shown as it runs and when it ends."""
        label = f"{name}: {what}" if what else name
        self.log(f"==> {label}")
        start = time.monotonic()
        ok = False
        try:
            self._label = label
            if self.verbose or not self.console.is_terminal:
                self.console.print(f"[bold]▶ {label}[/bold]")
                yield
            else:
                with self.console.status(f"[bold]{escape(label)}[/bold]") as status:
                    self._status = status
                    yield
            ok = True
        finally:
            self._status, self._label = None, ""
            elapsed = time.monotonic() - start
            self.timings.append((name, elapsed))
            mark = "[green]✓[/green]" if ok else "[red]✗[/red]"
            self.console.print(f"{mark} {name:<12} {format_duration(elapsed):>8}")
            self.log(f"<== {name} {'done' if ok else 'FAILED'} in {format_duration(elapsed)}")

    def run_pool(
        self,
        commands: Sequence[tuple[Sequence[str], Path]],
        parallel: int,
        *,
        started: Callable[[int], None] | None = None,
        ended: Callable[[int, int], None] | None = None,
        tick: Callable[[], None] | None = None,
    ) -> list[int]:
        """Run the commands, at most ``parallel`` at a time, each one's output into its own
        file; return their exit codes, in order. ``started(i)`` and ``ended(i, code)`` are
        called as each starts and ends, ``tick()`` while they run (a few times a second). The commands see
        imagesmith's whole environment: they are imagesmith itself (or trusted as much)."""
        waiting = list(range(len(commands)))
        running: dict[int, subprocess.Popen[bytes]] = {}
        codes = [0] * len(commands)
        try:
            while waiting or running:
                while waiting and len(running) < max(1, parallel):
                    index = waiting.pop(0)
                    argv, output = commands[index]
                    self.detail(f"$ {format_command(argv)} > {output}")
                    with open(output, "wb") as out:
                        running[index] = subprocess.Popen(
                            list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
                        )
                    if started is not None:
                        started(index)
                for index, proc in list(running.items()):
                    code = proc.poll()
                    if code is not None:
                        del running[index]
                        codes[index] = code
                        if ended is not None:
                            ended(index, code)
                if running:
                    time.sleep(0.2)
                    if tick is not None:
                        tick()
        except BaseException:  # interrupted: none of them may outlive this
            for proc in running.values():
                proc.terminate()
            for proc in running.values():
                proc.wait()
            raise
        return codes

    @contextmanager
    def alongside(
        self,
        argv: Sequence[str | os.PathLike[str]],
        output: Path,
        *,
        name: str | None = None,
        explain: Explain | None = None,
        hint: str | None = None,
    ) -> Iterator[None]:
        """Run ``argv`` while the body of the ``with`` runs (another core's work), its output
        into ``output``; then wait for it, log its output and fail as ``run`` does. A body
        that fails (or is interrupted) stops it first."""
        cmd = [str(a) for a in argv]
        name = name or Path(cmd[0]).name
        self.detail(f"$ {format_command(cmd)} > {output} (alongside)")
        start = time.monotonic()
        with open(output, "wb") as out:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=self.environment()
            )
        try:
            yield
            code = proc.wait()
        except BaseException:  # the build stops: so does this command
            proc.terminate()
            proc.wait()
            raise
        lines = output.read_text(encoding="utf-8", errors="replace").splitlines()
        self.log(f"$ {name}'s output (it ran alongside):")
        for text in lines:
            self.log(text)
        self.log(f"[exit {code} after {format_duration(time.monotonic() - start)}]")
        if code != 0:
            raise self.failure(name, code, lines[-EXPLAIN_LINES:], hint, explain)

    def start(self, argv: Sequence[str | os.PathLike[str]], *, env: Mapping[str, str] | None = None,
              name: str | None = None) -> Started:  # fmt: skip
        """Start ``argv`` now and give it its standard input later (``Started.finish``):
        slow start-up work (loading a validator, say) done on another core while the build
        goes on. It stops when the runner is closed, if nobody finished it."""
        cmd = [str(a) for a in argv]
        self.detail(f"$ {format_command(cmd)} (started ahead)")
        proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env=self.environment(env), text=True, errors="replace",
        )  # fmt: skip
        ahead = Started(self, name or Path(cmd[0]).name, proc)
        self.started.append(ahead)
        return ahead

    def run_together(self, commands: list[tuple[list[str], Path]], hint: str | None = None) -> None:
        """Run the commands at the same time, each one's output into its own file; wait for
        all. The first failure raises, with the end of that command's output."""
        codes = self.run_pool(commands, len(commands))
        for (argv, output), code in zip(commands, codes, strict=True):
            if code != 0:
                tail = output_tail(output)
                full = no_space(tail)
                raise ImagesmithError(
                    f"command failed with exit code {code}: {format_command(argv)}",
                    hint=full.hint if full else hint or f"its whole output is in {output}",
                    details="\n".join(tail),
                )

    def run(
        self,
        argv: Sequence[str | os.PathLike[str]],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        input: str | None = None,
        capture: bool = False,
        hint: str | None = None,
        name: str | None = None,
        explain: Explain | None = None,
        progress: Progress | None = None,
        errors: list[str] | None = None,
    ) -> str:
        """Run ``argv``; return its stdout when ``capture`` is set (else "").
        ``errors``: with ``capture``, its standard error's lines are added there too (they
        are logged either way).

        ``name`` is what an error calls the command (default: the program's name);
        ``explain`` picks the lines and the hint of a failure from its output;
        ``progress`` reads its output and is shown while it runs (see ``progress.py``)."""
        cmd = [str(a) for a in argv]
        name = name or Path(cmd[0]).name
        self.detail(f"$ {format_command(cmd)}")
        tail: deque[str] = deque(maxlen=EXPLAIN_LINES)
        captured: list[str] = []
        start = time.monotonic()
        try:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE if capture else subprocess.STDOUT,
                cwd=cwd,
                env=self.environment(env),  # allow-listed: the builder's secrets stay here
                text=True,
                errors="replace",
            )
        except FileNotFoundError as exc:
            raise ImagesmithError(
                f"command not found: {cmd[0]}", hint=hint or missing_tool(cmd[0], []).hint
            ) from exc
        if input is not None and not capture:
            assert proc.stdin is not None
            proc.stdin.write(input)  # never logged: it may carry private values
            proc.stdin.close()
        assert proc.stdout is not None
        done = threading.Event()
        if progress is not None:
            threading.Thread(target=self._report, args=(progress, start, done), daemon=True).start()
        try:
            if capture:
                out, err = proc.communicate(input)
                captured.append(out)
                for text in err.splitlines():
                    tail.append(text)
                    self.log(text)
                if errors is not None:
                    errors += err.splitlines()
            else:
                for text in proc.stdout:
                    text = text.rstrip("\n")
                    tail.append(text)
                    self.log(text)
                    if progress is not None:
                        progress.feed(text)
                proc.wait()
        except BaseException:  # interrupted: the command must not outlive the build
            proc.kill()
            proc.wait()
            raise
        finally:
            done.set()
        self.log(f"[exit {proc.returncode} after {format_duration(time.monotonic() - start)}]")
        if proc.returncode != 0:
            raise self.failure(name, proc.returncode, list(tail), hint, explain)
        return "".join(captured)

    def _report(self, progress: Progress, start: float, done: threading.Event) -> None:
        """Show ``progress`` until ``done``: the spinner's text on a terminal (each second),
        else a line every ``PROGRESS_EVERY`` seconds."""
        on_terminal = self._status is not None
        while not done.wait(1.0 if on_terminal else PROGRESS_EVERY):
            text = redact(f"{progress.summary()} [{format_duration(time.monotonic() - start)}]")
            if self._status is not None:
                self._status.update(f"[bold]{escape(self._label)}[/bold] · {escape(text)}")
            elif not on_terminal:
                self.console.print(Text(f"  … {text}"), highlight=False)
                self.log(f"progress: {text}")

    def failure(
        self, name: str, code: int, output: list[str], hint: str | None, explain: Explain | None
    ) -> ImagesmithError:
        """The error for a command that failed: its own lines that say why, and a hint."""
        found = no_space(output) or (explain(output) if explain is not None else None)
        if found is not None:
            return ImagesmithError(f"{name} failed with exit code {code}", hint=redact(found.hint),
                                   details=redact("\n".join(found.lines)))  # fmt: skip
        more = (
            f"its whole output and command line are in {self.log_path}"
            if self.log_path is not None
            else "--verbose shows its command line and whole output"
        )
        return ImagesmithError(
            f"{name} failed with exit code {code}",
            hint=f"{hint}; {more}" if hint else more,
            details=redact("\n".join(output[-TAIL_LINES:])),
        )


class Started:
    """A command started ahead of its input (``Runner.start``)."""

    def __init__(self, runner: Runner, name: str, proc: subprocess.Popen[str]) -> None:
        self.runner, self.name, self.proc = runner, name, proc
        self.begun = time.monotonic()

    def finish(self, input: str) -> tuple[int, list[str]]:
        """Give it ``input`` (all its standard input, never logged) and wait for it: its exit
        code and output lines, logged; what a code means is the caller's to say."""
        try:
            out, _ = self.proc.communicate(input)
        except BaseException:  # interrupted: the command must not outlive the build
            self.stop()
            raise
        self._forget()
        lines = out.splitlines()
        self.runner.log(f"$ {self.name}'s output (started ahead):")
        for text in lines:
            self.runner.log(text)
        took = format_duration(time.monotonic() - self.begun)
        self.runner.log(f"[exit {self.proc.returncode} after {took}]")
        return self.proc.returncode, lines

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._forget()

    def _forget(self) -> None:
        if self in self.runner.started:
            self.runner.started.remove(self)
