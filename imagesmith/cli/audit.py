"""`verify`, `packages` and `diff`: what a build's outputs say."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from imagesmith.cli.app import (
    err_console,
    format_size,
    handled,
    main,
)
from imagesmith.errors import ImagesmithError


@main.command()
@click.argument("outdir", type=click.Path(path_type=Path, resolve_path=True, file_okay=False))
@click.option(
    "--key",
    type=click.Path(path_type=Path, resolve_path=True, dir_okay=False),
    help="Ed25519 public key (PEM) that SHA256SUMS.sig must be a signature by.",
)
@click.option(
    "--keyring",
    type=click.Path(path_type=Path, resolve_path=True, dir_okay=False, exists=True),
    help="Certificates (PEM) your devices trust: each update bundle must be signed by one (rauc info).",
)
@handled
def verify(outdir: Path, key: Path | None, keyring: Path | None) -> None:
    """Check every file SHA256SUMS in OUTDIR names, its signature (with --key), and the
    signer of each update bundle (with --keyring, when rauc is installed)."""
    import shutil

    from imagesmith.host.run import Runner
    from imagesmith.outputs import bundle, sign
    from imagesmith.outputs import files as artifacts

    report = sign.verify(outdir, key)
    for name in report.checked:
        click.echo(f"ok      {name}")
    if report.signature == "good":
        click.echo(f"ok      {sign.SIG} (signed by {key})")
    for name in [n for n in report.checked if n.endswith(bundle.SUFFIX)]:
        if keyring is None or shutil.which("rauc") is None:
            why = "rauc is not installed" if keyring else "give the keyring your devices trust with --keyring"
            err_console.print(f"[yellow]note:[/yellow] {name}: its signer was not checked ({why})")
        elif (reason := bundle.refused(Runner(), outdir / name, keyring)) is not None:
            report.failed.append((name, f"rauc refuses it with {keyring.name}: {reason}"))
        else:
            click.echo(f"ok      {name} (rauc: signed by a certificate of {keyring.name})")
    for name, why in report.failed:
        click.echo(f"FAILED  {name}: {why}")
    if report.signature != "good":
        why = (
            f"{sign.SIG} is there: give the public key with --key to check it"
            if report.signature == "not checked"
            else f"there is no {sign.SIG}"
        )
        err_console.print(
            f"[yellow]note:[/yellow] no signature was checked ({why}): the files match {artifacts.SUMS}, "
            f"but nothing proves who wrote {artifacts.SUMS}"
        )
    if not report.ok:
        raise ImagesmithError(
            f"{len(report.failed)} of the outputs in {outdir} failed verification: "
            + ", ".join(name for name, _ in report.failed),
            hint="do not flash these files; rebuild, or fetch them again",
        )


@main.command()
@click.argument("outdir", type=click.Path(path_type=Path, resolve_path=True, file_okay=False))
@click.option(
    "--trim", "trim_size", metavar="SIZE", help="Suggest what to remove to save SIZE (e.g. 100MiB)."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@handled
def packages(outdir: Path, trim_size: str | None, as_json: bool) -> None:
    """List the packages in a build (OUTDIR), largest first, with what brought each in."""
    from imagesmith.config.model import parse_size
    from imagesmith.outputs import manifest, report

    data = manifest.read(outdir)
    rows = sorted(report.packages_of(data), key=lambda p: (-p.installed_size, p.name))
    if trim_size is not None:
        try:
            target = parse_size(trim_size)
        except ValueError as exc:
            raise ImagesmithError(str(exc), hint="e.g. --trim 100MiB", exit_code=2) from None
        chosen, saved = report.trim(data, target)
        if as_json:
            click.echo(
                json.dumps({"target": target, "saves": saved, "suggestions": [vars(c) for c in chosen]})
            )
            return
        table = Table(
            "remove, or set", "saves", "packages that go with it", title=f"to save {format_size(target)}"
        )
        for item in chosen:
            table.add_row(item.what, format_size(item.saves), ", ".join(item.removes))
        Console(soft_wrap=True).print(table)
        verdict = "enough" if saved >= target else "all that can go without the device's or base packages"
        click.echo(f"together: {format_size(saved)} ({verdict})")
        return
    if as_json:
        click.echo(json.dumps([p.to_json() for p in rows], indent=2))
        return
    table = Table("package", "version", "size", "brought in by")
    for p in rows:
        table.add_row(p.name, p.version, format_size(p.installed_size), p.brought_by)
    Console(soft_wrap=True).print(table)
    click.echo(f"{len(rows)} packages, {format_size(sum(p.installed_size for p in rows))} installed")


@main.command("diff")
@click.argument("old", type=click.Path(path_type=Path, resolve_path=True, file_okay=False))
@click.argument("new", type=click.Path(path_type=Path, resolve_path=True, file_okay=False))
@handled
def diff_command(old: Path, new: Path) -> None:
    """What changed from build OLD to build NEW: packages and partition sizes."""
    from imagesmith.outputs import manifest, report

    change = report.diff(manifest.read(old), manifest.read(new))
    for name, version in change.added:
        click.echo(f"+ {name} {version}")
    for name, version in change.removed:
        click.echo(f"- {name} {version}")
    for name, before, after in change.changed:
        click.echo(f"~ {name} {before} → {after}")
    if not (change.added or change.removed or change.changed):
        click.echo("same packages, same versions")
    click.echo(
        f"installed size: {'+' if change.size_change >= 0 else '-'}{format_size(abs(change.size_change))}"
    )
    for part, size_before, size_after in change.partitions:
        delta = size_after - size_before
        click.echo(
            f"partition {part}: {format_size(size_before)} → {format_size(size_after)} "
            f"({'+' if delta >= 0 else '-'}{format_size(abs(delta))})"
        )
