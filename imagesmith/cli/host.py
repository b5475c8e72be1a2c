"""`doctor` and `boot`: the build host, and booting an image on it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape

from imagesmith.cli.app import (
    _me,
    handled,
    main,
    verbose_option,
)
from imagesmith.errors import EXIT_CONFIG, ImagesmithError
from imagesmith.host.run import Runner


@main.command()
@click.option("--fix", is_flag=True, help="Apply the fixes (as root).")
@click.option(
    "--user", metavar="NAME", help="Check for builds by this user (default: the one behind sudo, or you)."
)
@click.option(
    "--arch",
    "arches",
    multiple=True,
    default=("arm64",),
    show_default=True,
    help="A target architecture to check for (repeatable).",
)
@click.option(
    "--for",
    "purposes",
    multiple=True,
    type=click.Choice(["build", "boot", "signing", "update", "test"]),
    default=("build",),
    show_default=True,
    help="What to check for: building, booting images, making signing keys, the test suite (repeatable).",
)
@verbose_option
@handled
def doctor(
    fix: bool, user: str | None, arches: tuple[str, ...], purposes: tuple[str, ...], verbose: bool
) -> None:
    """Check that this host can build (and boot) images; name the exact fix for each missing piece."""
    import pwd

    from imagesmith.host import doctor as checkup
    from imagesmith.host import userns

    name = checkup.builder(user)
    try:
        pwd.getpwnam(name)
    except KeyError:
        raise ImagesmithError(f"no user {name!r} on this host", hint="give an existing user with --user",
                              exit_code=EXIT_CONFIG) from None  # fmt: skip
    runner = Runner(verbose=verbose)

    def judged() -> list[checkup.Check]:
        return checkup.checks(checkup.gather(runner, name, list(arches)), list(arches), purposes)

    found = judged()
    show_checks(found, name)
    failing = [c for c in found if not c.ok]
    if fix and failing:
        if os.geteuid() != 0 or userns.inside():
            raise ImagesmithError("--fix needs root", hint="run it with sudo", exit_code=EXIT_CONFIG)
        for check in failing:
            with runner.stage("fix", check.name):
                for command in check.fix:
                    runner.run(command, hint=f"the fix for {check.name!r} failed")
        found = judged()
        show_checks(found, name)
        failing = [c for c in found if not c.ok]
    if failing:
        again = [*(f"--arch {a}" for a in arches), *(f"--for {p}" for p in purposes)]
        again += [f"--user {name}"] if name != "root" else []
        raise ImagesmithError(
            f"{len(failing)} check(s) failed",
            hint=f"run the fixes above as root, or `sudo {_me()} doctor --fix {' '.join(again)}`",
        )


def show_checks(found: list[Any], user: str) -> None:
    console = Console(soft_wrap=True, highlight=False)
    console.print(f"[bold]building as {escape(user)}[/bold]" + (" (rootless)" if user != "root" else ""))
    for check in found:
        mark = "[green]✓[/green]" if check.ok else "[red]✗[/red]"
        console.print(f"{mark} {escape(check.name)}: {escape(check.detail)}")
        for command in check.fix:
            console.print(f"    fix: {escape(' '.join(command))}")


@main.command()
@click.argument("image", type=click.Path(path_type=Path, resolve_path=True, dir_okay=False))
@click.option(
    "--timeout", type=float, default=600, show_default=True, help="Seconds to wait for a login prompt."
)
@click.option(
    "--console-log",
    type=click.Path(path_type=Path, resolve_path=True, dir_okay=False),
    help="Write the whole serial console transcript to this file.",
)
@click.option(
    "--expect",
    metavar="TEXT",
    help="Wait for TEXT on the console instead of a login prompt (e.g. a service's message).",
)
@click.option(
    "--disk",
    type=click.Path(path_type=Path, resolve_path=True, dir_okay=False),
    help="Keep the guest's writes in this qcow2 file (made over IMAGE if missing): a later boot "
    "with the same file sees them, as a device sees its card after a reboot.",
)
@click.option(
    "--attach",
    multiple=True,
    type=click.Path(path_type=Path, resolve_path=True, dir_okay=False, exists=True),
    help="Give the guest this file as one more disk, read-only (e.g. a filesystem image holding an "
    "update bundle). Repeatable.",
)
@verbose_option
@handled
def boot(
    image: Path,
    timeout: float,
    console_log: Path | None,
    expect: str | None,
    disk: Path | None,
    attach: tuple[Path, ...],
    verbose: bool,
) -> None:
    """Boot IMAGE in qemu-system and wait for a login prompt on its serial console.

    Uses KVM when the image is for this machine's architecture and /dev/kvm is usable.
    IMAGE itself is never written: the guest writes to an overlay (see --disk)."""
    from imagesmith.boot import qemu

    runner = Runner(verbose=verbose)
    goal = "a login prompt" if expect is None else repr(expect)
    with runner.stage("boot", f"{image.name} in qemu, waiting for {goal}"):
        qemu.boot(image, runner, timeout=timeout, log=console_log, expect=expect, disk=disk, attach=attach)
