"""The `imagesmith` command: turns errors into messages and exit codes."""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from imagesmith import __version__, plan
from imagesmith.config import catalog
from imagesmith.config.load import SECRET, Spec, load_spec
from imagesmith.config.model import Device
from imagesmith.config.nodes import load_yaml
from imagesmith.errors import EXIT_CONFIG, EXIT_FAILURE, ImagesmithError, Location
from imagesmith.redact import redact
from imagesmith.run import Runner, format_duration

F = TypeVar("F", bound=Callable[..., Any])
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def report(exc: ImagesmithError) -> None:
    """An error for people: message, the lines that explain it, a hint; no secret in any."""
    err_console.print(f"[bold red]error:[/bold red] {escape(redact(str(exc)))}")
    if exc.details:
        for line in redact(exc.details).splitlines():
            err_console.print(f"  [dim]│[/dim] {escape(line)}")
    if exc.hint:
        err_console.print(f"  [bold]hint:[/bold] {escape(redact(exc.hint))}")


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
        except BrokenPipeError:  # e.g. `imagesmith config show | head`
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(0)
        except KeyboardInterrupt:
            err_console.print("[bold red]interrupted[/bold red]: nothing half-made was kept")
            sys.exit(130)
        except Exception as exc:  # a bug: say so plainly, show the trace only on request
            err_console.print(
                f"[bold red]internal error:[/bold red] {type(exc).__name__}: {escape(redact(str(exc)))}"
            )
            if kwargs.get("verbose"):
                err_console.print(escape(redact(traceback.format_exc())))
            else:
                err_console.print(
                    "  [bold]hint:[/bold] run again with --verbose for the traceback and report it"
                )
            sys.exit(EXIT_FAILURE)

    return wrapper  # type: ignore[return-value]


verbose_option = click.option("-v", "--verbose", is_flag=True, help="Show every command run and its output.")
layers_option = click.option(
    "--layers",
    "layers",
    multiple=True,
    type=click.Path(path_type=Path, resolve_path=True, file_okay=False, exists=True),
    help="Another directory of layers, searched after the config's own (repeatable).",
)
config_argument = click.argument("config", type=click.Path(path_type=Path, resolve_path=True, dir_okay=False))


def spec_options(func: F) -> F:
    """--layers, --variant and --set: everything that changes what a config means."""
    func = click.option(
        "--set",
        "sets",
        multiple=True,
        metavar="KEY=VALUE",
        help="Set a value over everything else, e.g. --set hostname=kiosk-1 (repeatable; VALUE is YAML).",
    )(func)
    func = click.option(
        "--variant",
        metavar="NAME",
        help="Add <config>.NAME.yaml (next to the config) over the config.",
    )(func)
    return layers_option(func)


def default_cache_dir() -> Path:
    from imagesmith.cache import default_dir

    return default_dir()


def cache_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--cache-dir",
        type=click.Path(path_type=Path, resolve_path=True, file_okay=False),
        help="The stage cache (default: $XDG_CACHE_HOME/imagesmith, else ~/.cache/imagesmith).",
    )(func)


def load(config: Path | None, layers: tuple[Path, ...], sets: tuple[str, ...], variant: str | None) -> Spec:
    spec = load_spec(config, list(layers), sets=list(sets), variant=variant)
    for note in spec.notes:
        err_console.print(f"[yellow]note:[/yellow] {escape(note)}")
    return spec


#: commands that make or delete root filesystem trees: an ordinary user runs them as
#: root of a user namespace (see userns.py)
AS_ROOT = {"build", "lock", "prune", "clear"}


def as_root_of_a_user_namespace(command: str | None) -> None:
    """Run this command line again in a user namespace, when it is one that needs it."""
    from imagesmith import userns

    wants_help = any(arg in ("-h", "--help") for arg in sys.argv[1:])
    if command in AS_ROOT and os.geteuid() != 0 and not userns.inside() and not wants_help:
        try:
            userns.reexec([sys.executable, "-m", "imagesmith", *sys.argv[1:]])
        except ImagesmithError as exc:
            report(exc)
            sys.exit(exc.exit_code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="imagesmith")
@click.pass_context
def main(ctx: click.Context) -> None:
    """Build reproducible, auditable OS images for embedded devices from a YAML config."""
    as_root_of_a_user_namespace(ctx.invoked_subcommand)


