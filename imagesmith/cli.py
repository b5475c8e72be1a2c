"""The `imagesmith` command: turns errors into messages and exit codes."""

from __future__ import annotations

import signal
import sys
import traceback
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from imagesmith import __version__
from imagesmith.config import catalog
from imagesmith.config.load import load_spec
from imagesmith.config.model import Device
from imagesmith.config.nodes import load_yaml
from imagesmith.errors import EXIT_FAILURE, ImagesmithError
from imagesmith.run import Runner, format_duration

F = TypeVar("F", bound=Callable[..., Any])
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def report(exc: ImagesmithError) -> None:
    err_console.print(f"[bold red]error:[/bold red] {escape(str(exc))}")
    if exc.details:
        for line in exc.details.splitlines():
            err_console.print(f"  [dim]│[/dim] {escape(line)}")
    if exc.hint:
        err_console.print(f"  [bold]hint:[/bold] {escape(exc.hint)}")


def _terminate(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def handled(func: F) -> F:
    """Every command: ImagesmithError → message + exit code; no traceback for people."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        signal.signal(signal.SIGTERM, _terminate)
        try:
            return func(*args, **kwargs)
        except ImagesmithError as exc:
            report(exc)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            err_console.print("[bold red]interrupted[/bold red]: nothing half-made was kept")
            sys.exit(130)
        except Exception as exc:  # a bug: say so plainly, show the trace only on request
            err_console.print(
                f"[bold red]internal error:[/bold red] {type(exc).__name__}: {escape(str(exc))}"
            )
            if kwargs.get("verbose"):
                err_console.print(escape(traceback.format_exc()))
            else:
                err_console.print(
                    "  [bold]hint:[/bold] run again with --verbose for the traceback and report it"
                )
            sys.exit(EXIT_FAILURE)

    return wrapper  # type: ignore[return-value]


verbose_option = click.option("-v", "--verbose", is_flag=True, help="Show every command run and its output.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="imagesmith")
def main() -> None:
    """Build reproducible, auditable OS images for embedded devices from a YAML config."""


@main.command()
@click.argument("config", required=False, type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, file_okay=False),
    help="Directory for the outputs (default: out/<name>/).",
)
@verbose_option
@handled
def build(config: Path | None, output: Path | None, verbose: bool) -> None:
    """Build the image described by CONFIG (default: the built-in examples/minimal.yaml)."""
    from imagesmith.build import build as run_build

    spec = load_spec(config)
    out = output or Path("out") / spec.config.name
    runner = Runner(verbose=verbose, log_path=out / "build.log")
    try:
        runner.info(
            f"building [bold]{spec.config.name}[/bold] for {spec.device.device} "
            f"({spec.device.arch}), layout {spec.layout.layout}, from {spec.config_path}"
        )
        runner.log(f"layers: {', '.join(ref.name for ref in spec.layers)}")
        result = run_build(spec, out, runner)
        total = sum(t for _, t in runner.timings)
        runner.info(f"[green]done[/green] in {format_duration(total)}: {result.image}")
        for path in result.outputs:
            runner.info(f"  {path}")
    except ImagesmithError as exc:
        runner.log(f"error: {exc}\n{exc.details or ''}\nhint: {exc.hint or ''}")
        raise
    finally:
        runner.close()


@main.command()
@click.argument("image", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--timeout", type=float, default=600, show_default=True, help="Seconds to wait for a login prompt."
)
@click.option(
    "--console-log",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write the whole serial console transcript to this file.",
)
@verbose_option
@handled
def boot(image: Path, timeout: float, console_log: Path | None, verbose: bool) -> None:
    """Boot IMAGE in qemu-system and wait for a login prompt on its serial console."""
    from imagesmith import qemu

    runner = Runner(verbose=verbose)
    with runner.stage("boot", f"{image.name} in qemu, waiting for a login prompt"):
        qemu.boot(image, runner, timeout=timeout, log=console_log)


@main.command()
@handled
def devices() -> None:
    """List the devices imagesmith knows, with what each one lacks."""
    from imagesmith.config.load import validate

    table = Table("device", "arch", "description", "notes")
    for name in catalog.names("devices"):
        path = catalog.find("devices", name)
        assert path is not None
        dev = validate(Device, load_yaml(path), f"device {name}")
        table.add_row(dev.device, dev.arch, dev.description, dev.notes)
    Console().print(table)
