"""`cache list/prune/clear`: the stage cache."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from imagesmith.cli.app import (
    _shown,
    as_root_of_a_user_namespace,
    cache_option,
    format_duration_ago,
    format_size,
    handled,
    main,
    open_cache,
)
from imagesmith.errors import ImagesmithError


@main.group("cache")
@click.pass_context
def cache_group(ctx: click.Context) -> None:
    """The stage cache: what it holds, and making it smaller."""
    as_root_of_a_user_namespace(ctx.invoked_subcommand)  # prune and clear delete rootfs trees


@cache_group.command("list")
@cache_option
@handled
def cache_list(cache_dir: Path | None) -> None:
    """Entries with their size, age and the configs that used them."""
    import time

    store = open_cache(cache_dir)
    table = Table("stage", "key", "size", "last used", "used by")
    total = 0
    for entry in sorted(store.entries(), key=lambda e: e.last_used, reverse=True):
        size = entry.size
        total += size
        age = format_duration_ago(time.time() - entry.last_used)
        configs = ", ".join(_shown(Path(c)) for c in entry.meta.get("configs", [])) or "-"
        table.add_row(entry.stage, entry.key[:12], format_size(size), age, configs)
    Console(soft_wrap=True).print(table)
    debs = store.debs_size()
    click.echo(f"{store.root}: {format_size(total)} in stage entries, {format_size(debs)} of .deb files")


@cache_group.command("prune")
@click.option(
    "--keep-last", type=click.IntRange(min=0), help="Keep the N most recently used entries of each stage."
)
@click.option(
    "--max-size", metavar="SIZE", help="Drop least recently used entries until the cache fits (e.g. 20GiB)."
)
@cache_option
@handled
def cache_prune(keep_last: int | None, max_size: str | None, cache_dir: Path | None) -> None:
    """Drop the least recently used entries."""
    from imagesmith.config.model import parse_size

    if keep_last is None and max_size is None:
        raise ImagesmithError("say what to keep", hint="--keep-last N and/or --max-size SIZE", exit_code=2)
    try:
        limit = parse_size(max_size) if max_size is not None else None
    except ValueError as exc:
        raise ImagesmithError(str(exc), hint="e.g. --max-size 20GiB", exit_code=2) from None
    removed = open_cache(cache_dir).prune(keep_last, limit)
    for entry in removed:
        click.echo(f"removed {entry.stage} {entry.key[:12]}")
    click.echo(f"{len(removed)} entries removed")


@cache_group.command("clear")
@cache_option
@handled
def cache_clear(cache_dir: Path | None) -> None:
    """Remove every entry and every cached .deb file."""

    count = open_cache(cache_dir).clear()
    click.echo(f"{count} entries removed, .deb files removed")