@main.command()
@click.argument("config", required=False, type=click.Path(path_type=Path, resolve_path=True, dir_okay=False))
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, resolve_path=True, file_okay=False),
    help="Directory for the outputs (default: out/<name>/).",
)
@click.option(
    "--signing-key",
    type=click.Path(path_type=Path, resolve_path=True, dir_okay=False),
    help="Ed25519 private key (PEM) that signs SHA256SUMS (overrides the config's signing_key).",
)
@click.option("--no-cache", is_flag=True, help="Run every stage; read and write no cache.")
@click.option(
    "--rebuild-from",
    type=click.Choice(plan.STAGES),
    help="Run this stage and every later one even if the cache has them.",
)
@click.option(
    "--update-lock", is_flag=True, help="Resolve the packages afresh and rewrite CONFIG.lock, then build."
)
@click.option(
    "--check-reproducible",
    is_flag=True,
    help="Build twice, each with its own empty stage cache, and report the first difference.",
)
@click.option(
    "--shared-debs", type=click.Path(path_type=Path, resolve_path=True, file_okay=False), hidden=True
)
@cache_option
@spec_options
@verbose_option
@handled
def build(
    config: Path | None,
    output: Path | None,
    signing_key: Path | None,
    no_cache: bool,
    rebuild_from: str | None,
    update_lock: bool,
    check_reproducible: bool,
    shared_debs: Path | None,
    cache_dir: Path | None,
    layers: tuple[Path, ...],
    sets: tuple[str, ...],
    variant: str | None,
    verbose: bool,
) -> None:
    """Build the image described by CONFIG (default: the built-in examples/minimal.yaml).

    When CONFIG.lock exists (see `imagesmith lock`), the build installs exactly its
    package versions."""
    from imagesmith import lock
    from imagesmith.cache import Cache

    spec = load(config, layers, sets, variant)
    out = output or Path.cwd() / "out" / spec.config.name  # every path is absolute from here on
    lock_file = lock.path_for(spec.config_path, variant)
    if check_reproducible:
        from imagesmith import check
        from imagesmith.build import lock_only

        runner = Runner(verbose=verbose)
        shared = Cache(cache_dir or default_cache_dir())
        if update_lock:
            lock_only(spec, runner, None if no_cache else shared, lock_file)
        args = [*([str(config)] if config else []), *(f"--layers={d}" for d in layers)]
        args += [*(f"--set={s}" for s in sets), *([f"--variant={variant}"] if variant else [])]
        args += [f"--signing-key={signing_key}"] if signing_key else []
        check.run(runner, args, out, shared)
        return
    with exclusive(out):
        run_one_build(spec, out, signing_key, no_cache, rebuild_from, update_lock, cache_dir, shared_debs,
                      plan.config_id(spec, variant, list(sets)), lock_file, verbose)  # fmt: skip


def run_one_build(
    spec: Spec,
    out: Path,
    signing_key: Path | None,
    no_cache: bool,
    rebuild_from: str | None,
    update_lock: bool,
    cache_dir: Path | None,
    shared_debs: Path | None,
    config_id: str,
    lock_file: Path,
    verbose: bool,
) -> None:
    from imagesmith.build import build as run_build
    from imagesmith.cache import Cache

    runner = Runner(verbose=verbose, log_path=out / "build.log")
    try:
        runner.info(
            f"building [bold]{spec.config.name}[/bold] for {spec.device.device} "
            f"({spec.device.arch}), layout {spec.layout.layout}, from {spec.config_path}"
        )
        runner.log(f"layers: {', '.join(ref.name for ref in spec.layers)}")
        store = None if no_cache else Cache(cache_dir or default_cache_dir(), shared_debs)
        result = run_build(
            spec,
            out,
            runner,
            signing_key,
            store,
            rebuild_from,
            config_id,
            lock_file,
            update_lock,
        )
        total = sum(t for _, t in runner.timings)
        runner.info(f"[green]done[/green] in {format_duration(total)}: {result.image}")
        for path in result.outputs:
            runner.info(f"  {path}")
    except ImagesmithError as exc:
        runner.log(f"error: {exc}\n{exc.details or ''}\nhint: {exc.hint or ''}")
        raise
    finally:
        runner.close()


@main.command("lock")
@config_argument
@click.option("--no-cache", is_flag=True, help="Keep no bootstrap in the stage cache.")
@cache_option
@spec_options
@verbose_option
@handled
def lock_command(
    config: Path,
    no_cache: bool,
    cache_dir: Path | None,
    layers: tuple[Path, ...],
    sets: tuple[str, ...],
    variant: str | None,
    verbose: bool,
) -> None:
    """Resolve CONFIG's packages on its mirror now and write CONFIG.lock.

    The lock holds every package's exact version and .deb sha256, the suite, the mirror
    (and snapshot timestamp) and SOURCE_DATE_EPOCH. It runs a fresh bootstrap, which is
    kept in the cache: the next build starts from it."""
    from imagesmith import lock
    from imagesmith.build import lock_only
    from imagesmith.cache import Cache

    spec = load(config, layers, sets, variant)
    runner = Runner(verbose=verbose)
    store = None if no_cache else Cache(cache_dir or default_cache_dir())
    lock_only(spec, runner, store, lock.path_for(spec.config_path, variant))


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
    type=click.Choice(["build", "boot", "test"]),
    default=("build",),
    show_default=True,
    help="What to check for: building, booting images with `imagesmith boot`, the test suite (repeatable).",
)
@verbose_option
@handled
def doctor(
    fix: bool, user: str | None, arches: tuple[str, ...], purposes: tuple[str, ...], verbose: bool
) -> None:
    """Check that this host can build (and boot) images; name the exact fix for each missing piece."""
    import pwd

    from imagesmith import doctor as checkup
    from imagesmith import userns

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


@contextmanager
def exclusive(output: Path) -> Iterator[None]:
    """One build at a time writes into ``output``: a second one waits for the first (and
    says so), so outputs and build.log are never a mix of two builds."""
    from filelock import FileLock, Timeout

    output.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(output / ".imagesmith-build.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        err_console.print(f"waiting: another build is writing to {output} …")
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _me() -> str:
    """How to call this imagesmith again (with sudo, PATH may not find the virtual environment's)."""
    import shutil

    found = shutil.which("imagesmith")
    argv0 = Path(sys.argv[0])
    if argv0.name == "imagesmith" and argv0.exists():
        return str(argv0.absolute())
    return found or f"{sys.executable} -m imagesmith"


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
@verbose_option
@handled
def boot(image: Path, timeout: float, console_log: Path | None, expect: str | None, verbose: bool) -> None:
    """Boot IMAGE in qemu-system and wait for a login prompt on its serial console.

    Uses KVM when the image is for this machine's architecture and /dev/kvm is usable."""
    from imagesmith import qemu

    runner = Runner(verbose=verbose)
    goal = "a login prompt" if expect is None else repr(expect)
    with runner.stage("boot", f"{image.name} in qemu, waiting for {goal}"):
        qemu.boot(image, runner, timeout=timeout, log=console_log, expect=expect)


@main.command("plan")
@click.argument("config", required=False, type=click.Path(path_type=Path, resolve_path=True, dir_okay=False))
@cache_option
@spec_options
@handled
def plan_command(
    config: Path | None,
    cache_dir: Path | None,
    layers: tuple[Path, ...],
    sets: tuple[str, ...],
    variant: str | None,
) -> None:
    """Show each stage of a build of CONFIG: from the cache, or run, and why."""
    from imagesmith import lock, manifest
    from imagesmith.build import use_lock
    from imagesmith.cache import Cache

    spec = load(config, layers, sets, variant)
    store = Cache(cache_dir or default_cache_dir())
    last = store.last_build(plan.config_id(spec, variant, list(sets)))
    table = Table("stage", "key", "will", "because")
    running = False
    lock_file = lock.path_for(spec.config_path, variant)
    locked = use_lock(spec, Runner(), lock_file) if lock_file.exists() else None
    for stage in plan.stages(spec, store.salt, manifest.host_tools(), locked):
        cached = store.lookup(stage.name, stage.key) is not None and not running
        running = running or not cached
        if cached:
            why = ""
        else:
            before = last.get(stage.name, {}).get("inputs", {})
            changed = plan.changed_inputs(stage.inputs, before)
            why = "changed: " + ", ".join(changed) if changed and before else (changed[0] if changed else "")
            if not changed:
                why = "not in the cache (pruned, or built with --no-cache)"
        table.add_row(stage.name, stage.key[:12], "come from the cache" if cached else "run", why)
    Console(soft_wrap=True).print(table)


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

    from imagesmith.cache import Cache

    store = Cache(cache_dir or default_cache_dir())
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
    from imagesmith.cache import Cache
    from imagesmith.config.model import parse_size

    if keep_last is None and max_size is None:
        raise ImagesmithError("say what to keep", hint="--keep-last N and/or --max-size SIZE", exit_code=2)
    try:
        limit = parse_size(max_size) if max_size is not None else None
    except ValueError as exc:
        raise ImagesmithError(str(exc), hint="e.g. --max-size 20GiB", exit_code=2) from None
    removed = Cache(cache_dir or default_cache_dir()).prune(keep_last, limit)
    for entry in removed:
        click.echo(f"removed {entry.stage} {entry.key[:12]}")
    click.echo(f"{len(removed)} entries removed")


@cache_group.command("clear")
@cache_option
@handled
def cache_clear(cache_dir: Path | None) -> None:
    """Remove every entry and every cached .deb file."""
    from imagesmith.cache import Cache

    count = Cache(cache_dir or default_cache_dir()).clear()
    click.echo(f"{count} entries removed, .deb files removed")


def format_duration_ago(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit} ago"
    return "just now"


@main.command()
@click.argument("outdir", type=click.Path(path_type=Path, resolve_path=True, file_okay=False))
@click.option(
    "--key",
    type=click.Path(path_type=Path, resolve_path=True, dir_okay=False),
    help="Ed25519 public key (PEM) that SHA256SUMS.sig must be a signature by.",
)
@handled
def verify(outdir: Path, key: Path | None) -> None:
    """Check every file SHA256SUMS in OUTDIR names, and its signature (with --key)."""
    from imagesmith import sign
    from imagesmith.stages import artifacts

    report = sign.verify(outdir, key)
    for name in report.checked:
        click.echo(f"ok      {name}")
    if report.signature == "good":
        click.echo(f"ok      {sign.SIG} (signed by {key})")
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
    from imagesmith import manifest, report
    from imagesmith.config.model import parse_size

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
        table = Table("remove", "saves", "packages that go with it", title=f"to save {format_size(target)}")
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
    from imagesmith import manifest, report

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


def format_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


@main.command()
@handled
def devices() -> None:
    """List the devices imagesmith knows, with what each one lacks."""
    from imagesmith.config.validate import validate

    table = Table("device", "arch", "description", "notes")
    for name in catalog.names("devices"):
        path = catalog.find("devices", name)
        assert path is not None
        dev = validate(Device, load_yaml(path), f"device {name}")
        table.add_row(dev.device, dev.arch, dev.description, dev.notes)
    Console().print(table)


def _shown(path: Path) -> str:
    """A path as people want to read it: relative to here when it is below here."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _place(where: Location) -> str:
    return f"{_shown(where.file)}:{where.line}:{where.column}" if where.line else str(where.file)


@main.group()
def config() -> None:
    """Look at a config as imagesmith sees it: merged, validated, and where each value came from."""


@config.command("show")
@config_argument
@spec_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of YAML.")
@handled
def config_show(
    config: Path, layers: tuple[Path, ...], sets: tuple[str, ...], variant: str | None, as_json: bool
) -> None:
    """Print the fully merged config, defaults included."""

    from ruamel.yaml import YAML

    spec = load(config, layers, sets, variant)
    data = spec.masked()
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(
        f"# {_shown(spec.config_path)} merged over layers: "
        + ", ".join(f"{ref.name} ({_shown(ref.path)})" for ref in spec.layers)
    )
    yaml = YAML()  # round-trip: keys stay in the order of the schema
    yaml.dump(data, sys.stdout)


@config.command("explain")
@config_argument
@click.argument("key")
@spec_options
@handled
def config_explain(
    config: Path, key: str, layers: tuple[Path, ...], sets: tuple[str, ...], variant: str | None
) -> None:
    """Print the final value of KEY (e.g. hostname, distribution.suite, users[0].name)
    and every file:line that set or changed it, in order."""

    from imagesmith.config.load import find_node, parse_key

    spec = load(config, layers, sets, variant)
    path = parse_key(key)
    value: Any = spec.masked()
    for part in path:
        try:
            value = value[part]
        except (KeyError, IndexError, TypeError):
            raise ImagesmithError(
                f"{key!r} is not a setting of this config",
                exit_code=2,
                hint="see `imagesmith config show` for the keys and `imagesmith schema` for all of them",
            ) from None
    click.echo(f"{key} = {json.dumps(value)}")
    node = find_node(spec.tree, path)
    if node is None:
        click.echo("  (the default: no file sets it)")
        return
    places = [*node.history, node.location]
    for index, where in enumerate(places):
        verb = "set" if index == 0 else "changed"
        click.echo(f"  {_place(where)}: {verb}")
    if isinstance(node.value, list):
        for item in node.value:
            shown = SECRET if item.secrets() else json.dumps(item.plain())
            click.echo(f"    {shown}  ← {_place(item.location)}")


@main.command()
@click.option("--layer", is_flag=True, help="The schema of layer files instead of image configs.")
@handled
def schema(layer: bool) -> None:
    """Print the JSON Schema of image configs (or of layer files) for editors."""

    from imagesmith.config.model import ImageConfig, LayerFile

    model = LayerFile if layer else ImageConfig
    data = model.model_json_schema(by_alias=True)
    data["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    data["title"] = "imagesmith layer" if layer else "imagesmith image config"
    click.echo(json.dumps(data, indent=2))


@main.group("layers")
def layers_group() -> None:
    """The layers imagesmith can find."""


def _layer_dirs(extra: tuple[Path, ...]) -> list[Path]:
    return [Path.cwd(), *extra]


@layers_group.command("list")
@layers_option
@handled
def layers_list(layers: tuple[Path, ...]) -> None:
    """List layers: this directory's, --layers directories', then the built-in ones."""
    table = Table("layer", "description", "file")
    for name in catalog.names("layers", _layer_dirs(layers)):
        path = catalog.find("layers", name, _layer_dirs(layers))
        assert path is not None
        doc = load_yaml(path).plain()
        table.add_row(name, str(doc.get("description", "")), _shown(path))
    Console(soft_wrap=True).print(table)


@layers_group.command("show")
@click.argument("name")
@layers_option
@handled
def layers_show(name: str, layers: tuple[Path, ...]) -> None:
    """Describe one layer: what it adds, requires and declares, and where its file is."""
    from imagesmith.config.validate import check_layer

    search = _layer_dirs(layers)
    path = catalog.find("layers", name, search)
    if path is None:
        raise ImagesmithError(
            f"unknown layer {name!r}",
            exit_code=2,
            hint=catalog.suggestion(name, catalog.names("layers", search)),
        )
    tree = load_yaml(path)
    check_layer(tree, f"layer {name}")  # templated values are only judged once rendered
    layer = tree.plain()
    click.echo(f"{layer['layer']}: {layer.get('description', '')}".rstrip(": "))
    click.echo(f"  file: {_shown(path)}")
    builtin = catalog.builtin_dir("layers") / f"{name}.yaml"
    if builtin.exists() and builtin.resolve() != path.resolve():
        click.echo(f"  overrides the built-in layer {_shown(builtin)}")
    services = layer.get("services") or {}
    for label, items in (
        ("requires", layer.get("requires")),
        ("provides", layer.get("provides")),
        ("conflicts", layer.get("conflicts")),
        ("packages", layer.get("packages")),
        ("enables", services.get("enable")),
        ("masks", services.get("mask")),
    ):
        if items:
            click.echo(f"  {label}: {', '.join(map(str, items))}")
    for entry in layer.get("files") or []:
        what = entry.get("source") or "(text)"
        mode = f" (mode {entry['mode']})" if entry.get("mode") else ""
        click.echo(f"  files: {what} → {entry.get('target', '/')}{mode}")
    for var, decl in (layer.get("variables") or {}).items():
        kind = decl.get("type", "string")
        if kind == "enum":
            values = decl.get("values") or []
            kind += f": {', '.join(map(str, values))}" if len(values) <= 8 else f": {len(values)} values"
        default = "required" if decl.get("required") else f"default {json.dumps(decl.get('default'))}"
        secret = ", secret" if decl.get("secret") else ""
        click.echo(
            f"  variable {var} ({kind}, {default}{secret}): {decl.get('description', '')}".rstrip(": ")
        )
